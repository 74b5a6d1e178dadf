"""`python -m services.gateway` as a real process: serves, reports readiness, drains on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx

from tests.unit.gateway.gateway_harness import wait_for


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_gateway_process_serves_and_stops_on_sigterm(tmp_path):
    port = _free_port()
    env = dict(
        os.environ,
        GATEWAY_PORT=str(port),
        GATEWAY_AUTH_MODE="none",
        GATEWAY_DATA_DIR=str(tmp_path / "data"),
        FACE_DETECT_ADDR="127.0.0.1:1",
        ANIMATOR_ADDR="127.0.0.1:1",
        ENCODER_ADDR="127.0.0.1:1",
        JOB_POLL_S="0.2",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.gateway"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def healthy():
            if proc.poll() is not None:
                raise AssertionError(proc.stdout.read().decode()[-2000:])
            try:
                return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout=60, every=0.2)
        ready = httpx.get(f"{base}/readyz", timeout=10)
        # No gRPC service listens, and the replica is ready all the same: readiness covers the
        # database and the storage only.
        assert ready.status_code == 200 and set(ready.json()["checks"]) == {"database", "storage"}
        assert "/v1/jobs" in httpx.get(f"{base}/openapi.json").json()["paths"]
        assert (tmp_path / "data" / "jobs.sqlite3").is_file()
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
        assert time.monotonic() - started < 30
        log = proc.stdout.read().decode()
        assert "Application shutdown complete" in log, log[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
