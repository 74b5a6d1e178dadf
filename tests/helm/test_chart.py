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

from helm.render import (
    CHART_DIR,
    K8S_OUT,
    RULES_OUT,
    default_values,
    merged,
    render_documents,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
# The chart's kubeVersion floor (native gRPC probes are GA from 1.27) and the newest schemas.
KUBE_VERSIONS = ("1.27", kubernetes_validate.latest_version())
VALUES_SETS = {
    name: yaml.safe_load((CHART_DIR / "ci" / f"{name}-values.yaml").read_text())
    for name in ("default", "gpu", "production")
}
GRPC_SERVICES = {
    "face-detect": "dynamics.v1.FaceDetectService",
    "animator": "dynamics.v1.AnimatorService",
    "encoder": "dynamics.v1.EncoderService",
}
GRACE_ENV = {
    "face-detect": "FACE_DETECT_GRACE_S",
    "animator": "ANIMATOR_GRACE_S",
    "encoder": "ENCODER_GRACE_S",
}
ENV_PREFIX = {"face-detect": "FACE_DETECT", "animator": "ANIMATOR", "encoder": "ENCODER"}

# Custom resources have no schema in kubernetes-validate; these pin the fields we rely on.
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "spec": {
                "type": "object",
                "required": ["selector", "endpoints"],
                "properties": {
                    "selector": {
                        "type": "object",
                        "required": ["matchLabels"],
                        "properties": {"matchLabels": _LABELS},
                    },
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["port", "path"],
                            "properties": {
                                "port": {"type": "string"},
                                "path": {"const": "/metrics"},
                                "interval": {"type": "string", "pattern": "^[0-9]+[smh]$"},
                            },
                        },
                    },
                },
            }
        },
    },
    "PrometheusRule": {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "spec": {
                "type": "object",
                "required": ["groups"],
                "properties": {
                    "groups": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["name", "rules"],
                            "properties": {
                                "rules": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["expr"],
                                        "properties": {
                                            "expr": {"type": "string"},
                                            "labels": _LABELS,
                                            "annotations": _LABELS,
                                        },
                                    },
                                }
                            },
                        },
                    }
                },
            }
        },
    },
    "ScaledObject": {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "spec": {
                "type": "object",
                "required": ["scaleTargetRef", "triggers"],
                "properties": {
                    "scaleTargetRef": {"type": "object", "required": ["name"]},
                    "minReplicaCount": {"type": "integer", "minimum": 0},
                    "maxReplicaCount": {"type": "integer", "minimum": 1},
                    "triggers": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["type", "metadata"],
                            "properties": {"metadata": _LABELS},
                        },
                    },
                },
            }
        },
    },
}


def _render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The chart with `values` over ci/default-values.yaml (the defaults plus a public URL)."""
    return _render_raw(merged(default_values(), values or {}))


def _render_raw(values: dict[str, Any]) -> list[dict[str, Any]]:
    """The chart with exactly `values` over values.yaml."""
    return [parsed for _, _, parsed in render_documents(values)]


def _render_set(name: str) -> list[dict[str, Any]]:
    return _render_raw(VALUES_SETS[name])


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
    return request.param, _render_set(request.param)


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
    "sqlite-pvc-firebase": {
        "gateway": {
            "persistence": {"enabled": True},
            "firebase": {"projectId": "p", "credentialsSecret": "fb"},
            "storage": {"backend": "firebase", "bucket": "b"},
            "publicUrl": "https://dynamics.example.com",
        }
    },
    "postgres-url": {"database": {"type": "postgresql", "postgresql": {"url": "postgresql://x"}}},
    "onnxruntime-claims": {
        "animator": {
            "backend": {
                "name": "onnxruntime",
                "onnx": {"existingClaim": "onnx-export", "subPath": "t4"},
                "trtCache": {"existingClaim": "trt-engines", "subPath": "t4"},
            }
        }
    },
    "onnxruntime-in-weights": {"animator": {"backend": {"name": "onnxruntime"}}},
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
    pools = {
        "default": {"nvidia.com/gpu.product": "Tesla-T4"},
        "gpu": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
        "production": {"nvidia.com/gpu.product": "Tesla-T4"},
    }
    for name, selector in pools.items():
        pod = _deployments(_render_set(name))["animator"]["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == selector, name
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
            "tolerations"
        ]
        assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert _env(pod["containers"][0])["ANIMATOR_DEVICE"] == "cuda"
    h100 = _deployments(_render({"animator": {"gpu": {"pool": "h100"}}}))["animator"]
    assert _env(_container(h100))["ANIMATOR_DTYPE"] == "bf16"


PRESET_SELECTORS = {
    "gfd": {"nvidia.com/gpu.product": "Tesla-T4"},
    "gke": {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"},
    "eks": {"karpenter.k8s.aws/instance-gpu-name": "t4"},
}


def _animator_pod(values: dict[str, Any]) -> dict[str, Any]:
    return _deployments(_render(values))["animator"]["spec"]["template"]["spec"]


@pytest.mark.parametrize("preset", sorted(PRESET_SELECTORS))
def test_one_value_picks_the_clouds_gpu_label(preset: str) -> None:
    pod = _animator_pod({"animator": {"gpuPool": {"preset": preset}}})
    assert pod["nodeSelector"] == PRESET_SELECTORS[preset]


def test_gpu_node_selector_override_replaces_the_preset() -> None:
    """Helm merges maps: the override must not keep the preset's key (it would match no node)."""
    gke_pool = {"cloud.google.com/gke-nodepool": "t4-pool"}
    for preset in ("gfd", "gke", "eks"):
        pod = _animator_pod({"animator": {"gpuPool": {"preset": preset, "nodeSelector": gke_pool}}})
        assert pod["nodeSelector"] == gke_pool, preset
    eks = {"node.kubernetes.io/instance-type": "g4dn.xlarge"}
    assert _animator_pod({"animator": {"gpuPool": {"nodeSelector": eks}}})["nodeSelector"] == eks
    assert "nodeSelector" not in _animator_pod({"animator": {"gpuPool": {"preset": "none"}}})
    with pytest.raises(helm_python.HelmRenderError, match='no "gke" label'):
        _render({"animator": {"gpu": {"pool": "a10g"}, "gpuPool": {"preset": "gke"}}})
    a10g = _animator_pod(
        {
            "animator": {
                "gpu": {"pool": "a10g"},
                "gpuPool": {"preset": "gke", "nodeSelector": {"pool": "a10g"}},
            }
        }
    )
    assert a10g["nodeSelector"] == {"pool": "a10g"}
    # The old merged `animator.nodeSelector` is gone; the schema says so instead of merging.
    with pytest.raises(helm_python.HelmValuesError):
        _render({"animator": {"nodeSelector": {"pool": "x"}}})


