"""`dynamics up` as a subprocess for end-to-end tests: start it on a port, wait until it answers,
stop it with SIGTERM (its drain) at the end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.fixture_set import DEFAULT_SET


def start_up(
    tmp_path: Path, port: int, weights: Path = DEFAULT_SET.checkpoints, *extra: str
) -> tuple[subprocess.Popen, Path]:
    """Start `dynamics up` on `port` with `weights` on the CPU; returns the process and its log."""
    log = tmp_path / "up.log"
    env = {**os.environ, "ANIMATOR_BATCH_SIZE": "2", "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "services.cli", "up", "--port", str(port)]
    argv += ["--weights", str(weights), "--data-dir", str(tmp_path / "data"), "--device", "cpu"]
    with open(log, "wb") as out:
        proc = subprocess.Popen([*argv, *extra], stdout=out, stderr=subprocess.STDOUT, env=env)
    return proc, log


def wait_ready(proc: subprocess.Popen, log: Path, base: str, timeout_s: float = 180) -> None:
    """Until `base/readyz` answers 200; fails with the log's tail if `up` exits or times out."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "not ready:\n" + log.read_text()[-3000:]
        time.sleep(0.5)


def stop(proc: subprocess.Popen, timeout_s: float = 90) -> int:
    """SIGTERM (the stack drains) and its exit code; one that does not end in time is killed
    and the timeout raised."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


@contextmanager
def running_up(tmp_path: Path, port: int, *extra: str) -> Iterator[str]:
    """`dynamics up` with the fixture weights, ready; yields its base URL, stops it after."""
    proc, log = start_up(tmp_path, port, DEFAULT_SET.checkpoints, *extra)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, log, base)
        yield base
    finally:
        stop(proc)
