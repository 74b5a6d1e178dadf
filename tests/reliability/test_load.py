"""Load (slow): 50 jobs submitted at once to a real gateway with 6 workers over the real
services (fixture weights, 2-frame clips). The animator takes 2 jobs at a time, so it answers
RESOURCE_EXHAUSTED past capacity and the gateway requeues those jobs instead of failing them.
All 50 succeed, none runs twice, and the services' memory (RSS) stays bounded."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest

from services.cli.demo_media import write_hero_clip, write_source_photo
from tests.reliability.conftest import needs_ffmpeg
from tests.reliability.fault_stack import FaultStack, GatewayRun, gateway_env

pytestmark = [pytest.mark.slow, pytest.mark.ffmpeg, needs_ffmpeg]
JOBS = 50
RSS_LIMIT_MB = {"face_detect": 1500, "animator": 2500, "encoder": 800}


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _handled(metrics: str, method: str, code: str) -> float:
    pattern = rf'grpc_server_handled_total\{{[^}}]*grpc_code="{code}"[^}}]*grpc_method="{method}"'
    alt = rf'grpc_server_handled_total\{{[^}}]*grpc_method="{method}"[^}}]*grpc_code="{code}"'
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if re.match(pattern, line) or re.match(alt, line)
    )


def test_fifty_concurrent_jobs_all_complete_once(tmp_path: Path) -> None:
    photo = write_source_photo(tmp_path / "me.png", side=160).read_bytes()
    hero = write_hero_clip(tmp_path / "hero.mp4", seconds=0.4, fps=5, size=128).read_bytes()
    stack = FaultStack(extra_env={"animator": {"ANIMATOR_MAX_JOBS": "2"}}).start()
    gateway = GatewayRun(
        tmp_path / "gw",
        gateway_env(stack, GATEWAY_WORKERS="6", JOB_MAX_QUEUE_S="600", JOB_RETRY_BASE_S="0.2"),
    ).start()
    peaks = {name: 0.0 for name in stack.procs}
    baseline = {name: _rss_mb(stack.procs[name][0].proc.pid) for name in stack.procs}
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.5):
            for name, procs in stack.procs.items():
                peaks[name] = max(peaks[name], _rss_mb(procs[0].proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    try:
        jobs = [gateway.submit(photo, hero, seconds="1") for _ in range(JOBS)]
        views = [gateway.wait_final(job, timeout=900) for job in jobs]
        elapsed = time.monotonic() - started
        metrics = {name: procs[0].metrics() for name, procs in stack.procs.items()}
        gateway_metrics = gateway.metrics()
    finally:
        sampling.set()
        sampler.join()
        gateway.stop()
        stack.stop()
    statuses = [v["status"] for v in views]
    failures = [(v["error"], v["attempts"]) for v in views if v["status"] != "succeeded"]
    assert statuses == ["succeeded"] * JOBS, failures[:3]
    assert len(set(jobs)) == JOBS
    assert _handled(metrics["animator"], "Animate", "OK") == JOBS  # each job animated once
    assert _handled(metrics["encoder"], "Encode", "OK") == JOBS
    exhausted = _handled(metrics["animator"], "Animate", "RESOURCE_EXHAUSTED")
    assert exhausted > 0, "the animator was never past capacity"
    assert f'dynamics_jobs_total{{status="succeeded"}} {float(JOBS)}' in gateway_metrics
    results = [p for p in (tmp_path / "gw").rglob("*.mp4") if "result" in str(p)]
    assert len(results) == JOBS
    for name, limit in RSS_LIMIT_MB.items():
        assert peaks[name] < limit, (name, peaks[name])
    print(
        f"load: {JOBS} jobs in {elapsed:.1f} s; RESOURCE_EXHAUSTED answers {exhausted:.0f}; "
        f"attempts max {max(v['attempts'] for v in views)}; RSS MB baseline {baseline} "
        f"peak {peaks}"
    )
