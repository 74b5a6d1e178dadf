"""Session fixture for the observability tests: the three gRPC services (`LocalStack`, fixture
weights) and the gateway (no auth) running on loopback."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from services.cli.local_stack import LocalStack, StackConfig
from tests.observability.stack import (
    FIXTURE_WEIGHTS,
    RunningStack,
    demo_media,
    free_port,
    wait_ready,
)
from tests.service_process import start_service


@pytest.fixture(scope="session")
def running_stack(tmp_path_factory) -> Iterator[RunningStack]:
    """face_detect + animator + encoder + gateway on loopback, stopped at the end."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is missing (the setup script installs the Debian package)")
    root = tmp_path_factory.mktemp("stack")
    media = demo_media(root / "media")
    stack = LocalStack(
        StackConfig(
            weights_dir=FIXTURE_WEIGHTS, animator_batch_size=4, grace_s=5.0, log_dir=root / "logs"
        )
    )
    targets = stack.start()
    gateway = None
    try:
        port = free_port()
        env = {
            "GATEWAY_PORT": str(port),
            "GATEWAY_DATA_DIR": str(root / "gateway"),
            "GATEWAY_AUTH_MODE": "none",
            "FACE_DETECT_ADDR": targets.face_detect,
            "ANIMATOR_ADDR": targets.animator,
            "ENCODER_ADDR": targets.encoder,
        }
        gateway = start_service("gateway", env, known_port=port)
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, gateway)
        metrics = {
            name: f"http://127.0.0.1:{svc.metrics_port}/metrics"
            for name, svc in stack.services.items()
        }
        metrics["gateway"] = f"{url}/metrics"
        yield RunningStack(metrics_urls=metrics, gateway_url=url, media_dir=media)
    finally:
        if gateway is not None:
            gateway.terminate(30)
            gateway.kill()
        stack.stop()
