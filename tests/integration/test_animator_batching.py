"""Cross-job batching over a real gRPC server: concurrent Animate calls equal solo calls,
device seconds are reported, and calls past ANIMATOR_MAX_JOBS get RESOURCE_EXHAUSTED."""

from __future__ import annotations

import queue
import threading
import time

import grpc
import numpy as np
import pytest
from dynamics.v1 import animator_pb2, animator_pb2_grpc, common_pb2

from services.animator import templates
from services.animator.pipeline import AnimatorPipeline
from services.animator.servicer import SERVICE_NAME, AnimatorServicer, add_to_server
from services.common.errors import REASON_METADATA_KEY
from services.common.grpc_client import make_channel
from services.common.grpc_server import GrpcService
from services.common.media import array_to_raw, raw_to_array
from tests.fixture_set import primary_set

RATIOS = common_pb2.FaceRatios(eye_left=0.3, eye_right=0.28, lip=0.05)


@pytest.fixture(scope="module")
def served(lp_primary):
    pipe = AnimatorPipeline.from_weights(
        lp_primary.checkpoints, input_size=lp_primary.image_size, batch_size=4
    )
    servicer = AnimatorServicer(pipe, max_frames=50, queue_frames=4, max_jobs=2, max_wait_ms=20.0)
    service = GrpcService(
        name="animator-batching",
        service_names=[SERVICE_NAME],
        register=lambda server: add_to_server(servicer, server),
        port=0,
        metrics_port=None,
        grace_s=5.0,
        max_workers=4,
    )
    port = service.start()
    service.set_serving()
    channel = make_channel(f"127.0.0.1:{port}")
    yield animator_pb2_grpc.AnimatorServiceStub(channel), servicer
    channel.close()
    service.stop(0)
    servicer.close()


def _requests(seed: int, frames) -> list[animator_pb2.AnimateRequest]:
    side = primary_set().crop_dsize
    source = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    setup = animator_pb2.AnimateSetup(
        source_crop=array_to_raw(source),
        source_ratios=RATIOS,
        total_frames=len(frames),
        job_id=f"job{seed}",
    )
    return [animator_pb2.AnimateRequest(setup=setup)] + [
        animator_pb2.AnimateRequest(motion=templates.frame_to_proto(f)) for f in frames
    ]


@pytest.fixture(scope="module")
def frames(lp_primary):
    tpl = templates.load_pickle_template(lp_primary.path / "template_3f.pkl")
    return tpl.frames + tpl.frames[:2]


def test_concurrent_calls_equal_solo_calls(served, frames):
    stub = served[0]
    solo = {s: list(stub.Animate(iter(_requests(s, frames)), timeout=60)) for s in (1, 2)}
    both: dict[int, list] = {}
    threads = [
        threading.Thread(
            target=lambda s=s: both.__setitem__(
                s, list(stub.Animate(iter(_requests(s, frames)), timeout=60))
            )
        )
        for s in (1, 2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for s in (1, 2):
        assert [r.frame.index for r in both[s]] == list(range(len(frames)))
        for a, b in zip(solo[s], both[s], strict=True):
            diff = raw_to_array(a.frame.image).astype(int) - raw_to_array(b.frame.image)
            assert np.abs(diff).max() <= 1
        seconds = [r.device_seconds for r in both[s]]
        assert seconds[0] > 0 and seconds == sorted(seconds)  # cumulative per call


def test_third_call_is_resource_exhausted(served, frames):
    stub, servicer = served
    held = [queue.Queue(), queue.Queue()]
    setups = [_requests(10 + i, frames)[0] for i in range(2)]

    def blocking(i):  # the setup, then nothing until released: the call stays open
        yield setups[i]
        held[i].get()

    calls = [stub.Animate(blocking(i), timeout=60) for i in range(2)]
    try:
        deadline = time.monotonic() + 30
        while servicer.batcher.open_jobs() < 2 and time.monotonic() < deadline:
            time.sleep(0.02)  # both calls admitted and held open
        assert servicer.batcher.open_jobs() == 2
        with pytest.raises(grpc.RpcError) as info:
            list(stub.Animate(iter(_requests(3, frames)), timeout=30))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        reasons = dict(info.value.trailing_metadata() or ())
        assert reasons.get(REASON_METADATA_KEY) == "animator_busy"
    finally:
        for q in held:
            q.put(None)
        for call in calls:
            call.cancel()
    deadline = time.monotonic() + 10
    while servicer.batcher.open_jobs() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert servicer.batcher.open_jobs() == 0  # cancelled calls give their slots back