def test_memory_requests_follow_the_measurements() -> None:
    """The animator's host memory was measured under 1 GiB per process (docs/performance.md);
    the request must fit a common T4 node (n1-standard-4: 15 GB, g4dn.xlarge: 16 GiB)."""
    resources = _container(_deployments(_render())["animator"])["resources"]
    assert resources["requests"]["memory"] == "2Gi"
    assert resources["limits"]["memory"] == "4Gi"
    values_text = (CHART_DIR / "values.yaml").read_text()
    assert "545 MiB" in values_text and "VmHWM" in values_text


def test_cpu_animator_has_no_gpu_bits() -> None:
    pod = _deployments(_render({"animator": {"gpu": {"enabled": False}, "tolerations": []}}))[
        "animator"
    ]["spec"]["template"]["spec"]
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
    dual = _deployments(
        _render({"bindHost": "::", "encoder": {"env": {"ENCODER_BIND_HOST": "0.0.0.0"}}})
    )
    assert env_bind_host(_env(_container(dual["face-detect"])), "FACE_DETECT") == "::"
    assert env_bind_host(_env(_container(dual["encoder"])), "ENCODER") == "0.0.0.0"


def test_rollouts_never_drop_capacity_and_outlast_jobs(rendered) -> None:
    from services.common.grpc_server import drain_delay_from_env

    _, docs = rendered
    for component, deployment in _deployments(docs).items():
        strategy = deployment["spec"]["strategy"]
        assert strategy["type"] == "RollingUpdate", component
        assert strategy["rollingUpdate"]["maxUnavailable"] == 0, component
        pod = deployment["spec"]["template"]["spec"]
        if component in GRACE_ENV:
            env = _env(pod["containers"][0])
            drain = float(env[GRACE_ENV[component]])
            # After SIGTERM a service keeps accepting calls for the drain delay, then drains:
            # both must end before Kubernetes kills the pod, and the delay must outlast one
            # connection age plus one re-resolution, so no call reaches a refusing pod.
            delay = drain_delay_from_env(ENV_PREFIX[component], env)
            assert delay + drain + 10 <= pod["terminationGracePeriodSeconds"], component
            assert delay >= (
                float(env["GRPC_MAX_CONNECTION_AGE_S"])
                + float(
                    _env(_container(_deployments(docs)["gateway"]))["GRPC_DNS_MIN_RESOLUTION_S"]
                )
            ), component
    animator = _deployments(docs)["animator"]["spec"]["template"]["spec"]
    assert animator["terminationGracePeriodSeconds"] >= 300  # longer than the longest job
    gateway = _deployments(docs)["gateway"]["spec"]["template"]["spec"]
    drain = float(_env(gateway["containers"][0])["GATEWAY_DRAIN_S"])
    assert drain >= 300
    assert gateway["terminationGracePeriodSeconds"] >= drain + 30


def test_optional_resources_only_when_enabled() -> None:
    default, gpu = _render_set("default"), _render_set("gpu")

    def components(docs, kind: str) -> list[str]:
        return sorted(_component(d) for d in docs if d["kind"] == kind)

    everything = ["animator", "encoder", "face-detect", "gateway"]
    assert components(default, "PodDisruptionBudget") == []  # one replica each: nothing to keep
    assert components(gpu, "PodDisruptionBudget") == everything
    assert components(default, "HorizontalPodAutoscaler") == []
    assert components(gpu, "HorizontalPodAutoscaler") == ["encoder", "face-detect", "gateway"]
    assert components(default, "ServiceMonitor") == []
    assert components(gpu, "ServiceMonitor") == everything
    assert components(default, "NetworkPolicy") == ["animator", "encoder", "face-detect"]
    for kind in ("ScaledObject", "PrometheusRule", "ConfigMap", "Ingress", "Secret"):
        assert not _by_kind(default, kind), kind
    for kind in ("ScaledObject", "PrometheusRule", "ConfigMap", "Ingress"):
        assert len(_by_kind(gpu, kind)) == 1, kind
    assert "replicas" not in _deployments(gpu)["animator"]["spec"]  # the autoscaler owns it
    monitors = _by_kind(gpu, "ServiceMonitor")
    assert all(
        m["metadata"]["labels"]["release"] == "kube-prometheus-stack" for m in monitors.values()
    )


