"""local_stack: a service that cannot start fails the stack with its own log, nothing is left;
services listen on 127.0.0.1 only; a supervised stack restarts a killed service on its port
until the restart budget is spent, then reports the service."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.cli.local_stack import LocalStack, StackConfig, StackError
from services.common.grpc_client import check_health, make_channel
from services.gateway.pipeline.clients import ENCODER_SERVICE
from tests.fixture_set import DEFAULT_SET
from tests.unit.common.listening import listening_sockets

FIXTURE_WEIGHTS = DEFAULT_SET.checkpoints  # the services run on the default fixture set


def test_a_failing_service_reports_its_log_and_the_rest_is_stopped(tmp_path: Path) -> None:
    stack = LocalStack(
        StackConfig(
            weights_dir=tmp_path / "no-weights",
            env=dict(os.environ),
            animator_device="cpu",
            start_timeout_s=120,
        )
    )
    with pytest.raises(StackError) as err:
        stack.start()
    text = str(err.value)
    assert "animator exited with code" in text and "ANIMATOR_WEIGHTS_DIR" in text
    assert stack.services == {}


_PARENT = """
import json, sys, time
from pathlib import Path
from services.cli.local_stack import LocalStack, StackConfig
stack = LocalStack(StackConfig(weights_dir=Path(sys.argv[1]), animator_device="cpu"))
stack.start()
print(json.dumps({name: s.proc.pid for name, s in stack.services.items()}), flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has exited; only its reaping is left


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc (Linux)")
def test_services_stop_when_the_process_that_started_them_is_killed(tmp_path: Path) -> None:
    """`dynamics render` SIGKILLed: its services get SIGTERM from the kernel (parent-death
    signal, set by each service after exec) and drain, instead of living on as orphans."""
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, str(FIXTURE_WEIGHTS)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    try:
        pids = json.loads(parent.stdout.readline())
        assert set(pids) == {"face_detect", "animator", "encoder"}
        assert all(_alive(pid) for pid in pids.values())
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = {name: pid for name, pid in pids.items() if _alive(pid)}
    for pid in left.values():
        os.kill(pid, signal.SIGKILL)
    assert not left, f"orphaned services: {left}"


def _wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.skipif(not Path("/proc/net/tcp").is_file(), reason="reads /proc (Linux)")
def test_supervised_stack_restarts_a_killed_service_on_its_port_within_budget(
    tmp_path: Path,
) -> None:
    stack = LocalStack(
        StackConfig(
            weights_dir=FIXTURE_WEIGHTS,
            animator_device="cpu",
            log_dir=tmp_path,
            max_restarts=2,
            restart_backoff_s=0.2,
        )
    )
    failures: list[StackError] = []
    stack.start()
    try:
        for name, service in stack.services.items():
            bound = listening_sockets(service.proc.pid)
            assert {address for address, _ in bound} == {"127.0.0.1"}, (name, bound)
            assert {service.port, service.metrics_port} <= {port for _, port in bound}
        stack.supervise(on_failure=failures.append, poll_s=0.1)
        encoder = stack.services["encoder"]
        port = encoder.port
        for restart in (1, 2):
            old = encoder.proc
            os.kill(old.pid, signal.SIGKILL)
            _wait_until(lambda n=restart: encoder.restarts == n, 90, f"restart {restart}")
            assert encoder.proc.pid != old.pid and encoder.port == port
            assert not _alive(old.pid) and not Path(f"/proc/{old.pid}").exists()  # reaped
            channel = make_channel(encoder.target)
            try:
                assert check_health(channel, ENCODER_SERVICE) == "SERVING"
            finally:
                channel.close()
            assert {a for a, _ in listening_sockets(encoder.proc.pid)} == {"127.0.0.1"}
        assert failures == [] and stack.failure is None
        last = encoder.proc
        os.kill(last.pid, signal.SIGKILL)  # the third death within the window: given up
        _wait_until(lambda: failures, 30, "the supervisor to give up")
        assert failures == [stack.failure]
        assert str(stack.failure).startswith(
            "encoder was killed by SIGKILL; it died 3 times within 300 s (at most 2 restarts"
        )
        time.sleep(1.0)
        assert encoder.proc is last and encoder.restarts == 2  # not restarted again
        assert all(s.proc.poll() is None for n, s in stack.services.items() if n != "encoder")
    finally:
        codes = stack.stop()
    assert codes["encoder"] == -signal.SIGKILL
