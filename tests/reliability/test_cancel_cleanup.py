"""A cancelled job's uploaded photo and video are deleted from the gateway's disk.

Each case runs against a real gateway process over HTTP with real upload files: cancelled while
queued (DELETE settles it; nothing else ever would), cancelled while running (its worker deletes
them when it stops), cancelled after its worker died (the lease has expired, so DELETE settles
it at once), and given up after its worker died with no attempts left (the next claim settles
it and hands it to the store's `on_abandoned`). The running cases use the gateway whose workers run
the orchestrator stand-in (tests/unit/gateway/standin_gateway.py, STANDIN_BLOCK=1: each job
waits before animating until it is cancelled).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.reliability.conftest import free_port, needs_ffmpeg, start_gateway
from tests.service_process import REPO_ROOT
from tests.unit.gateway.gateway_harness import png_bytes, wait_for

pytestmark = needs_ffmpeg


def _files(hero_bytes: bytes) -> dict:
    return {
        "source": ("me.png", png_bytes(), "image/png"),
        "driving": ("hero.mp4", hero_bytes, "video/mp4"),
    }


def _uploads(data: Path, job_id: str) -> list[str]:
    folder = data / "uploads" / job_id
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture
def queue_only(tmp_path) -> Iterator[tuple[str, Path]]:
    data = tmp_path / "data"
    process, base = start_gateway(data, {"GATEWAY_WORKERS": "0", "MAX_SECONDS": "10"})
    try:
        yield base, data
    finally:
        try:
            process.terminate(30)
        finally:
            process.kill()


def test_cancel_while_queued_deletes_the_uploads(queue_only, hero_bytes) -> None:
    base, data = queue_only
    with httpx.Client(base_url=base, timeout=60) as client:
        kept = client.post("/v1/jobs", files=_files(hero_bytes)).json()["id"]
        job_id = client.post("/v1/jobs", files=_files(hero_bytes)).json()["id"]
        assert _uploads(data, job_id) == _uploads(data, kept) == ["driving.mp4", "source.png"]
        reply = client.delete(f"/v1/jobs/{job_id}")
        assert reply.status_code == 200 and reply.json()["status"] == "cancelled"
        assert not (data / "uploads" / job_id).exists()
        # Cancelling again is harmless; the other job's files are untouched.
        assert client.delete(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
        assert _uploads(data, kept) == ["driving.mp4", "source.png"]


def _start_standin(data: Path, port: int, workers: int, **extra: str) -> subprocess.Popen:
    env = dict(
        os.environ,
        GATEWAY_PORT=str(port),
        GATEWAY_AUTH_MODE="none",
        GATEWAY_DATA_DIR=str(data),
        GATEWAY_WORKERS=str(workers),
        JOB_LEASE_S="2",
        JOB_HEARTBEAT_S="0.3",
        JOB_POLL_S="0.1",
        STANDIN_BLOCK="1",
        MAX_SECONDS="10",
        **extra,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.unit.gateway.standin_gateway"],
        cwd=REPO_ROOT,
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


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _status(client: httpx.Client, job_id: str) -> str:
    return client.get(f"/v1/jobs/{job_id}").json()["status"]


def test_cancel_while_running_deletes_the_uploads_when_the_worker_stops(
    tmp_path, hero_bytes
) -> None:
    data, port = tmp_path / "data", free_port()
    proc = _start_standin(data, port, workers=1)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            job_id = client.post("/v1/jobs", files=_files(hero_bytes)).json()["id"]
            wait_for(lambda: _status(client, job_id) == "running", timeout=30)
            assert _uploads(data, job_id) == ["driving.mp4", "source.png"]
            assert client.delete(f"/v1/jobs/{job_id}").status_code == 200
            wait_for(lambda: _status(client, job_id) == "cancelled", timeout=30)
            wait_for(lambda: not (data / "uploads" / job_id).exists(), timeout=10)
    finally:
        _stop(proc)


def test_cancel_after_the_worker_died_deletes_the_uploads(tmp_path, hero_bytes) -> None:
    data, port = tmp_path / "data", free_port()
    proc = _start_standin(data, port, workers=1)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            job_id = client.post("/v1/jobs", files=_files(hero_bytes)).json()["id"]
            wait_for(lambda: _status(client, job_id) == "running", timeout=30)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    time.sleep(2.5)  # JOB_LEASE_S=2: the dead worker's lease has expired
    # The same data folder and database, served again without workers.
    process, base = start_gateway(data, {"GATEWAY_WORKERS": "0", "MAX_SECONDS": "10"})
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            assert _status(client, job_id) == "running"
            assert _uploads(data, job_id) == ["driving.mp4", "source.png"]
            reply = client.delete(f"/v1/jobs/{job_id}")
            assert reply.status_code == 200 and reply.json()["status"] == "cancelled"
            assert not (data / "uploads" / job_id).exists()
    finally:
        try:
            process.terminate(30)
        finally:
            process.kill()


def test_a_job_given_up_after_its_worker_died_loses_its_uploads(tmp_path, hero_bytes) -> None:
    data, port = tmp_path / "data", free_port()
    base = f"http://127.0.0.1:{port}"
    first = _start_standin(data, port, workers=1, JOB_MAX_ATTEMPTS="1")
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            job_id = client.post("/v1/jobs", files=_files(hero_bytes)).json()["id"]
            wait_for(lambda: _status(client, job_id) == "running", timeout=30)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    assert _uploads(data, job_id) == ["driving.mp4", "source.png"]
    # A replica with workers finds the expired lease of a job with no attempts left.
    second = _start_standin(data, port, workers=1, JOB_MAX_ATTEMPTS="1")
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            wait_for(lambda: _status(client, job_id) == "failed", timeout=30)
            assert client.get(f"/v1/jobs/{job_id}").json()["error"]["code"] == "worker_lost"
            wait_for(lambda: not (data / "uploads" / job_id).exists(), timeout=10)
    finally:
        _stop(second)