def test_animator_queue_scaling_modes() -> None:
    gpu = _render_set("gpu")
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
            assert set(selector) == {
                "app.kubernetes.io/name",
                "app.kubernetes.io/instance",
                "app.kubernetes.io/component",
            }
            assert selectors.setdefault(component, selector) == selector
            pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= pod_labels.items()
        for kind, path in (
            ("Service", ("spec", "selector")),
            ("PodDisruptionBudget", ("spec", "selector", "matchLabels")),
        ):
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
    fetched = _deployments(_render_set("gpu"))["animator"]["spec"]["template"]["spec"]
    (init,) = fetched["initContainers"]
    assert init["command"] == ["dynamics", "weights", "fetch", "/weights"]
    assert next(v for v in fetched["volumes"] if v["name"] == "weights")["emptyDir"]
    mount = next(
        m
        for m in _container({"spec": {"template": {"spec": fetched}}})["volumeMounts"]
        if m["name"] == "weights"
    )
    assert mount["readOnly"] is True


ORT_ENV = (
    "ANIMATOR_BACKEND",
    "ANIMATOR_ORT_PROVIDERS",
    "ANIMATOR_ONNX_DIR",
    "ANIMATOR_TRT_CACHE_DIR",
)


def _animator_volumes(
    values: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, dict[str, Any]]]:
    """(env, mounts by volume name, volumes by name) of the animator's main container."""
    pod = _animator_pod(values)
    container = pod["containers"][0]
    return (
        _env(container),
        {m["name"]: m for m in container["volumeMounts"]},
        {v["name"]: v for v in pod["volumes"]},
    )


def test_torch_backend_renders_no_onnxruntime_settings() -> None:
    for values in (
        {},
        {
            "animator": {
                "backend": {
                    "name": "torch",
                    "ortProviders": "cpu",
                    "trtCache": {"existingClaim": "trt"},
                }
            }
        },
    ):
        env, mounts, volumes = _animator_volumes(values)
        assert not set(ORT_ENV) & set(env)
        assert not {"onnx-export", "trt-cache"} & (set(mounts) | set(volumes))
    for name in VALUES_SETS:
        assert "ANIMATOR_BACKEND" not in _env(
            _container(_deployments(_render_set(name))["animator"])
        )


def test_onnxruntime_backend_wires_export_providers_and_engine_cache() -> None:
    # The export in the weights claim's onnx/ folder; the engine cache an emptyDir.
    env, mounts, volumes = _animator_volumes({"animator": {"backend": {"name": "onnxruntime"}}})
    assert {k: env[k] for k in ORT_ENV} == {
        "ANIMATOR_BACKEND": "onnxruntime",
        "ANIMATOR_ORT_PROVIDERS": "tensorrt,cuda,cpu",
        "ANIMATOR_ONNX_DIR": "/weights/onnx",
        "ANIMATOR_TRT_CACHE_DIR": "/trt-cache",
    }
    assert "onnx-export" not in mounts and "onnx-export" not in volumes
    assert mounts["weights"]["readOnly"] is True
    assert mounts["trt-cache"] == {"name": "trt-cache", "mountPath": "/trt-cache"}
    assert volumes["trt-cache"] == {"name": "trt-cache", "emptyDir": {"sizeLimit": "2Gi"}}
    # The export and the cache on claims of their own.
    env, mounts, volumes = _animator_volumes(
        {
            "animator": {
                "backend": {
                    "name": "onnxruntime",
                    "ortProviders": "cuda,cpu",
                    "onnx": {"existingClaim": "exports", "subPath": "v3", "mountPath": "/export"},
                    "trtCache": {
                        "existingClaim": "engines",
                        "subPath": "t4",
                        "mountPath": "/engines",
                    },
                }
            }
        }
    )
    assert (
        env["ANIMATOR_ORT_PROVIDERS"],
        env["ANIMATOR_ONNX_DIR"],
        env["ANIMATOR_TRT_CACHE_DIR"],
    ) == ("cuda,cpu", "/export", "/engines")
    assert mounts["onnx-export"] == {
        "name": "onnx-export",
        "mountPath": "/export",
        "readOnly": True,
        "subPath": "v3",
    }
    assert volumes["onnx-export"]["persistentVolumeClaim"] == {
        "claimName": "exports",
        "readOnly": True,
    }
    assert mounts["trt-cache"] == {"name": "trt-cache", "mountPath": "/engines", "subPath": "t4"}
    assert volumes["trt-cache"] == {
        "name": "trt-cache",
        "persistentVolumeClaim": {"claimName": "engines"},
    }
    # Fetched weights live in an emptyDir that holds no export: a claim for it is required.
    with pytest.raises(
        helm_python.HelmRenderError, match="needs animator.backend.onnx.existingClaim"
    ):
        _render({"animator": {"backend": {"name": "onnxruntime"}, "weights": {"source": "fetch"}}})
    env, _, volumes = _animator_volumes(
        {
            "animator": {
                "backend": {"name": "onnxruntime", "onnx": {"existingClaim": "exports"}},
                "weights": {"source": "fetch"},
            }
        }
    )
    assert env["ANIMATOR_ONNX_DIR"] == "/onnx" and "emptyDir" in volumes["weights"]


