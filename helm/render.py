"""Render the Dynamics chart offline: `k8s/dynamics.yaml` and `deploy/prometheus/rules.yml`.

Both outputs are derived from `helm/dynamics/` and never edited by hand. `python helm/render.py`
rewrites them; `--check` only compares and exits 1 on drift; `--out-dir DIR` writes the two files
under DIR instead of the repository (the tests use it); `--lint` runs `helm lint --strict` with
every `ci/*-values.yaml`. Both renders use `ci/default-values.yaml`: the chart's defaults plus
the public URL that no install can leave out. Rendering uses helm-python-sdk, which
bundles the Helm SDK, so no `helm` binary or cluster is needed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import helm_python
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CHART_DIR = REPO_ROOT / "helm" / "dynamics"
K8S_OUT = Path("k8s") / "dynamics.yaml"
RULES_OUT = Path("deploy") / "prometheus" / "rules.yml"
DEFAULT_VALUES = CHART_DIR / "ci" / "default-values.yaml"
RELEASE_NAME = "dynamics"
NAMESPACE = "dynamics"

# Helm's install order for the kinds we use, so the file reads like `helm template` output.
_KIND_ORDER = [
    "PriorityClass",
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
]


def render_documents(
    values: dict[str, Any] | None = None, chart_dir: Path = CHART_DIR
) -> list[tuple[str, str, dict[str, Any]]]:
    """Render the chart like `helm template` and split it into documents.

    Returns:
        `(template path, manifest text, parsed manifest)` per non-empty document, in Helm's
        install order (kind, then template path).
    """
    with helm_python.Chart.load(str(chart_dir)) as chart:
        rendered = chart.render(
            values or {}, name=RELEASE_NAME, namespace=NAMESPACE, is_install=True
        )
    documents = []
    for path, text in rendered.items():
        if not path.endswith((".yaml", ".yml")):
            continue
        for part in text.split("\n---"):
            body = part.strip().removeprefix("---").strip()
            parsed = yaml.safe_load(body) if body else None
            if parsed:
                documents.append((path, body, parsed))

    def order(doc: tuple[str, str, dict[str, Any]]) -> tuple[int, str, str]:
        kind = doc[2].get("kind", "")
        rank = _KIND_ORDER.index(kind) if kind in _KIND_ORDER else len(_KIND_ORDER)
        return rank, doc[0], doc[2].get("metadata", {}).get("name", "")

    return sorted(documents, key=order)


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` deep-merged over `base` (maps merge key by key, anything else replaces)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def default_values() -> dict[str, Any]:
    """The values of `ci/default-values.yaml`."""
    return yaml.safe_load(DEFAULT_VALUES.read_text()) or {}


def render_k8s() -> str:
    """`k8s/dynamics.yaml`: every manifest of the chart with `ci/default-values.yaml`."""
    header = (
        "# Rendered from helm/dynamics with helm/dynamics/ci/default-values.yaml by `make render-k8s`"
        f" (release {RELEASE_NAME!r}, namespace {NAMESPACE!r}).\n"
        "# Do not edit: change the chart and re-render; tests/helm/test_chart.py diffs this file.\n"
    )
    parts = [
        f"---\n# Source: {path}\n{body}\n" for path, body, _ in render_documents(default_values())
    ]
    return header + "".join(parts)


def render_rules() -> str:
    """`deploy/prometheus/rules.yml`: the PrometheusRule's groups as a plain rules file."""
    docs = render_documents(
        merged(default_values(), {"metrics": {"prometheusRule": {"enabled": True}}})
    )
    rules = [parsed for _, _, parsed in docs if parsed["kind"] == "PrometheusRule"]
    if len(rules) != 1:
        raise RuntimeError(f"expected one PrometheusRule, rendered {len(rules)}")
    header = (
        "# Rendered from helm/dynamics/templates/prometheusrule.yaml with default values by\n"
        "# `make render-k8s`, for promtool and for Prometheus without the Operator. Do not edit.\n"
    )
    body = yaml.safe_dump({"groups": rules[0]["spec"]["groups"]}, sort_keys=False, width=1000)
    return header + body


def lint() -> int:
    """`helm lint --strict` with each CI values file; returns the number of failing sets."""
    failures = 0
    for values_file in sorted((CHART_DIR / "ci").glob("*-values.yaml")):
        values = yaml.safe_load(values_file.read_text()) or {}
        report = helm_python.lint(str(CHART_DIR), values, strict=True)
        problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        for message in report["messages"]:
            print(
                f"{values_file.name}: [{message['severity']}] {message['path']}: {message['error']}"
            )
        print(f"{values_file.name}: {'FAILED' if problems else 'ok'}")
        failures += bool(problems)
    return failures


def main(argv: list[str] | None = None) -> int:
    """Write (or with --check, compare) the rendered files; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 on drift")
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT, help="root to write under")
    parser.add_argument("--lint", action="store_true", help="helm lint --strict with ci/ values")
    args = parser.parse_args(argv)
    if args.lint:
        return 1 if lint() else 0
    outputs = {K8S_OUT: render_k8s(), RULES_OUT: render_rules()}
    drift = []
    for rel, text in outputs.items():
        target = args.out_dir / rel
        if args.check:
            if not target.is_file() or target.read_text() != text:
                drift.append(str(rel))
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    if drift:
        print(f"out of date (run `make render-k8s`): {', '.join(drift)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
