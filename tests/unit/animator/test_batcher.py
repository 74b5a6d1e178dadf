"""Cross-job batching: shared W + G passes equal per-job results; bounded wait; capacity."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from services.animator import metrics, templates
from services.animator.batcher import CrossJobBatcher
from services.animator.motion_types import MotionOptions
from services.animator.pipeline import AnimatorPipeline, Ratios
from services.common.errors import ResourceExhaustedError

RATIOS = Ratios(0.31, 0.29, 0.08)
JOB_OPTIONS = [
    MotionOptions(),
    MotionOptions(expression_friendly=False, driving_multiplier=1.2),
    MotionOptions(relative=False, eye_retargeting=True, region="exp"),
]


@pytest.fixture(scope="module")
def pipe(lp_primary) -> AnimatorPipeline:
    return AnimatorPipeline.from_weights(
        lp_primary.checkpoints, input_size=lp_primary.image_size, batch_size=4
    )


@pytest.fixture(scope="module")
def frames(lp_primary):
    tpl = templates.load_pickle_template(lp_primary.path / "template_3f.pkl")
    extra = [
        templates.DrivingFrame(
            index=3 + i,
            scale=f.scale,
            rotation=f.rotation,
            expression=f.expression * (1.1 + 0.1 * i),
            translation=f.translation,
            eye_ratio=f.eye_ratio,
            lip_ratio=f.lip_ratio,
        )
        for i, f in enumerate(tpl.frames[1:])
    ]
    return tpl.frames + extra  # 5 frames


def crops(n: int, side: int = 64) -> list[np.ndarray]:
    """Random source crops (any side: the pipeline resizes them to its input size)."""
    rng = np.random.default_rng(11)
    return [rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8) for _ in range(n)]


def solo(pipe, crop, options, frames, size):
    """The same job alone, through `run_batch`, `size` frames at a time."""
    state = pipe.prepare_source(crop, RATIOS, options)
    outs = [pipe.run_batch(state, frames[lo : lo + size], lo) for lo in range(0, len(frames), size)]
    return np.concatenate([o.images for o in outs]), torch.cat([o.image for o in outs])


def test_cross_job_batches_equal_per_job_results(pipe, frames):
    """Three jobs submitting 2 frames at a time share batches of up to 8 frames; each job's
    frames equal the job run alone (fp32, CPU) and come back in order."""
    batcher = CrossJobBatcher(pipe, max_batch=8, max_wait_s=0.5, max_jobs=3).start()
    results: dict[int, list] = {}
    before = metrics.BATCH_SIZE._sum.get()
    slots = [batcher.open_job(f"job{j}") for j in range(3)]
    for slot, crop, options in zip(slots, crops(3), JOB_OPTIONS, strict=True):
        slot.state = pipe.prepare_source(crop, RATIOS, options)

    def job(j: int) -> None:
        outs = [
            batcher.submit(slots[j], frames[lo : lo + 2], lo).result(timeout=60)
            for lo in range(0, len(frames), 2)
        ]
        results[j] = outs

    threads = [threading.Thread(target=job, args=(j,)) for j in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    batcher.stop()
    for j, (crop, options) in enumerate(zip(crops(3), JOB_OPTIONS, strict=True)):
        ref_images, ref_float = solo(pipe, crop, options, frames, 1)
        outs = results[j]
        assert [i for o in outs for i in o.indices] == list(range(len(frames)))
        torch.testing.assert_close(torch.cat([o.image for o in outs]), ref_float, rtol=0, atol=1e-5)
        images = np.concatenate([o.images for o in outs]).astype(int)
        assert np.abs(images - ref_images).max() <= 1
        assert slots[j].frames == len(frames) and slots[j].device_seconds > 0
    assert metrics.BATCH_SIZE._sum.get() - before == 3 * len(frames)


def test_batches_span_jobs(pipe, frames):
    """With every job's frames queued before the device thread runs, one batch carries frames
    of several jobs (observed in the batch-size histogram)."""
    batcher = CrossJobBatcher(pipe, max_batch=8, max_wait_s=0.0, max_jobs=4)
    slots = [batcher.open_job(f"j{j}") for j in range(4)]
    futures = []
    for slot, crop in zip(slots, crops(4), strict=True):
        slot.state = pipe.prepare_source(crop, RATIOS, MotionOptions())
        futures.append(batcher.submit(slot, frames[:2], 0))
    count_before = metrics.BATCH_SIZE._sum.get()
    batcher.start()
    outs = [f.result(timeout=60) for f in futures]
    batcher.stop()
    assert metrics.BATCH_SIZE._sum.get() - count_before == 8
    assert all(o.indices == [0, 1] for o in outs)
    assert len({round(o.seconds, 9) for o in outs}) == 1  # one pass, cost split evenly


def test_wait_is_bounded(pipe, frames):
    """A lone request is not held longer than max_wait while another open job stays idle."""
    batcher = CrossJobBatcher(pipe, max_batch=8, max_wait_s=0.2, max_jobs=2).start()
    busy, idle = batcher.open_job("busy"), batcher.open_job("idle")
    busy.state = pipe.prepare_source(crops(1)[0], RATIOS, MotionOptions())
    batcher.submit(busy, frames[:1], 0).result(timeout=60)  # warm
    t0 = time.perf_counter()
    out = batcher.submit(busy, frames[1:2], 1).result(timeout=60)
    waited = time.perf_counter() - t0 - out.seconds
    batcher.close_job(idle)
    t0 = time.perf_counter()
    out = batcher.submit(busy, frames[2:3], 2).result(timeout=60)
    alone = time.perf_counter() - t0 - out.seconds
    batcher.stop()
    assert 0.15 <= waited < 1.5, waited  # waited for the idle job, but only max_wait
    assert alone < 0.15, alone  # no other open job: no waiting at all


def test_resource_exhausted_past_capacity(pipe, frames):
    batcher = CrossJobBatcher(pipe, max_batch=2, max_jobs=2, max_queued_frames=3)
    first = batcher.open_job("a")
    batcher.open_job("b")
    with pytest.raises(ResourceExhaustedError) as info:
        batcher.open_job("c")
    assert info.value.reason == "animator_busy"
    first.state = pipe.prepare_source(crops(1)[0], RATIOS, MotionOptions())
    batcher.submit(first, frames[:2], 0)  # not started: stays queued
    with pytest.raises(ResourceExhaustedError):
        batcher.submit(first, frames[2:4], 2)
    batcher.close_job(first)
    batcher.open_job("c")  # a slot was freed
    batcher.stop()