def test_schema_refuses_bad_backend_values() -> None:
    for bad in (
        {"name": "tensorrt"},
        {"name": "onnx"},
        {"ortProviders": "rocm,cpu"},
        {"ortProviders": ""},
        {"onnx": {"existingClaim": "x", "mountPath": "onnx"}},
        {"trtCache": {"claim": "x"}},
        {"trtCache": {"sizeLimit": "lots"}},
        {"cache": {}},
    ):
        with pytest.raises(helm_python.HelmValuesError):
            _render({"animator": {"backend": bad}})
    _render({"animator": {"backend": {"name": "onnxruntime", "ortProviders": "cuda, cpu"}}})


def test_gateway_database_option() -> None:
    with pytest.raises(helm_python.HelmRenderError, match="database.type=postgresql"):
        _render({"gateway": {"replicaCount": 2}})
    docs = _render(
        {
            "database": {
                "type": "postgresql",
                "postgresql": {"url": "postgresql://u:p@db:5432/dynamics"},
            },
            "gateway": {"replicaCount": 3, "secrets": {"existingSecret": "s"}},
        }
    )
    (secret,) = _by_kind(docs, "Secret").values()
    assert secret["stringData"] == {"DATABASE_URL": "postgresql://u:p@db:5432/dynamics"}
    gateway = _container(_deployments(docs)["gateway"])
    assert _env(gateway)["DATABASE_URL"] == {
        "secretKeyRef": {"name": secret["metadata"]["name"], "key": "DATABASE_URL"}
    }
    external = _render_set("gpu")
    assert _env(_container(_deployments(external)["gateway"]))["DATABASE_URL"] == {
        "secretKeyRef": {"name": "dynamics-database", "key": "DATABASE_URL"}
    }


def test_try_it_page_is_one_value_and_off_by_default(tmp_path: Path) -> None:
    from services.gateway.config import GatewayConfig

    for values, want in (({}, False), ({"gateway": {"webUI": True}}, True)):
        env = _env(_container(_deployments(_render(values))["gateway"]))
        assert env["GATEWAY_WEB_UI"] == str(want).lower()
        # the gateway reads exactly what the chart writes
        local = {"GATEWAY_DATA_DIR": str(tmp_path), "FIREBASE_PROJECT_ID": "demo"}
        cfg = GatewayConfig.from_env({**env_strings(env), **local})
        assert cfg.web_ui is want
    with pytest.raises(helm_python.HelmValuesError):
        _render({"gateway": {"webUI": "yes"}})


def test_motion_cache_backend_is_one_value_and_folder_by_default(tmp_path: Path) -> None:
    from services.gateway.config import GatewayConfig

    for values, want in (
        ({}, "folder"),
        ({"gateway": {"motionCache": {"backend": "storage"}}}, "storage"),
    ):
        env = _env(_container(_deployments(_render(values))["gateway"]))
        assert env["MOTION_CACHE_BACKEND"] == want
        # the gateway reads exactly what the chart writes
        local = {"GATEWAY_DATA_DIR": str(tmp_path), "FIREBASE_PROJECT_ID": "demo"}
        cfg = GatewayConfig.from_env({**env_strings(env), **local})
        assert cfg.motion_cache_backend == want
    for bad in ({"backend": "bucket"}, {"backend": "storage", "maxBytes": 1}):
        with pytest.raises(helm_python.HelmValuesError):
            _render({"gateway": {"motionCache": bad}})


def env_strings(env: dict[str, Any]) -> dict[str, str]:
    """The literal values of a container's env (secret references left out)."""
    return {k: v for k, v in env.items() if isinstance(v, str)}


def test_values_schema_rejects_mistakes() -> None:
    for bad in (
        {"animator": {"replicas": 2}},
        {"logLevel": "LOUD"},
        {"bindHost": "localhost"},
        {"bindHost": ""},
        {"animator": {"weights": {"source": "s3"}}},
        {"images": {"cpu": {"digest": "latest"}}},
        {"gateway": {"storage": {"backend": "firebase"}}},
    ):
        with pytest.raises(helm_python.HelmValuesError):
            _render(bad)
    with pytest.raises(helm_python.HelmRenderError, match="not a key of animator.gpu.pools"):
        _render({"animator": {"gpu": {"pool": "v100"}}})


def test_dashboards_ship_as_labelled_configmaps() -> None:
    (cm,) = _by_kind(_render_set("gpu"), "ConfigMap").values()
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    source = (CHART_DIR / "dashboards" / "dynamics-overview.json").read_text()
    assert cm["data"]["dynamics-overview.json"].strip() == source.strip()


def test_committed_renders_are_fresh(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "helm/render.py", "--out-dir", str(tmp_path)],
        cwd=REPO_ROOT,
        check=True,
        timeout=120,
    )
    for rel in (K8S_OUT, RULES_OUT):
        fresh = (tmp_path / rel).read_text()
        committed = (REPO_ROOT / rel).read_text()
        assert committed == fresh, f"{rel} is stale: run `make render-k8s`"


# --- balancing, PDBs, NetworkPolicies, secrets, public URL, Ingress, helm test, extensions ---

GRPC_COMPONENTS = {"face-detect": "faceDetect", "animator": "animator", "encoder": "encoder"}
TARGET_ENV = {
    "face-detect": "FACE_DETECT_ADDR",
    "animator": "ANIMATOR_ADDR",
    "encoder": "ENCODER_ADDR",
}


