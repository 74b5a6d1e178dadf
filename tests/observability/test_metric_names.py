"""Every metric name the dashboards and alert rules use is exported by a running service.

The stack runs one real job first, so labelled series (per stage, per gRPC method, per
detection kind) exist; then each service's /metrics is scraped and parsed."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.observability.promql_names import metric_names, used_metric_names

pytestmark = pytest.mark.slow


def exported_names(text: str) -> set[str]:
    """Sample names in a Prometheus text exposition (`x_bucket`, `x_sum`, `y_total`, ...)."""
    return {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }


def test_name_extraction_is_selective() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le, stage) (rate(dynamics_stage_seconds_bucket"
        '{namespace=~"$namespace", stage!="upload"}[$__rate_interval]))) > bool on() '
        "count(up offset 5m) * 1e3"
    )
    assert metric_names(expr) == {"dynamics_stage_seconds_bucket", "up"}


def test_dashboard_and_rule_metrics_are_exported(running_stack) -> None:
    running_stack.run_job()
    exported: dict[str, set[str]] = {}
    for service, url in running_stack.metrics_urls.items():
        response = httpx.get(url, timeout=10)
        assert response.status_code == 200, f"{service}: {url}"
        exported[service] = exported_names(response.text)
    everything = set().union(*exported.values())
    used = used_metric_names()
    assert len(used) >= 20
    missing = {name: sorted(where) for name, where in used.items() if name not in everything}
    assert not missing, f"used but exported by no running service: {missing}"
    # Each family comes from the service that owns it, not from a stray registry.
    owners = {
        "animator_": "animator",
        "encoder_": "encoder",
        "face_detect_": "face_detect",
        "dynamics_": "gateway",
    }
    for name in used:
        for prefix, service in owners.items():
            if name.startswith(prefix):
                assert name in exported[service], f"{name} not exported by {service}"
    for service in ("face_detect", "animator", "encoder"):
        assert "grpc_server_handled_total" in exported[service], service
