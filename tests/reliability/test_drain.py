"""SIGTERM on any service, or on the gateway, while a job is in flight: the in-flight work is
drained within the grace period (the attempt in flight at the signal is the one that finishes
the job) and the process then exits by itself."""

from __future__ import annotations

import signal
import time

import pytest

from tests.reliability.conftest import needs_ffmpeg
from tests.reliability.fault_stack import PREFIX, FaultStack, GatewayRun, gateway_env
from tests.reliability.test_faults import (  # noqa: F401 - shared fixtures
    _busy_replica,
    big_media,
    media,
)

pytestmark = [pytest.mark.ffmpeg, needs_ffmpeg]
GRACE_S = 30.0
METHOD = {"face_detect": "TrackDriving", "animator": "Animate", "encoder": "Encode"}


def _handled_methods(metrics: str) -> set[str]:
    return {
        line.split('grpc_method="')[1].split('"')[0]
        for line in metrics.splitlines()
        if line.startswith("grpc_server_handled_total{") and not line.endswith(" 0.0")
    }


def _story(gateway_lines: list[str], job: str, service_lines: list[str]) -> str:
    told = [
        line[:500]
        for line in gateway_lines
        if (job in line and "HTTP/1.1" not in line)
        or '"severity": "WARNING"' in line
        or '"severity": "ERROR"' in line
    ]
    return "\n".join(["gateway:", *told[-40:], "drained service:", *service_lines[-15:]])


@pytest.fixture(scope="module")
def stack():
    grace = {name: {f"{prefix}_GRACE_S": str(int(GRACE_S))} for name, prefix in PREFIX.items()}
    stack = FaultStack(extra_env=grace).start()
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def gateway(stack, tmp_path_factory):
    run = GatewayRun(tmp_path_factory.mktemp("drain-gateway"), gateway_env(stack)).start()
    yield run
    run.stop()


@pytest.fixture(scope="module")
def warm(gateway, media) -> None:  # noqa: F811
    """One job first, so the hero's motion is cached: later jobs make exactly one call to the
    animator (Animate) and one to the encoder, the ones in flight when SIGTERM comes."""
    assert gateway.wait_final(gateway.submit(*media, seconds="2"))["status"] == "succeeded"


@pytest.mark.parametrize(
    "name",
    [
        "animator",
        "encoder",
        "face_detect",
    ],
)
def test_sigterm_drains_a_service(
    name: str,
    stack,
    gateway,
    warm,
    media,  # noqa: F811
    big_media,  # noqa: F811
) -> None:
    """One replica of each: nothing else could take over, so only a real drain succeeds first
    time. face_detect gets an uncached hero, so that TrackDriving runs."""
    job = gateway.submit(*(big_media(0) if name == "face_detect" else media), seconds="2")
    index = _busy_replica(stack, name, METHOD[name])
    service = stack.procs[name][index]
    if name == "face_detect":  # the job's other call (DetectSource) must be in, too
        deadline = time.monotonic() + 30
        while "DetectSource" not in _handled_methods(service.metrics()):
            assert time.monotonic() < deadline
            time.sleep(0.02)
    # The attempt whose call is in flight now is the one that must succeed. An earlier attempt
    # may have failed before the signal: the service restarted by the previous case can still
    # be in the gateway channel's reconnect backoff, and a fail-fast call then gets UNAVAILABLE
    # and is retried. That is the retry policy at work, not a drain that cut a call.
    in_flight = gateway.view(job)["attempts"]
    started = time.monotonic()
    service.proc.send_signal(signal.SIGTERM)
    code = service.proc.wait(GRACE_S + 10)
    took = time.monotonic() - started
    stack.restart(name, index)
    view = gateway.wait_final(job, timeout=120)
    assert code == 0 and took < GRACE_S, (code, took)
    assert any("drain" in line.lower() or "stopp" in line.lower() for line in service.lines)
    assert view["status"] == "succeeded", view
    # the in-flight call was finished, not cut; otherwise say everything the gateway said about
    # this job and every warning, and how the drained service ended
    assert view["attempts"] == in_flight, _story(gateway.process.lines, job, service.lines)


def test_sigterm_drains_the_gateway(stack, media, tmp_path) -> None:  # noqa: F811
    env = gateway_env(stack)
    first = GatewayRun(tmp_path / "gw", env).start()
    job = first.submit(*media, seconds="2")
    first.wait_until(job, lambda v: v["frames_done"] >= 1, 60)
    started = time.monotonic()
    code = first.stop(sig=signal.SIGTERM, timeout=45)
    assert code in (0, -signal.SIGTERM), code
    assert time.monotonic() - started < 40
    second = GatewayRun(tmp_path / "gw", env).start()
    try:
        view = second.view(job)
    finally:
        second.stop()
    assert view["status"] == "succeeded" and view["attempts"] == 1, view