def test_grpc_services_are_headless_and_the_gateway_resolves_every_pod() -> None:
    """clusterIP None + a dns:/// target: gRPC's resolver sees every Ready pod, round_robin
    spreads calls, and the servers' connection age makes clients resolve again."""
    from services.common.grpc_client import resolution_options
    from services.common.grpc_server import connection_age_s

    docs = _render({"grpc": {"maxConnectionAgeSeconds": 45, "dnsMinResolutionSeconds": 2}})
    services = {_component(s): s for s in _by_kind(docs, "Service").values()}
    gateway_env = _env(_container(_deployments(docs)["gateway"]))
    for component in GRPC_COMPONENTS:
        service = services[component]
        assert service["spec"]["clusterIP"] == "None", component
        assert "type" not in service["spec"]
        port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
        name = service["metadata"]["name"]
        assert gateway_env[TARGET_ENV[component]] == (
            f"dns:///{name}.dynamics.svc.cluster.local:{port}"
        )
        server_env = _env(_container(_deployments(docs)[component]))
        assert connection_age_s(component.replace("-", "_"), server_env) == (45.0, 900.0)
    assert services["gateway"]["spec"]["type"] == "ClusterIP"  # the Ingress needs a virtual IP
    options = dict(resolution_options(gateway_env))
    assert options["grpc.dns_min_time_between_resolutions_ms"] == 2000
    assert options["grpc.max_reconnect_backoff_ms"] == 10_000
    other = _render({"clusterDomain": "corp.internal"})
    assert _env(_container(_deployments(other)["gateway"]))["ENCODER_ADDR"] == (
        "dns:///dynamics-encoder.dynamics.svc.corp.internal:50053"
    )


