"""Any of the three services killed mid-job: the job fails fast as retryable (the worker requeues
it), names the service, leaves no partial MP4, and never hangs."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from services.cli.demo_media import write_hero_clip, write_source_photo
from services.cli.local_stack import LocalStack, StackConfig
from services.gateway.domain import JobFailed, JobSpec, MediaInput
from services.gateway.net.fetch import MediaFetcher
from services.gateway.pipeline.clients import ServiceClients
from services.gateway.pipeline.motion_cache import NullMotionCache
from services.gateway.pipeline.orchestrator import Orchestrator
from tests.fixture_set import DEFAULT_SET

pytestmark = [
    pytest.mark.ffmpeg,
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg"),
]

FIXTURE_WEIGHTS = DEFAULT_SET.checkpoints  # the services run on the default fixture set


@pytest.mark.parametrize(
    ("victim", "stage", "frames", "name"),
    [
        ("face_detect", "detect", 0, "face detection"),
        ("animator", "animate", 2, "animator"),
        ("encoder", "animate", 2, "encoder"),
    ],
)
def test_service_killed_mid_job_fails_retryable(
    victim: str, stage: str, frames: int, name: str, tmp_path: Path
) -> None:
    source = write_source_photo(tmp_path / "source.png", side=224)
    hero = write_hero_clip(tmp_path / "hero.mp4", seconds=4.0, fps=5, size=192)
    stack = LocalStack(
        StackConfig(
            weights_dir=FIXTURE_WEIGHTS,
            animator_device="cpu",
            env={**os.environ, "ANIMATOR_BATCH_SIZE": "2"},
        )
    )
    stack.start()
    try:
        proc = stack.services[victim].proc
        with ServiceClients(stack.targets) as clients:
            orchestrator = Orchestrator(clients, NullMotionCache(), MediaFetcher())

            def kill_when_generating(update) -> None:
                if update.stage == stage and update.frames_done >= frames and proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)

            spec = JobSpec(
                job_id="fault",
                source=MediaInput(path=source),
                driving=MediaInput(path=hero),
                seconds=4.0,
            )
            started = time.monotonic()
            with pytest.raises(JobFailed) as err:
                orchestrator.run(
                    spec,
                    tmp_path / "work",
                    on_progress=kill_when_generating,
                    cancel=threading.Event(),
                )
            assert time.monotonic() - started < 60
        assert err.value.retryable, err.value
        assert err.value.code == "service_unavailable" and name in err.value.message
        assert not (tmp_path / "work" / "result.mp4").exists()
    finally:
        codes = stack.stop()
    assert codes.pop(victim) == -signal.SIGKILL
    assert set(codes.values()) == {0}
