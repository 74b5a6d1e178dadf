"""local_stack: a service that cannot start fails the stack with its own log, nothing is left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.gateway.local_stack import LocalStack, StackConfig, StackError, weights_fingerprint

FIXTURE_WEIGHTS = Path(__file__).resolve().parents[1] / "fixtures" / "liveportrait" / "checkpoints"


def test_a_failing_service_reports_its_log_and_the_rest_is_stopped(tmp_path: Path) -> None:
    stack = LocalStack(StackConfig(weights_dir=tmp_path / "no-weights", env=dict(os.environ),
                                   animator_device="cpu", start_timeout_s=120))
    with pytest.raises(StackError) as err:
        stack.start()
    text = str(err.value)
    assert "animator exited with code" in text and "ANIMATOR_WEIGHTS_DIR" in text
    assert stack.services == {}


def test_weights_fingerprint_tracks_content(tmp_path: Path) -> None:
    for name in ("a.pth", "b.pth"):
        (tmp_path / name).write_bytes(name.encode())
    first = weights_fingerprint(tmp_path)
    assert first == weights_fingerprint(tmp_path) and len(first) == 32
    (tmp_path / "b.pth").write_bytes(b"changed")
    assert weights_fingerprint(tmp_path) != first
    assert weights_fingerprint(FIXTURE_WEIGHTS) != first


_PARENT = """
import json, sys, time
from pathlib import Path
from services.gateway.local_stack import LocalStack, StackConfig
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
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(FIXTURE_WEIGHTS)],
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
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