@pytest.mark.parametrize(("component", "key"), [*GRPC_COMPONENTS.items(), ("gateway", "gateway")])
def test_pdb_only_where_it_protects_a_pod(component: str, key: str) -> None:
    postgres = {
        "database": {"type": "postgresql", "postgresql": {"existingSecret": "db"}},
        "gateway": {"secrets": {"existingSecret": "s"}},
    }

    def pdbs(settings: dict[str, Any]) -> list[dict[str, Any]]:
        docs = _render(
            merged(postgres, {key: {"podDisruptionBudget": {"enabled": True}, **settings}})
        )
        return [
            d for d in _by_kind(docs, "PodDisruptionBudget").values() if _component(d) == component
        ]

    assert pdbs({"replicaCount": 1}) == []
    assert pdbs({"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 4}}) == []
    (pdb,) = pdbs({"replicaCount": 2})
    assert pdb["spec"]["maxUnavailable"] == 1
    assert len(pdbs({"autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 4}})) == 1
    docs = _render(
        merged(postgres, {key: {"replicaCount": 3, "podDisruptionBudget": {"enabled": False}}})
    )
    assert not [
        d for d in _by_kind(docs, "PodDisruptionBudget").values() if _component(d) == component
    ]


def _labels_match(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, selector
    return selector.get("matchLabels", {}).items() <= labels.items()


def test_network_policies_admit_only_the_gateway_and_prometheus() -> None:
    docs = _render_set("gpu")
    policies = {_component(p): p for p in _by_kind(docs, "NetworkPolicy").values()}
    assert sorted(policies) == sorted(GRPC_COMPONENTS)
    deployments = _deployments(docs)
    pod_labels = {c: d["spec"]["template"]["metadata"]["labels"] for c, d in deployments.items()}
    for component, policy in policies.items():
        spec = policy["spec"]
        assert spec["policyTypes"] == ["Ingress"]  # egress (DNS, media) stays open
        selected = [
            c for c, labels in pod_labels.items() if _labels_match(spec["podSelector"], labels)
        ]
        assert selected == [component]
        container_ports = {p["name"] for p in _container(deployments[component])["ports"]}
        grpc_rule, metrics_rule = spec["ingress"]
        assert [p["port"] for p in grpc_rule["ports"]] == ["grpc"]
        assert [p["port"] for p in metrics_rule["ports"]] == ["metrics"]
        assert {"grpc", "metrics"} <= container_ports
        (gateway_peer,) = grpc_rule["from"]
        assert set(gateway_peer) == {"podSelector"}  # same namespace only
        admitted = [
            c
            for c, labels in pod_labels.items()
            if _labels_match(gateway_peer["podSelector"], labels)
        ]
        assert admitted == ["gateway"]
        (prometheus,) = metrics_rule["from"]
        assert prometheus == {
            "namespaceSelector": {},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        }
    extra = {"podSelector": {"matchLabels": {"app": "grpcurl"}}}
    custom = _render(
        {
            "networkPolicy": {
                "grpcFrom": [extra],
                "metricsFrom": [
                    {
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                        }
                    }
                ],
            }
        }
    )
    for policy in _by_kind(custom, "NetworkPolicy").values():
        grpc_rule, metrics_rule = policy["spec"]["ingress"]
        assert grpc_rule["from"][1] == extra
        assert metrics_rule["from"][0]["namespaceSelector"]["matchLabels"] == {
            "kubernetes.io/metadata.name": "monitoring"
        }
    assert not _by_kind(_render({"networkPolicy": {"enabled": False}}), "NetworkPolicy")
    no_scrape = _render({"networkPolicy": {"metricsFrom": []}})
    for policy in _by_kind(no_scrape, "NetworkPolicy").values():
        assert len(policy["spec"]["ingress"]) == 1


def test_several_gateways_need_shared_signing_secrets() -> None:
    postgres = {"database": {"type": "postgresql", "postgresql": {"existingSecret": "db"}}}
    for gateway in (
        {"replicaCount": 2},
        {"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 3}},
    ):
        with pytest.raises(
            helm_python.HelmRenderError,
            match=r"gateway replicas need shared signing keys: create a Secret "
            r"with RESULT_URL_SECRET and WEBHOOK_SECRET and set "
            r"gateway.secrets.existingSecret",
        ):
            _render(merged(postgres, {"gateway": gateway}))
    docs = _render(
        merged(
            postgres,
            {
                "gateway": {
                    "replicaCount": 2,
                    "secrets": {"existingSecret": "gw", "webhookSecretKey": "hook"},
                }
            },
        )
    )
    env = _env(_container(_deployments(docs)["gateway"]))
    assert env["RESULT_URL_SECRET"] == {"secretKeyRef": {"name": "gw", "key": "RESULT_URL_SECRET"}}
    assert env["WEBHOOK_SECRET"] == {"secretKeyRef": {"name": "gw", "key": "hook"}}
    single = _env(_container(_deployments(_render())["gateway"]))
    assert "RESULT_URL_SECRET" not in single and "WEBHOOK_SECRET" not in single


def test_public_url_is_required_and_https_outside_local_installs() -> None:
    with pytest.raises(helm_python.HelmRenderError, match="gateway.publicUrl is required"):
        _render_raw({})
    with pytest.raises(helm_python.HelmRenderError, match="must be https://"):
        _render({"gateway": {"publicUrl": "http://dynamics.example.com"}})
    plain_ingress = {"gateway": {"publicUrl": "", "ingress": {"enabled": True}}}
    with pytest.raises(
        helm_python.HelmRenderError, match='"http://dynamics.example.com" must be https://'
    ):
        _render(plain_ingress)
    with pytest.raises(helm_python.HelmValuesError):
        _render({"gateway": {"publicUrl": "dynamics.example.com"}})
    tls = merged(
        plain_ingress,
        {"gateway": {"ingress": {"tls": [{"secretName": "t", "hosts": ["dynamics.example.com"]}]}}},
    )
    env = _env(_container(_deployments(_render(tls))["gateway"]))
    assert env["GATEWAY_PUBLIC_URL"] == "https://dynamics.example.com"
    local = _render_raw(
        {"global": {"local": True}, "gateway": {"publicUrl": "http://127.0.0.1:8080"}}
    )
    assert _env(_container(_deployments(local)["gateway"]))["GATEWAY_PUBLIC_URL"] == (
        "http://127.0.0.1:8080"
    )
    assert _render_raw({"global": {"local": True}})  # local: the gateway's own default


def test_nginx_ingress_admits_the_largest_upload() -> None:
    from services.gateway.config import GatewayConfig

    ingress_on = {"gateway": {"ingress": {"enabled": True, "className": "nginx"}}}
    docs = _render(ingress_on)
    (ingress,) = _by_kind(docs, "Ingress").values()
    annotations = ingress["metadata"]["annotations"]
    body = annotations["nginx.ingress.kubernetes.io/proxy-body-size"]
    env = _env(_container(_deployments(docs)["gateway"]))
    config = GatewayConfig.from_env(
        {**{k: v for k, v in env.items() if isinstance(v, str)}, "GATEWAY_AUTH_MODE": "none"}
    )
    assert body.endswith("m")
    assert int(body[:-1]) * 1024 * 1024 > config.max_video_bytes + config.max_image_bytes
    assert body == "221m"
    bigger = _render(merged(ingress_on, {"gateway": {"limits": {"maxVideoBytes": 500 * 2**20}}}))
    (ingress,) = _by_kind(bigger, "Ingress").values()
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == (
        "521m"
    )
    assert _env(_container(_deployments(bigger)["gateway"]))["MAX_VIDEO_BYTES"] == str(500 * 2**20)
    own = _render(
        merged(
            ingress_on,
            {
                "gateway": {
                    "ingress": {
                        "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "1g"}
                    }
                }
            },
        )
    )
    (ingress,) = _by_kind(own, "Ingress").values()
    assert ingress["metadata"]["annotations"] == {
        "nginx.ingress.kubernetes.io/proxy-body-size": "1g"
    }
    other = _render({"gateway": {"ingress": {"enabled": True, "className": "traefik"}}})
    (ingress,) = _by_kind(other, "Ingress").values()
    assert "annotations" not in ingress["metadata"]


def test_helm_test_hook_checks_the_gateway_health() -> None:
    docs = _render()
    (pod,) = _by_kind(docs, "Pod").values()
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (service,) = [s for s in _by_kind(docs, "Service").values() if _component(s) == "gateway"]
    port = service["spec"]["ports"][0]["port"]
    container = pod["spec"]["containers"][0]
    assert container["command"][-1] == (
        f"http://{service['metadata']['name']}.dynamics.svc.cluster.local:{port}/healthz"
    )
    assert pod["spec"]["restartPolicy"] == "Never"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # The check itself, against a local server answering /healthz 200 and then 503.
    import http.server
    import threading

    status = {"code": 200}

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status["code"] if self.path == "/healthz" else 404)
            self.end_headers()
            self.wfile.write(b'{"status": "ok"}')

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/healthz"
        script = container["command"][:3]
        assert script[:2] == ["python", "-c"]
        ok = subprocess.run(
            [sys.executable, "-c", script[2], url], capture_output=True, timeout=30, check=False
        )
        assert ok.returncode == 0, ok.stderr
        status["code"] = 503
        failed = subprocess.run(
            [sys.executable, "-c", script[2], url], capture_output=True, timeout=30, check=False
        )
        assert failed.returncode != 0
    finally:
        server.shutdown()
    assert not _by_kind(_render({"tests": {"enabled": False}}), "Pod")


EXTENSIONS = {
    "podLabels": {"team": "avatars", "app.kubernetes.io/component": "not-mine"},
    "podAnnotations": {"example.com/owner": "avatars"},
    "priorityClassName": "dynamics-high",
    "topologySpreadConstraints": [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
        },
        {
            "maxSkew": 2,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"team": "avatars"}},
        },
    ],
    "extraEnv": [
        {"name": "SENTRY_DSN", "valueFrom": {"secretKeyRef": {"name": "sentry", "key": "dsn"}}},
        {"name": "PLAIN", "value": "1"},
    ],
    "extraEnvFrom": [
        {"secretRef": {"name": "dynamics-extra"}},
        {"configMapRef": {"name": "dynamics-settings"}, "prefix": "X_"},
    ],
    "extraVolumes": [{"name": "ca", "configMap": {"name": "corporate-ca"}}],
    "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/ssl/corporate", "readOnly": True}],
}
COMPONENT_KEYS = {**GRPC_COMPONENTS, "gateway": "gateway"}


