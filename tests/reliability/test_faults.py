"""Faults on the real stack: services SIGKILLed mid-job (two animator replicas), a service that
stays down, and the gateway SIGKILLed mid-job. Nothing is lost or run twice, nothing hangs.

Each fault runs once in the default suite; `-m slow` repeats each one (see docs/reliability.md).
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest

from services.cli.demo_media import write_hero_clip, write_source_photo
from tests.reliability.conftest import needs_ffmpeg
from tests.reliability.fault_stack import FaultStack, GatewayRun, gateway_env

pytestmark = [pytest.mark.ffmpeg, needs_ffmpeg]
REPEATS = 4  # runs of each fault under -m slow (one more runs by default)
RUNS = [0] + [pytest.param(i, marks=pytest.mark.slow) for i in range(1, REPEATS)]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> tuple[bytes, bytes]:
    folder = tmp_path_factory.mktemp("fault-media")
    photo = write_source_photo(folder / "me.png", side=224).read_bytes()
    hero = write_hero_clip(folder / "hero.mp4", seconds=2.0, fps=5, size=160).read_bytes()
    return photo, hero


@pytest.fixture(scope="module")
def big_media(media, tmp_path_factory):
    """Larger driving frames, so face tracking lasts long enough to be killed mid-stream; a new
    clip (another tone) per run, so the motion cache never skips the tracking."""
    folder = tmp_path_factory.mktemp("fault-media-big")

    def make(run: int) -> tuple[bytes, bytes]:
        clip = write_hero_clip(
            folder / f"big{run}.mp4", seconds=2.0, fps=5, size=720, tone_hz=440.0 + 20 * run
        )
        return media[0], clip.read_bytes()

    return make


@pytest.fixture(scope="module")
def stack():
    stack = FaultStack(replicas={"face_detect": 1, "animator": 2, "encoder": 1}).start()
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def gateway(stack, tmp_path_factory):
    run = GatewayRun(tmp_path_factory.mktemp("fault-gateway"), gateway_env(stack)).start()
    yield run
    run.stop()


def _in_flight(metrics: str, method: str) -> float:
    """Calls of `method` started minus handled, from one replica's /metrics."""
    total = 0.0
    for line in metrics.splitlines():
        if f'grpc_method="{method}"' not in line:
            continue
        value = float(line.rsplit(" ", 1)[1])
        if line.startswith("grpc_server_started_total{"):
            total += value
        elif line.startswith("grpc_server_handled_total{"):
            total -= value
    return total


def _busy_replica(stack: FaultStack, name: str, method: str, timeout: float = 60.0) -> int:
    """Wait until a replica of `name` is running `method`; returns its index."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for index, service in enumerate(stack.procs[name]):
            if service is not None and _in_flight(service.metrics(), method) > 0:
                return index
        time.sleep(0.02)
    raise AssertionError(f"no {name} replica ran {method}")


def _succeeded_total(gateway: GatewayRun) -> float:
    match = re.search(r'dynamics_jobs_total\{status="succeeded"\} (\S+)', gateway.metrics())
    return float(match.group(1)) if match else 0.0


KILL_AT = {  # victim -> (frames animated before the kill, RPC in flight)
    "face_detect": (0, "TrackDriving"),
    "animator": (1, "Animate"),
    "encoder": (1, "Encode"),
}


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("victim", ["face_detect", "animator", "encoder"])
def test_service_killed_mid_job_is_retried(
    victim: str, run: int, stack, gateway, media, big_media
) -> None:
    frames, method = KILL_AT[victim]
    before = _succeeded_total(gateway)
    job = gateway.submit(*(big_media(run) if victim == "face_detect" else media), seconds="2")
    if frames:
        gateway.wait_until(job, lambda v: v["frames_done"] >= frames, 60)
    index = _busy_replica(stack, victim, method)
    stack.kill(victim, index)
    restarter = None
    if len(stack.procs[victim]) == 1:  # no other replica: bring it back where it was
        restarter = threading.Thread(target=stack.restart, args=(victim, index))
        restarter.start()
    started = time.monotonic()
    view = gateway.wait_final(job, timeout=120)
    if restarter is not None:
        restarter.join(120)
    else:
        stack.restart(victim, index)
    assert view["status"] == "succeeded", view
    assert view["attempts"] >= 2, view  # the killed attempt failed and was retried
    assert time.monotonic() - started < 120
    assert _succeeded_total(gateway) == before + 1
    assert gateway.client.get(f"/v1/jobs/{job}/result").status_code == 200


def test_service_that_stays_down_fails_the_job_with_a_reason(stack, media, tmp_path) -> None:
    run = GatewayRun(
        tmp_path / "gw", gateway_env(stack, JOB_MAX_ATTEMPTS="3", JOB_RETRY_BASE_S="0.2")
    ).start()
    try:
        stack.kill("encoder")
        started = time.monotonic()
        view = run.wait_final(run.submit(*media, seconds="2"), timeout=90)
        assert time.monotonic() - started < 90
    finally:
        run.stop()
        stack.restart("encoder")
    assert view["status"] == "failed" and view["attempts"] == 3, view
    assert view["error"]["code"] == "service_unavailable", view
    assert "encoder" in view["error"]["message"]


@pytest.mark.parametrize("run", RUNS)
def test_gateway_killed_mid_job_reruns_it_once(run: int, stack, media, tmp_path: Path) -> None:
    env = gateway_env(stack)
    first = GatewayRun(tmp_path / "gw", env).start()
    job = first.submit(*media, seconds="2")
    first.wait_until(job, lambda v: v["stage"] == "animate" and v["frames_done"] >= 1, 60)
    assert first.stop(sig=9) == -9
    second = GatewayRun(tmp_path / "gw", env).start()
    try:
        view = second.wait_final(job, timeout=120)
        assert view["status"] == "succeeded" and view["attempts"] == 2, view
        assert _succeeded_total(second) == 1.0
        listed = second.client.get("/v1/jobs").json()["jobs"]
        assert [j["id"] for j in listed] == [job]
        results = [p for p in (tmp_path / "gw").rglob("*.mp4") if "result" in str(p)]
        assert len(results) == 1, results
    finally:
        second.stop()
