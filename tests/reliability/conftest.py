"""Reliability fixtures: real services and a real gateway as subprocesses on loopback.

The corpus tests share one face_detect, one animator, one encoder and one intake-only gateway
(no workers: accepted jobs stay queued) for the whole session, and check afterwards that each
still answers its health check.
"""

from __future__ import annotations

import shutil
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.common.grpc_client import check_health, make_channel
from tests.service_process import ServiceProcess, start_service
from tests.unit.gateway.gateway_harness import make_video

FIXTURE_WEIGHTS = Path(__file__).resolve().parents[1] / "fixtures" / "liveportrait" / "checkpoints"
FULL_NAMES = {
    "face_detect": "dynamics.v1.FaceDetectService",
    "animator": "dynamics.v1.AnimatorService",
    "encoder": "dynamics.v1.EncoderService",
}
SERVICE_ENVS = {
    "face_detect": {"FACE_DETECT_PORT": "0", "FACE_DETECT_METRICS_PORT": "0"},
    "animator": {"ANIMATOR_PORT": "0", "ANIMATOR_METRICS_PORT": "0",
                 "ANIMATOR_WEIGHTS_DIR": str(FIXTURE_WEIGHTS), "ANIMATOR_DEVICE": "cpu",
                 "ANIMATOR_BATCH_SIZE": "2"},
    "encoder": {"ENCODER_PORT": "0", "ENCODER_METRICS_PORT": "0"},
}
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthy(service: ServiceProcess, name: str) -> str:
    channel = make_channel(service.target)
    try:
        return check_health(channel, FULL_NAMES[name], timeout_s=5.0)
    finally:
        channel.close()


@pytest.fixture(scope="session")
def grpc_services() -> Iterator[dict[str, ServiceProcess]]:
    """face_detect, animator and encoder started once, stopped with SIGTERM at the end."""
    started: dict[str, ServiceProcess] = {}
    try:
        for name, env in SERVICE_ENVS.items():
            started[name] = start_service(name, env)
        deadline = time.monotonic() + 120
        for name, service in started.items():
            while healthy(service, name) != "SERVING":
                assert time.monotonic() < deadline, f"{name} never became SERVING"
                time.sleep(0.2)
        yield started
    finally:
        for service in started.values():
            try:
                service.terminate(30)
            finally:
                service.kill()


def start_gateway(data_dir: Path, env: dict[str, str]) -> tuple[ServiceProcess, str]:
    """A `python -m services.gateway` subprocess; returns it and its base URL once /healthz is up."""
    port = free_port()
    closed = f"127.0.0.1:{free_port()}"
    full = {"GATEWAY_PORT": str(port), "GATEWAY_DATA_DIR": str(data_dir),
            "GATEWAY_AUTH_MODE": "none", "FACE_DETECT_ADDR": closed, "ANIMATOR_ADDR": closed,
            "ENCODER_ADDR": closed, **env}
    gateway = start_service("gateway", full, known_port=port)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2) as reply:
                if reply.status == 200:
                    return gateway, base
        except OSError:
            if gateway.proc.poll() is not None or time.monotonic() > deadline:
                gateway.kill()
                raise RuntimeError("gateway did not start:\n" + "\n".join(gateway.lines[-30:]))
            time.sleep(0.2)


@pytest.fixture(scope="session")
def intake_gateway(tmp_path_factory) -> Iterator[tuple[ServiceProcess, str]]:
    """A real gateway that validates and queues jobs but runs none (GATEWAY_WORKERS=0)."""
    data = tmp_path_factory.mktemp("intake-gateway")
    gateway, base = start_gateway(data, {
        "GATEWAY_WORKERS": "0", "RATE_LIMIT_JOBS": "100000", "MAX_ACTIVE_JOBS": "100000",
        "MAX_IMAGE_BYTES": str(2 * 1024 * 1024), "MAX_VIDEO_BYTES": str(8 * 1024 * 1024),
        "MAX_SECONDS": "10"})
    try:
        yield gateway, base
    finally:
        try:
            gateway.terminate(30)
        finally:
            gateway.kill()


@pytest.fixture(scope="session")
def rest(intake_gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=intake_gateway[1], timeout=60) as client:
        yield client


@pytest.fixture(scope="session")
def hero_bytes(tmp_path_factory) -> bytes:
    return make_video(tmp_path_factory.mktemp("hero") / "hero.mp4").read_bytes()


def assert_rest_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    """The gateway's error shape: {"error": {"code", "message"}} with the expected status."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["message"], body
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]