def test_every_component_takes_the_extension_points() -> None:
    docs = _render({key: EXTENSIONS for key in COMPONENT_KEYS.values()})
    _validate_all("extensions", docs)
    for component, deployment in _deployments(docs).items():
        selector = deployment["spec"]["selector"]["matchLabels"]
        template = deployment["spec"]["template"]
        pod, container = template["spec"], template["spec"]["containers"][0]
        assert template["metadata"]["labels"]["team"] == "avatars"
        assert template["metadata"]["labels"]["app.kubernetes.io/component"] == component
        assert selector.items() <= template["metadata"]["labels"].items()
        assert template["metadata"]["annotations"] == {"example.com/owner": "avatars"}
        assert pod["priorityClassName"] == "dynamics-high"
        zone, host = pod["topologySpreadConstraints"]
        assert zone["labelSelector"] == {"matchLabels": selector}
        assert host["labelSelector"] == {"matchLabels": {"team": "avatars"}}
        env = _env(container)
        assert env["SENTRY_DSN"] == {"secretKeyRef": {"name": "sentry", "key": "dsn"}}
        assert env["PLAIN"] == "1"
        assert container["envFrom"] == EXTENSIONS["extraEnvFrom"]
        assert {"name": "ca", "configMap": {"name": "corporate-ca"}} in pod["volumes"]
        assert EXTENSIONS["extraVolumeMounts"][0] in container["volumeMounts"]
        assert {"name": "scratch", "mountPath": "/tmp"} in container["volumeMounts"]


@pytest.mark.parametrize(
    "bad",
    [
        {"topologySpreadConstraint": []},
        {"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone"}]},
        {
            "topologySpreadConstraints": [
                {"maxSkew": 1, "topologyKey": "z", "whenUnsatisfiable": "Sometimes"}
            ]
        },
        {"priorityClass": "high"},
        {"podLabel": {"a": "b"}},
        {"podLabels": {"a": 1}},
        {"extraEnv": [{"name": "A", "valueFrm": {}}]},
        {"extraEnv": {"A": "1"}},
        {"extraEnvFrom": [{"secretReff": {"name": "s"}}]},
        {"extraEnvFrom": [{"secretRef": {}}]},
        {"extraVolumes": [{"configMap": {"name": "x"}}]},
        {"extraVolumeMounts": [{"name": "x"}]},
        {"extraVolumeMounts": [{"name": "x", "mountPath": "relative"}]},
        {"extraVolumeMount": []},
    ],
    ids=lambda bad: next(iter(bad)),
)
@pytest.mark.parametrize("key", sorted(COMPONENT_KEYS.values()))
def test_schema_rejects_mistyped_extension_points(key: str, bad: dict[str, Any]) -> None:
    with pytest.raises(helm_python.HelmValuesError):
        _render({key: bad})


