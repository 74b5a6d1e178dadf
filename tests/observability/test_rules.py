"""Alert rules and dashboard queries through the real `promtool`: syntax, alert unit tests, and
proof that the unit tests notice a weakened rule."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.observability.promql_names import (
    DASHBOARD_DIR,
    REPO_ROOT,
    RULES_FILE,
    dashboard_exprs,
    metric_names,
    rule_exprs,
    substitute_grafana,
)

PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not found: the setup script must install the Debian `prometheus` package",
)
RULES_TEST = RULES_FILE.parent / "rules_test.yml"
OPERATIONS_DOC = REPO_ROOT / "docs" / "operations.md"


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_rules_file_is_valid() -> None:
    result = _promtool("check", "rules", RULES_FILE.name, cwd=RULES_FILE.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = [name for name, _ in rule_exprs()]
    assert f"SUCCESS: {len(alerts)} rules found" in result.stdout


def test_alert_unit_tests_pass() -> None:
    result = _promtool("test", "rules", RULES_TEST.name, cwd=RULES_TEST.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    firing, quiet = set(), set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    alerts = {name for name, _ in rule_exprs()}
    assert alerts <= firing, f"alerts never expected to fire: {alerts - firing}"
    assert alerts <= quiet, f"alerts never expected to stay quiet: {alerts - quiet}"


def test_unit_tests_catch_weakened_thresholds(tmp_path: Path) -> None:
    """Raise every threshold far out of reach: the alert unit tests must now fail."""
    text = RULES_FILE.read_text()
    weakened = re.sub(r"> (\d+(?:\.\d+)?)$", r"> 1e9", text, flags=re.MULTILINE)
    weakened = weakened.replace(">= 0.05", ">= -1")
    assert weakened != text
    (tmp_path / RULES_FILE.name).write_text(weakened)
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    result = _promtool("test", "rules", RULES_TEST.name, cwd=tmp_path)
    assert result.returncode != 0
    for alert, _ in rule_exprs():
        assert f"alertname: {alert}" in result.stdout + result.stderr, alert


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each panel query, with Grafana's variables filled in, must parse as a recording rule."""
    rules = [
        {"record": f"dashboard:query_{i}:check", "expr": substitute_grafana(expr)}
        for i, (_, expr) in enumerate(dashboard_exprs())
    ]
    assert len(rules) >= 20
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = _promtool("check", "rules", path.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_covers_the_owners_questions() -> None:
    (path,) = sorted(DASHBOARD_DIR.glob("*.json"))
    dashboard = json.loads(path.read_text())
    exprs = " ".join(expr for _, expr in dashboard_exprs())
    names = set().union(*(metric_names(expr) for _, expr in dashboard_exprs()))
    for needed in (
        "dynamics_stage_seconds_bucket",
        "dynamics_jobs_total",
        "dynamics_queue_depth",
        "animator_batch_size_bucket",
        "animator_busy_seconds_total",
        "dynamics_job_gpu_seconds_sum",
    ):
        assert needed in names, needed
    assert "histogram_quantile(0.5, sum by (le, stage)" in exprs
    assert "histogram_quantile(0.95, sum by (le, stage)" in exprs
    assert "$gpu_price_per_hour" in exprs
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace", "gpu_price_per_hour"} <= variables
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_runbook_links_point_at_operations_doc() -> None:
    rules = yaml.safe_load(RULES_FILE.read_text())["groups"]
    headings = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in OPERATIONS_DOC.read_text().splitlines()
        if line.startswith("#")
    }
    for group in rules:
        for rule in group["rules"]:
            anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
            assert anchor in headings, f"{rule['alert']}: no heading for #{anchor}"


# An aggregation applied straight to dynamics_queue_depth: `max(...)`, `max by (x) (...)`.
_QUEUE_DEPTH_AGG = re.compile(r"\b(\w+)\s*(?:by\s*\([^)]*\)\s*)?\(\s*dynamics_queue_depth\b")


def _queue_depth_consumers() -> list[tuple[str, str]]:
    """Every query that reads dynamics_queue_depth: alerts, dashboard panels, KEDA's trigger."""
    from helm.render import default_values, merged, render_documents

    found = [
        (where, expr)
        for where, expr in [*rule_exprs(), *dashboard_exprs()]
        if "dynamics_queue_depth" in expr
    ]
    keda = {"animator": {"autoscaling": {"enabled": True, "mode": "keda"}}}
    docs = render_documents(merged(default_values(), keda))
    for _, _, doc in docs:
        if doc["kind"] == "ScaledObject":
            found += [("ScaledObject", t["metadata"]["query"]) for t in doc["spec"]["triggers"]]
    return found


def test_queue_depth_is_counted_once_by_every_consumer() -> None:
    """Each gateway replica exports the whole shared queue: only `max` counts it once."""
    consumers = _queue_depth_consumers()
    wheres = {where.split(":")[0] for where, _ in consumers}
    assert {
        "DynamicsQueueBacklog",
        "DynamicsAnimatorIdleWhileJobsWait",
        "ScaledObject",
        "dynamics-overview.json",
    } <= wheres, wheres
    for where, expr in consumers:
        uses = expr.count("dynamics_queue_depth")
        aggregations = _QUEUE_DEPTH_AGG.findall(expr)
        assert aggregations == ["max"] * uses, f"{where}: {expr}"


def test_unit_tests_catch_a_summed_queue_depth(tmp_path: Path) -> None:
    """With `sum` over the two replicas' gauges the queue doubles: the unit tests must fail."""
    text = RULES_FILE.read_text()
    summed = text.replace(
        "max by (namespace) (dynamics_queue_depth)", "sum by (namespace) (dynamics_queue_depth)"
    )
    assert summed.count("sum by (namespace) (dynamics_queue_depth)") == 2
    (tmp_path / RULES_FILE.name).write_text(summed)
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    result = _promtool("test", "rules", RULES_TEST.name, cwd=tmp_path)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    for alert in ("DynamicsQueueBacklog", "DynamicsAnimatorIdleWhileJobsWait"):
        assert f"alertname: {alert}" in output, alert
