"""The motion cache is keyed by the fingerprint of the model the animator loaded: one changed
tensor in one weight file is a cache miss on the next job, through the real services.

The animator is restarted on its port with the edited weights while the gateway's channel (and
the fingerprint it learnt through GetInfo) stays: what a gateway meets while animator replicas
roll to new weights. The old model's template is found under the old fingerprint, the new
animator refuses it, and the job runs from the driving video instead (a miss), storing a
template under the new fingerprint.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from dynamics.v1 import animator_pb2, animator_pb2_grpc

from services.cli.demo_media import write_hero_clip, write_source_photo
from services.cli.local_stack import LocalStack, StackConfig
from services.common.grpc_client import make_channel
from services.gateway.domain import JobSpec, MediaInput
from services.gateway.net.fetch import MediaFetcher
from services.gateway.pipeline.clients import ServiceClients
from services.gateway.pipeline.motion_cache import FolderMotionCache, decode_entry
from services.gateway.pipeline.orchestrator import Orchestrator
from tests.fixture_set import DEFAULT_SET

pytestmark = [
    pytest.mark.ffmpeg,
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg"),
]

FIXTURE_WEIGHTS = DEFAULT_SET.checkpoints  # the services run on the default fixture set
STACK_ENV = {"ANIMATOR_BATCH_SIZE": "2", "OMP_NUM_THREADS": "1"}
FPS, SECONDS = 5, 1.0


def _rewrite_one_tensor(path: Path) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    key = next(k for k, v in state.items() if v.dtype.is_floating_point and v.abs().sum() > 0)
    state[key] = state[key] * 1.01
    torch.save(state, path)


def _fingerprint(target: str) -> str:
    channel = make_channel(target)
    try:
        stub = animator_pb2_grpc.AnimatorServiceStub(channel)
        return stub.GetInfo(animator_pb2.GetInfoRequest(), timeout=30).model_fingerprint
    finally:
        channel.close()


def _wait_until(check, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _stored(cache_dir: Path) -> dict[str, str]:
    """Cache entry file name -> the model fingerprint its template was made with."""
    return {
        path.name: decode_entry(path.read_bytes()).model_version
        for path in cache_dir.rglob("*.motion")
    }


def test_one_changed_weight_file_is_a_cache_miss_on_the_next_job(tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    shutil.copytree(FIXTURE_WEIGHTS, weights)
    source = write_source_photo(tmp_path / "source.png", side=224)
    hero = write_hero_clip(tmp_path / "hero.mp4", seconds=SECONDS, fps=FPS, size=192)
    cache_dir = tmp_path / "cache"
    stack = LocalStack(
        StackConfig(
            weights_dir=weights,
            env={**os.environ, **STACK_ENV},
            animator_device="cpu",
            log_dir=tmp_path / "logs",
            restart_backoff_s=0.2,
        )
    )
    stack.start()
    try:
        stack.supervise(poll_s=0.1)
        animator = stack.services["animator"]
        with ServiceClients(stack.targets) as clients:
            orchestrator = Orchestrator(clients, FolderMotionCache(cache_dir), MediaFetcher())

            def run(name: str):
                spec = JobSpec(
                    job_id=name,
                    source=MediaInput(path=source),
                    driving=MediaInput(path=hero),
                    seconds=SECONDS,
                )
                return orchestrator.run(
                    spec, tmp_path / name, on_progress=lambda _: None, cancel=threading.Event()
                )

            old = _fingerprint(animator.target)
            assert clients.animator_fingerprint() == old
            first, second = run("job1"), run("job2")
            assert not first.cache_hit and second.cache_hit
            assert list(_stored(cache_dir).values()) == [old]

            _rewrite_one_tensor(weights / "warping_module.pth")
            killed = animator.proc
            os.kill(killed.pid, signal.SIGKILL)
            _wait_until(lambda: animator.restarts == 1, 120, "the animator's restart")
            new = _fingerprint(animator.target)
            assert new != old

            third = run("job3")  # the gateway still holds the old fingerprint for this channel
            assert not third.cache_hit and third.frames == first.frames
            assert sorted(_stored(cache_dir).values()) == sorted([old, new])
            assert clients.animator_fingerprint() == new
            fourth = run("job4")
            assert fourth.cache_hit
            assert len(_stored(cache_dir)) == 2
    finally:
        stack.stop()
