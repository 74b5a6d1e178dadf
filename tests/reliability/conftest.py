"""Reliability fixtures: real services and a real gateway as subprocesses on loopback.

The corpus tests share one face_detect, one animator, one encoder and one intake-only gateway
(no workers: accepted jobs stay queued) for the whole session. When the session ends, before
stopping them, the fixtures check that each is still running, still answers (SERVING; the gateway
/healthz and /v1/jobs) and never logged a traceback; if not, the fixture's teardown fails, which
pytest reports as an error and a failed run.
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
from tests.fixture_set import DEFAULT_SET
from tests.service_process import ServiceProcess, start_service
from tests.unit.gateway.gateway_harness import make_video
from tests.unit.gateway.problem_shape import problem_of

FIXTURE_WEIGHTS = DEFAULT_SET.checkpoints
FULL_NAMES = {
    "face_detect": "dynamics.v1.FaceDetectService",
    "animator": "dynamics.v1.AnimatorService",
    "encoder": "dynamics.v1.EncoderService",
}
SERVICE_ENVS = {
    "face_detect": {"FACE_DETECT_PORT": "0", "FACE_DETECT_METRICS_PORT": "0"},
    "animator": {
        "ANIMATOR_PORT": "0",
        "ANIMATOR_METRICS_PORT": "0",
        "ANIMATOR_WEIGHTS_DIR": str(FIXTURE_WEIGHTS),
        "ANIMATOR_DEVICE": "cpu",
        "ANIMATOR_BATCH_SIZE": "2",
    },
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


def _log_problems(name: str, service: ServiceProcess) -> list[str]:
    """An exited process or a logged traceback, each with the log lines that show it."""
    problems = []
    if service.proc.poll() is not None:
        problems.append(
            f"{name} exited with code {service.proc.returncode}:\n" + "\n".join(service.lines[-20:])
        )
    crashes = [line for line in service.lines if "Traceback" in line]
    if crashes:
        problems.append(
            f"{name} logged {len(crashes)} traceback(s), the first:\n{crashes[0][:3000]}"
        )
    return problems


def grpc_survival_problems(services: dict[str, ServiceProcess]) -> list[str]:
    """What is wrong with the shared gRPC services after the tests: empty when all are fine."""
    problems = []
    for name, service in services.items():
        found = _log_problems(name, service)
        if service.proc.poll() is None:
            state = healthy(service, name)  # UNREACHABLE when it does not answer
            if state != "SERVING":
                found.append(f"{name} health check: {state}, not SERVING")
        problems += found
    return problems


def gateway_survival_problems(gateway: ServiceProcess, base: str) -> list[str]:
    """What is wrong with the shared intake gateway after the tests: empty when all is fine."""
    problems = _log_problems("gateway", gateway)
    if gateway.proc.poll() is None:
        try:
            with httpx.Client(base_url=base, timeout=30) as client:
                for path, params in (("/healthz", None), ("/v1/jobs", {"limit": 1})):
                    status = client.get(path, params=params).status_code
                    if status != 200:
                        problems.append(f"gateway GET {path}: {status}, not 200")
        except httpx.HTTPError as exc:
            problems.append(f"gateway does not answer: {type(exc).__name__}: {exc}")
    return problems


def fail_unless_survived(what: str, problems: list[str]) -> None:
    """Fail the fixture's teardown (pytest reports an error; the run fails) on any problem."""
    if problems:
        pytest.fail(
            f"{what} did not survive the session's tests:\n" + "\n\n".join(problems), pytrace=False
        )


@pytest.fixture(scope="session")
def grpc_services() -> Iterator[dict[str, ServiceProcess]]:
    """face_detect, animator and encoder started once, checked (`grpc_survival_problems`) and
    stopped with SIGTERM at the end."""
    started: dict[str, ServiceProcess] = {}
    problems: list[str] = []
    try:
        for name, env in SERVICE_ENVS.items():
            started[name] = start_service(name, env)
        deadline = time.monotonic() + 120
        for name, service in started.items():
            while healthy(service, name) != "SERVING":
                assert time.monotonic() < deadline, f"{name} never became SERVING"
                time.sleep(0.2)
        yield started
        problems = grpc_survival_problems(started)
    finally:
        for service in started.values():
            try:
                service.terminate(30)
            finally:
                service.kill()
    fail_unless_survived("the shared gRPC services", problems)


def start_gateway(data_dir: Path, env: dict[str, str]) -> tuple[ServiceProcess, str]:
    """A `python -m services.gateway` subprocess; returns it and its base URL once /healthz is up."""
    port = free_port()
    closed = f"127.0.0.1:{free_port()}"
    full = {
        "GATEWAY_PORT": str(port),
        "GATEWAY_DATA_DIR": str(data_dir),
        "GATEWAY_AUTH_MODE": "none",
        "FACE_DETECT_ADDR": closed,
        "ANIMATOR_ADDR": closed,
        "ENCODER_ADDR": closed,
        **env,
    }
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
    """A real gateway that validates and queues jobs but runs none (GATEWAY_WORKERS=0); checked
    (`gateway_survival_problems`) and stopped at the end."""
    data = tmp_path_factory.mktemp("intake-gateway")
    gateway, base = start_gateway(
        data,
        {
            "GATEWAY_WORKERS": "0",
            "RATE_LIMIT_JOBS": "100000",
            "MAX_ACTIVE_JOBS": "100000",
            "MAX_IMAGE_BYTES": str(2 * 1024 * 1024),
            "MAX_VIDEO_BYTES": str(8 * 1024 * 1024),
            "MAX_SECONDS": "10",
        },
    )
    problems: list[str] = []
    try:
        yield gateway, base
        problems = gateway_survival_problems(gateway, base)
    finally:
        try:
            gateway.terminate(30)
        finally:
            gateway.kill()
    fail_unless_survived("the shared intake gateway", problems)


@pytest.fixture(scope="session")
def rest(intake_gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=intake_gateway[1], timeout=60) as client:
        yield client


@pytest.fixture(scope="session")
def hero_bytes(tmp_path_factory) -> bytes:
    return make_video(tmp_path_factory.mktemp("hero") / "hero.mp4").read_bytes()


def assert_rest_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    """The gateway's error shape (an RFC 9457 problem document with a `code`) with the expected
    status; returns the problem."""
    return problem_of(response, status, code)
