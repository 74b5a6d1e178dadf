"""A gateway killed with SIGKILL mid-job: after a restart the job runs again once, no more."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import httpx
import pytest

from tests.unit.gateway.gateway_harness import make_video, png_bytes, wait_for

pytestmark = pytest.mark.ffmpeg


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(data_dir, port: int, block: bool) -> subprocess.Popen:
    env = dict(
        os.environ,
        GATEWAY_PORT=str(port),
        GATEWAY_AUTH_MODE="none",
        GATEWAY_DATA_DIR=str(data_dir),
        JOB_LEASE_S="2",
        JOB_HEARTBEAT_S="0.3",
        JOB_POLL_S="0.1",
        STANDIN_BLOCK="1" if block else "0",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.unit.gateway.standin_gateway"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def up() -> bool:
        assert proc.poll() is None, "gateway exited"
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, timeout=60, every=0.2)
    return proc


def test_killed_gateway_job_is_rerun_once_after_restart(tmp_path):
    video = make_video(tmp_path / "hero.mp4").read_bytes()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    first = _start(tmp_path / "data", port, block=True)
    try:
        job_id = httpx.post(
            f"{base}/v1/jobs",
            files={
                "source": ("me.png", png_bytes(), "image/png"),
                "driving": ("hero.mp4", video, "video/mp4"),
            },
        ).json()["id"]
        wait_for(lambda: httpx.get(f"{base}/v1/jobs/{job_id}").json()["status"] == "running")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    second = _start(tmp_path / "data", port, block=False)
    try:

        def done():
            view = httpx.get(f"{base}/v1/jobs/{job_id}").json()
            return view if view["status"] in ("succeeded", "failed", "cancelled") else None

        view = wait_for(done, timeout=30)
        assert view["status"] == "succeeded" and view["attempts"] == 2
        assert httpx.get(f"{base}/v1/jobs/{job_id}/result").content == video
        listed = httpx.get(f"{base}/v1/jobs").json()["jobs"]
        assert [job["id"] for job in listed] == [job_id]
        metrics = httpx.get(f"{base}/metrics").text
        assert 'dynamics_jobs_total{status="succeeded"} 1.0' in metrics
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            second.wait(timeout=30)
        except subprocess.TimeoutExpired:
            second.kill()
            second.wait()
