"""A real Prometheus (Debian package) scrapes the running stack during a job and answers the
dashboard's p95 stage-latency query; it also loads and evaluates our alert rules."""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from tests.observability.promql_names import RULES_FILE
from tests.observability.stack import free_port

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        PROMETHEUS is None,
        reason="prometheus not found: the setup script must "
        "install the Debian `prometheus` package",
    ),
]
STAGE_P95 = (
    "histogram_quantile(0.95, sum by (le, stage) "
    '(increase(dynamics_stage_seconds_bucket{namespace="e2e"}[5m])))'
)


def _config(metrics_urls: dict[str, str], rules: Path) -> dict:
    scrape = []
    for service, url in sorted(metrics_urls.items()):
        parts = urlsplit(url)
        scrape.append(
            {
                "job_name": service,
                "metrics_path": parts.path,
                "static_configs": [{"targets": [parts.netloc], "labels": {"namespace": "e2e"}}],
            }
        )
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": scrape,
    }


@pytest.fixture
def prometheus(running_stack, tmp_path: Path) -> Iterator[httpx.Client]:
    """Prometheus on a loopback port, scraping every service each second."""
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(_config(running_stack.metrics_urls, RULES_FILE)))
    port = free_port()
    with open(tmp_path / "prometheus.log", "wb") as log:
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    try:
        _wait_ready(client, proc, tmp_path / "prometheus.log")
        yield client
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_ready(client: httpx.Client, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if client.get("/-/ready").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    pytest.fail("prometheus did not become ready")


def _query(client: httpx.Client, expr: str) -> list[dict]:
    body = client.get("/api/v1/query", params={"query": expr}).json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def _wait_for(client: httpx.Client, expr: str, count: int, timeout_s: float = 30.0) -> list:
    deadline = time.monotonic() + timeout_s
    while True:
        result = _query(client, expr)
        if len(result) >= count or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def _bucket_bounds(client: httpx.Client) -> list[float]:
    series = _query(client, 'dynamics_stage_seconds_bucket{stage="animate"}')
    return sorted(float(s["metric"]["le"]) for s in series)


def test_prometheus_answers_stage_p95_for_a_job(running_stack, prometheus) -> None:
    up = _wait_for(prometheus, "up == 1", count=4)
    assert {s["metric"]["job"] for s in up} == set(running_stack.metrics_urls)
    time.sleep(2.0)  # a few scrapes before the job, so increase() sees it start from here

    view = running_stack.run_job()
    time.sleep(3.0)  # a few scrapes after it

    stages = {"detect", "animate", "encode"}
    result = _wait_for(prometheus, STAGE_P95, count=len(stages))
    p95 = {s["metric"]["stage"]: float(s["value"][1]) for s in result}
    assert stages <= set(p95), p95
    bounds = [0.0] + _bucket_bounds(prometheus)
    for stage in stages:
        measured = view["timings"][stage]
        # One observation: the p95 interpolates inside the bucket that holds the job's time.
        upper = next(b for b in bounds if b >= measured)
        lower = bounds[bounds.index(upper) - 1]
        assert math.isfinite(p95[stage]) and lower <= p95[stage] <= upper, (stage, measured, p95)

    jobs = _query(prometheus, 'increase(dynamics_jobs_total{status="succeeded"}[5m])')
    assert sum(float(s["value"][1]) for s in jobs) >= 0.9


def test_prometheus_evaluates_our_alert_rules(running_stack, prometheus) -> None:
    deadline = time.monotonic() + 30
    while True:
        groups = prometheus.get("/api/v1/rules").json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        evaluated = [r for r in rules if r.get("lastEvaluation", "").startswith("20")]
        if len(evaluated) == len(rules) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    expected = {
        a
        for g in yaml.safe_load(RULES_FILE.read_text())["groups"]
        for a in (r["alert"] for r in g["rules"])
    }
    assert {r["name"] for r in rules} == expected
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
    firing = {r["name"] for r in rules if r["state"] == "firing"}
    assert not firing, f"a healthy stack fires {firing}"