def test_gateway_grace_period_outlasts_its_drain() -> None:
    docs = _render(
        {"gateway": {"drainSeconds": 600, "drainMarginSeconds": 45, "preStopSleepSeconds": 7}}
    )
    gateway = _deployments(docs)["gateway"]["spec"]["template"]["spec"]
    assert _env(gateway["containers"][0])["GATEWAY_DRAIN_S"] == "600"
    assert _gateway_config(docs).drain_s == 600
    assert gateway["terminationGracePeriodSeconds"] == 652
    assert gateway["containers"][0]["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "7"]
    no_sleep = _render({"gateway": {"preStopSleepSeconds": 0}})
    assert "lifecycle" not in _container(_deployments(no_sleep)["gateway"])
    for bad in (
        {"gateway": {"terminationGracePeriodSeconds": 60}},
        {"gateway": {"drainMarginSeconds": 0}},
    ):
        with pytest.raises(helm_python.HelmValuesError):
            _render(bad)


def test_schema_rejects_other_mistakes_of_the_new_values() -> None:
    for bad in (
        {"animator": {"gpuPool": {"preset": "aks"}}},
        {"animator": {"gpu": {"pools": {"t4": {"labels": {"azure": "x"}}}}}},
        {"networkPolicy": {"enable": True}},
        {"networkPolicy": {"metricsFrom": [{"podSelectr": {}}]}},
        {"grpc": {"maxConnectionAgeSeconds": 0}},
        {"global": {"local": "yes"}},
        {"gateway": {"secrets": {"existingSecrets": "s"}}},
        {"gateway": {"limits": {"maxImageBytes": 64 * 2**20}}},
        {"gateway": {"envFrom": []}},
    ):
        with pytest.raises(helm_python.HelmValuesError):
            _render(bad)


def test_operations_doc_shows_the_production_values_verbatim() -> None:
    """docs/operations.md's production example is the file the tests render, lint and validate."""
    doc = (REPO_ROOT / "docs" / "operations.md").read_text()
    values_file = CHART_DIR / "ci" / "production-values.yaml"
    assert "helm/dynamics/ci/production-values.yaml" in doc
    blocks = [block.split("\n", 1)[1] for block in doc.split("```yaml")[1:]]
    blocks = [block[: block.index("```")] for block in blocks]
    assert values_file.read_text() in blocks, "re-copy ci/production-values.yaml into the doc"
    production = VALUES_SETS["production"]
    assert production["gateway"]["publicUrl"].startswith("https://")
    assert production["gateway"]["secrets"]["existingSecret"]
    assert production["gateway"]["ingress"]["className"] == "nginx"
    docs = _render_set("production")
    (ingress,) = _by_kind(docs, "Ingress").values()
    assert "nginx.ingress.kubernetes.io/proxy-body-size" in ingress["metadata"]["annotations"]
    assert {_component(d) for d in _by_kind(docs, "PodDisruptionBudget").values()} == set(
        COMPONENT_KEYS
    )


def _notes(values: dict[str, Any]) -> str:
    with helm_python.Chart.load(str(CHART_DIR)) as chart:
        rendered = chart.render(
            merged(default_values(), values), name="dynamics", namespace="dynamics", is_install=True
        )
    return rendered["dynamics/templates/NOTES.txt"]


def test_notes_give_the_pre_scale_step_when_a_pdb_is_skipped() -> None:
    one = _notes({})
    assert "animator.podDisruptionBudget is on but animator runs one replica" in one
    assert "scale deploy/dynamics-animator --replicas=2" in one
    assert "helm test dynamics -n dynamics" in one
    two = _notes({"animator": {"replicaCount": 2}})
    assert "animator.podDisruptionBudget is on" not in two


def _gateway_config(docs: list[dict[str, Any]]):
    """What the gateway makes of its rendered environment (Secrets' values stand in as text)."""
    from services.gateway.config import GatewayConfig

    stand_in = {
        "DATABASE_URL": "postgresql://u:p@db:5432/dynamics",
        "WEBHOOK_SECRET": "whsec_" + "A" * 44,
    }  # the Standard Webhooks form
    env = {
        name: value if isinstance(value, str) else stand_in.get(name, "from-a-secret")
        for name, value in _env(_container(_deployments(docs)["gateway"])).items()
    }
    return GatewayConfig.from_env({**env, "GATEWAY_AUTH_MODE": "none", "STORAGE_BACKEND": "local"})


@pytest.mark.parametrize("name", sorted(VALUES_SETS), ids=_IDS)
def test_the_gateway_reads_its_drain_and_the_pod_waits_for_it(name: str) -> None:
    docs = _render_set(name)
    config = _gateway_config(docs)
    pod = _deployments(docs)["gateway"]["spec"]["template"]["spec"]
    pre_stop = int(
        _container(_deployments(docs)["gateway"])["lifecycle"]["preStop"]["exec"]["command"][1]
    )
    assert config.drain_s == VALUES_SETS[name].get("gateway", {}).get("drainSeconds", 300)
    # docs/gateway.md, "Drain and rollouts": grace >= drain + preStop sleep + 10.
    assert pod["terminationGracePeriodSeconds"] >= config.drain_s + pre_stop + 10
    assert config.public_url.startswith("https://")
    # Job slots: enough jobs in flight to keep every animator busy (docs/gateway.md, "Job slots").
    gateway = merged(
        yaml.safe_load((CHART_DIR / "values.yaml").read_text())["gateway"],
        VALUES_SETS[name].get("gateway", {}),
    )
    animator = merged(
        yaml.safe_load((CHART_DIR / "values.yaml").read_text())["animator"],
        VALUES_SETS[name].get("animator", {}),
    )
    gateways = (
        gateway["autoscaling"]["minReplicas"]
        if gateway["autoscaling"]["enabled"]
        else gateway["replicaCount"]
    )
    animators = (
        animator["autoscaling"]["maxReplicas"]
        if animator["autoscaling"]["enabled"]
        else animator["replicaCount"]
    )
    assert config.workers * gateways >= 3 * animators
    assert "job slots" not in _notes_raw(VALUES_SETS[name])
    assert "job slots" in _notes({"animator": {"replicaCount": 2}})


def _notes_raw(values: dict[str, Any]) -> str:
    with helm_python.Chart.load(str(CHART_DIR)) as chart:
        rendered = chart.render(values, name="dynamics", namespace="dynamics", is_install=True)
    return rendered["dynamics/templates/NOTES.txt"]
