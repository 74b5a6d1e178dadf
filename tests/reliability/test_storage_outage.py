"""Result storage unavailable while a job runs (the gateway stores results in Firebase Storage,
here gcp-storage-emulator, stopped mid-job and started again): the upload is retried with
growing delays, the job succeeds once storage is back, and its result is readable."""

from __future__ import annotations

import json
import re
import time

import pytest
from gcp_storage_emulator import server as emulator_server

from tests.reliability.conftest import free_port, needs_ffmpeg
from tests.reliability.fault_stack import FaultStack, GatewayRun, gateway_env
from tests.reliability.test_faults import media  # noqa: F401 - shared fixture

pytestmark = [pytest.mark.ffmpeg, needs_ffmpeg]
BUCKET = "dynamics-reliability"
RUNS = [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)]


class Emulator:
    """gcp-storage-emulator on a fixed port, stoppable and restartable (empty after a restart)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server = None

    def start(self) -> None:
        self.server = emulator_server.create_server(
            "127.0.0.1", self.port, in_memory=True, default_bucket=BUCKET
        )
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture(scope="module")
def storage_stack(tmp_path_factory):
    emulator = Emulator()
    emulator.start()
    stack = FaultStack().start()
    gateway = GatewayRun(
        tmp_path_factory.mktemp("storage-gw"),
        gateway_env(
            stack,
            STORAGE_BACKEND="firebase",
            STORAGE_BUCKET=BUCKET,
            FIREBASE_PROJECT_ID="dynamics-test",
            FIREBASE_CREDENTIALS="anonymous",
            STORAGE_EMULATOR_HOST=f"http://127.0.0.1:{emulator.port}",
        ),
    ).start()
    yield emulator, gateway
    gateway.stop()
    stack.stop()
    emulator.stop()


def _retry_delays(lines: list[str]) -> list[float]:
    delays = []
    for line in lines:
        try:
            message = json.loads(line).get("message", "")
        except ValueError:
            continue
        match = re.search(r"retrying in ([\d.]+)s", message)
        if match:
            delays.append(float(match.group(1)))
    return delays


@pytest.mark.parametrize("run", RUNS)
def test_storage_outage_is_retried_with_backoff(run: int, storage_stack, media) -> None:  # noqa: F811
    emulator, gateway = storage_stack
    seen = len(_retry_delays(gateway.process.lines))
    job = gateway.submit(*media, seconds="2")
    gateway.wait_until(job, lambda v: v["frames_done"] >= 1, 60)
    emulator.stop()
    deadline = time.monotonic() + 60
    while len(_retry_delays(gateway.process.lines)) < seen + 2:
        assert time.monotonic() < deadline, "no storage retry was logged"
        time.sleep(0.05)
    emulator.start()
    view = gateway.wait_final(job, timeout=120)
    assert view["status"] == "succeeded", view
    delays = _retry_delays(gateway.process.lines)[seen:]
    assert delays[:2] == sorted(delays[:2]) and delays[1] > delays[0], delays
    result = gateway.client.get(f"/v1/jobs/{job}/result", follow_redirects=False)
    assert result.status_code in (200, 307), result.text
