"""The Helm chart, offline: `helm lint --strict`, `helm template` for the CI values sets, every
manifest checked against the Kubernetes schemas, the deployment rules the operators rely on,
and the committed renders (`k8s/dynamics.yaml`, `deploy/prometheus/rules.yml`) kept fresh."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python  # the dev extra; setup.sh installs it, so a missing one fails loudly
import jsonschema
import kubernetes_validate
import pytest
import yaml

from helm.render import CHART_DIR, K8S_OUT, RULES_OUT, render_documents

REPO_ROOT = Path(__file__).resolve().parents[2]
# The chart's kubeVersion floor (native gRPC probes are GA from 1.27) and the newest schemas.
KUBE_VERSIONS = ("1.27", kubernetes_validate.latest_version())
VALUES_SETS = {name: yaml.safe_load((CHART_DIR / "ci" / f"{name}-values.yaml").read_text())
               for name in ("default", "gpu")}
GRPC_SERVICES = {"face-detect": "dynamics.v1.FaceDetectService",
                 "animator": "dynamics.v1.AnimatorService",
                 "encoder": "dynamics.v1.EncoderService"}
GRACE_ENV = {"face-detect": "FACE_DETECT_GRACE_S", "animator": "ANIMATOR_GRACE_S",
             "encoder": "ENCODER_GRACE_S"}
ENV_PREFIX = {"face-detect": "FACE_DETECT", "animator": "ANIMATOR", "encoder": "ENCODER"}

# Custom resources have no schema in kubernetes-validate; these pin the fields we rely on.
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": {"type": "object", "required": ["spec"], "properties": {"spec": {
        "type": "object", "required": ["selector", "endpoints"], "properties": {
            "selector": {"type": "object", "required": ["matchLabels"],
                         "properties": {"matchLabels": _LABELS}},
            "endpoints": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["port", "path"],
                "properties": {"port": {"type": "string"}, "path": {"const": "/metrics"},
                               "interval": {"type": "string", "pattern": "^[0-9]+[smh]$"}}}}}}}},
    "PrometheusRule": {"type": "object", "required": ["spec"], "properties": {"spec": {
        "type": "object", "required": ["groups"], "properties": {"groups": {
            "type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["name", "rules"], "properties": {"rules": {
                    "type": "array", "items": {"type": "object", "required": ["expr"],
                                               "properties": {"expr": {"type": "string"},
                                                              "labels": _LABELS,
                                                              "annotations": _LABELS}}}}}}}}}},
    "ScaledObject": {"type": "object", "required": ["spec"], "properties": {"spec": {
        "type": "object", "required": ["scaleTargetRef", "triggers"], "properties": {
            "scaleTargetRef": {"type": "object", "required": ["name"]},
            "minReplicaCount": {"type": "integer", "minimum": 0},
            "maxReplicaCount": {"type": "integer", "minimum": 1},
            "triggers": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["type", "metadata"],
                "properties": {"metadata": _LABELS}}}}}}},
}


def _render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return [parsed for _, _, parsed in render_documents(values)]


def _by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _component(doc: dict[str, Any]) -> str:
    return doc["metadata"]["labels"]["app.kubernetes.io/component"]


def _deployments(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {_component(d): d for d in docs if d["kind"] == "Deployment"}


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


# ids avoid the bare word "gpu": the root conftest skips items with a `gpu` keyword without CUDA.
_IDS = [f"{name}-values" for name in sorted(VALUES_SETS)]


@pytest.fixture(scope="module", params=sorted(VALUES_SETS), ids=_IDS)
def rendered(request) -> tuple[str, list[dict[str, Any]]]:
    return request.param, _render(VALUES_SETS[request.param])


@pytest.mark.parametrize("name", sorted(VALUES_SETS), ids=_IDS)
def test_helm_lint_strict(name: str) -> None:
    report = helm_python.lint(str(CHART_DIR), VALUES_SETS[name], strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


# Options the CI values sets leave off, rendered and validated too.
VARIANTS = {
    "animator-hpa": {"animator": {"autoscaling": {"enabled": True, "mode": "hpa"}}},
    "cpu-animator": {"animator": {"gpu": {"enabled": False}, "tolerations": []}},
    "insightface": {"faceDetect": {"backend": "insightface", "insightfaceModelsClaim": "models"}},
    "sqlite-pvc-firebase": {"gateway": {"persistence": {"enabled": True},
                                        "firebase": {"projectId": "p", "credentialsSecret": "fb"},
                                        "storage": {"backend": "firebase", "bucket": "b"},
                                        "publicUrl": "https://dynamics.example.com"}},
    "postgres-url": {"database": {"type": "postgresql", "postgresql": {"url": "postgresql://x"}}},
}


def _validate_all(name: str, docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        where = f"{name}: {doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in CRD_SCHEMAS:
            jsonschema.validate(doc, CRD_SCHEMAS[doc["kind"]])
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{where} @ {version}: {'.'.join(map(str, exc.path))}: {exc.message}")


def test_every_manifest_validates(rendered) -> None:
    name, docs = rendered
    assert len(docs) >= 9
    _validate_all(name, docs)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_optional_variants_validate(variant: str) -> None:
    _validate_all(variant, _render(VARIANTS[variant]))


def test_animator_runs_on_the_gpu_pool() -> None:
    pools = {"default": "Tesla-T4", "gpu": "NVIDIA-L4"}
    for name, product in pools.items():
        pod = _deployments(_render(VALUES_SETS[name]))["animator"]["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {"nvidia.com/gpu.product": product}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
            "tolerations"]
        assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert _env(pod["containers"][0])["ANIMATOR_DEVICE"] == "cuda"
    h100 = _render({"animator": {"gpu": {"pool": "h100"}, "nodeSelector": {"pool": "new"}}})
    pod = _deployments(h100)["animator"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "pool": "new"}
    assert _env(pod["containers"][0])["ANIMATOR_DTYPE"] == "bf16"


def test_cpu_animator_has_no_gpu_bits() -> None:
    pod = _deployments(_render({"animator": {"gpu": {"enabled": False}, "tolerations": []}}))[
        "animator"]["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["limits"]
    assert _env(pod["containers"][0])["ANIMATOR_DEVICE"] == "cpu"


def test_grpc_probes_use_the_health_service(rendered) -> None:
    _, docs = rendered
    deployments = _deployments(docs)
    for component, service in GRPC_SERVICES.items():
        container = _container(deployments[component])
        grpc_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
        for probe in ("startupProbe", "readinessProbe"):
            assert container[probe]["grpc"] == {"port": grpc_port, "service": service}
        assert container["livenessProbe"]["tcpSocket"] == {"port": "grpc"}
    startup = _container(deployments["animator"])["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600  # weights + warm-up
    gateway = _container(deployments["gateway"])
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_grpc_services_bind_the_pod_interfaces_explicitly(rendered) -> None:
    """BIND_HOST is set, and what each service makes of it is what Services and probes need."""
    from services.common.config import env_bind_host

    _, docs = rendered
    deployments = _deployments(docs)
    for component, prefix in ENV_PREFIX.items():
        env = _env(_container(deployments[component]))
        assert env["BIND_HOST"] == "0.0.0.0", component
        assert env_bind_host(env, prefix) == "0.0.0.0"
    assert "BIND_HOST" not in _env(_container(deployments["gateway"]))
    dual = _deployments(_render({"bindHost": "::", "encoder": {
        "env": {"ENCODER_BIND_HOST": "0.0.0.0"}}}))
    assert env_bind_host(_env(_container(dual["face-detect"])), "FACE_DETECT") == "::"
    assert env_bind_host(_env(_container(dual["encoder"])), "ENCODER") == "0.0.0.0"


def test_rollouts_never_drop_capacity_and_outlast_jobs(rendered) -> None:
    _, docs = rendered
    for component, deployment in _deployments(docs).items():
        strategy = deployment["spec"]["strategy"]
        assert strategy["type"] == "RollingUpdate", component
        assert strategy["rollingUpdate"]["maxUnavailable"] == 0, component
        pod = deployment["spec"]["template"]["spec"]
        if component in GRACE_ENV:
            drain = float(_env(pod["containers"][0])[GRACE_ENV[component]])
            assert pod["terminationGracePeriodSeconds"] > drain, component
    animator = _deployments(docs)["animator"]["spec"]["template"]["spec"]
    assert animator["terminationGracePeriodSeconds"] >= 300  # longer than the longest job


def test_optional_resources_only_when_enabled() -> None:
    default, gpu = _render(VALUES_SETS["default"]), _render(VALUES_SETS["gpu"])
    def components(docs, kind: str) -> list[str]:
        return sorted(_component(d) for d in docs if d["kind"] == kind)

    everything = ["animator", "encoder", "face-detect", "gateway"]
    assert components(default, "PodDisruptionBudget") == ["animator"]
    assert components(gpu, "PodDisruptionBudget") == everything
    assert components(default, "HorizontalPodAutoscaler") == []
    assert components(gpu, "HorizontalPodAutoscaler") == ["encoder", "face-detect", "gateway"]
    assert components(default, "ServiceMonitor") == []
    assert components(gpu, "ServiceMonitor") == everything
    for kind in ("ScaledObject", "PrometheusRule", "ConfigMap", "Ingress", "Secret"):
        assert not _by_kind(default, kind), kind
    for kind in ("ScaledObject", "PrometheusRule", "ConfigMap", "Ingress"):
        assert len(_by_kind(gpu, kind)) == 1, kind
    assert "replicas" not in _deployments(gpu)["animator"]["spec"]  # the autoscaler owns it
    monitors = _by_kind(gpu, "ServiceMonitor")
    assert all(m["metadata"]["labels"]["release"] == "kube-prometheus-stack"
               for m in monitors.values())


def test_animator_queue_scaling_modes() -> None:
    gpu = _render(VALUES_SETS["gpu"])
    (scaled,) = _by_kind(gpu, "ScaledObject").values()
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "prometheus"
    assert trigger["metadata"]["query"] == 'max(dynamics_queue_depth{namespace="dynamics"})'
    assert scaled["spec"]["scaleTargetRef"]["name"] == "dynamics-animator"
    hpa_docs = _render({"animator": {"autoscaling": {"enabled": True, "mode": "hpa"}}})
    assert not _by_kind(hpa_docs, "ScaledObject")
    (hpa,) = _by_kind(hpa_docs, "HorizontalPodAutoscaler").values()
    metric = hpa["spec"]["metrics"][0]
    assert metric["type"] == "External"
    assert metric["external"]["metric"]["name"] == "dynamics_queue_depth"
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 600


def test_selectors_are_stable_and_match_pods() -> None:
    selectors = {}
    for values in (VALUES_SETS["default"], VALUES_SETS["gpu"], {"images": {"cpu": {"tag": "9"}}}):
        docs = _render(values)
        for component, deployment in _deployments(docs).items():
            selector = deployment["spec"]["selector"]["matchLabels"]
            assert set(selector) == {"app.kubernetes.io/name", "app.kubernetes.io/instance",
                                     "app.kubernetes.io/component"}
            assert selectors.setdefault(component, selector) == selector
            pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= pod_labels.items()
        for kind, path in (("Service", ("spec", "selector")),
                           ("PodDisruptionBudget", ("spec", "selector", "matchLabels"))):
            for doc in _by_kind(docs, kind).values():
                found = doc[path[0]]
                for key in path[1:]:
                    found = found[key]
                assert found == selectors[_component(doc)], doc["metadata"]["name"]


def test_pods_are_hardened(rendered) -> None:
    _, docs = rendered
    for component, deployment in _deployments(docs).items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"] + pod.get("initContainers", []):
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, component
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert {"name": "scratch", "mountPath": "/tmp"} in container["volumeMounts"]
        assert {"name": "scratch", "emptyDir": {"sizeLimit": "2Gi"}} in pod["volumes"]


def test_weights_come_from_a_volume() -> None:
    default = _deployments(_render())["animator"]["spec"]["template"]["spec"]
    weights = next(v for v in default["volumes"] if v["name"] == "weights")
    assert weights["persistentVolumeClaim"] == {"claimName": "dynamics-weights", "readOnly": True}
    assert "initContainers" not in default
    fetched = _deployments(_render(VALUES_SETS["gpu"]))["animator"]["spec"]["template"]["spec"]
    (init,) = fetched["initContainers"]
    assert init["command"] == ["dynamics", "weights", "fetch", "/weights"]
    assert next(v for v in fetched["volumes"] if v["name"] == "weights")["emptyDir"]
    mount = next(m for m in _container({"spec": {"template": {"spec": fetched}}})["volumeMounts"]
                 if m["name"] == "weights")
    assert mount["readOnly"] is True


def test_gateway_database_option() -> None:
    with pytest.raises(helm_python.HelmRenderError, match="database.type=postgresql"):
        _render({"gateway": {"replicaCount": 2}})
    docs = _render({"database": {"type": "postgresql",
                                 "postgresql": {"url": "postgresql://u:p@db:5432/dynamics"}},
                    "gateway": {"replicaCount": 3}})
    (secret,) = _by_kind(docs, "Secret").values()
    assert secret["stringData"] == {"DATABASE_URL": "postgresql://u:p@db:5432/dynamics"}
    gateway = _container(_deployments(docs)["gateway"])
    assert _env(gateway)["DATABASE_URL"] == {
        "secretKeyRef": {"name": secret["metadata"]["name"], "key": "DATABASE_URL"}}
    external = _render(VALUES_SETS["gpu"])
    assert _env(_container(_deployments(external)["gateway"]))["DATABASE_URL"] == {
        "secretKeyRef": {"name": "dynamics-database", "key": "DATABASE_URL"}}


def test_values_schema_rejects_mistakes() -> None:
    for bad in ({"animator": {"replicas": 2}}, {"logLevel": "LOUD"}, {"bindHost": "localhost"},
                {"bindHost": ""},
                {"animator": {"weights": {"source": "s3"}}},
                {"images": {"cpu": {"digest": "latest"}}},
                {"gateway": {"storage": {"backend": "firebase"}}}):
        with pytest.raises(helm_python.HelmValuesError):
            _render(bad)
    with pytest.raises(helm_python.HelmRenderError, match="not a key of animator.gpu.pools"):
        _render({"animator": {"gpu": {"pool": "v100"}}})


def test_dashboards_ship_as_labelled_configmaps() -> None:
    (cm,) = _by_kind(_render(VALUES_SETS["gpu"]), "ConfigMap").values()
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    source = (CHART_DIR / "dashboards" / "dynamics-overview.json").read_text()
    assert cm["data"]["dynamics-overview.json"].strip() == source.strip()


def test_committed_renders_are_fresh(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "helm/render.py", "--out-dir", str(tmp_path)],
                   cwd=REPO_ROOT, check=True, timeout=120)
    for rel in (K8S_OUT, RULES_OUT):
        fresh = (tmp_path / rel).read_text()
        committed = (REPO_ROOT / rel).read_text()
        assert committed == fresh, f"{rel} is stale: run `make render-k8s`"
