"""Batched generation equals frame-by-frame generation (SPEC §11), and job-state rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from services.animator import motion, templates
from services.animator.motion_types import DrivingBatch, MotionOptions
from services.animator.pipeline import AnimatorPipeline, Ratios
from services.common.errors import InvalidInputError

SOURCE_RATIOS = Ratios(0.31, 0.29, 0.08)


@pytest.fixture(scope="module")
def pipe(lp_primary) -> AnimatorPipeline:
    return AnimatorPipeline.from_weights(
        lp_primary.checkpoints, input_size=lp_primary.image_size, batch_size=1
    )


@pytest.fixture(scope="module")
def source_crop(lp_primary) -> np.ndarray:
    rng = np.random.default_rng(7)
    side = lp_primary.crop_dsize
    return rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def frames(lp_primary):
    tpl = templates.load_pickle_template(lp_primary.path / "template_3f.pkl")
    # 5 frames: the 3 template frames and two more with shifted expressions
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
    return tpl.frames + extra


def run(pipe, crop, frames, batch_size, options):
    pipe.batch_size = batch_size
    state = pipe.prepare_source(crop, SOURCE_RATIOS, options)
    outs = [
        pipe.run_batch(state, frames[lo : lo + batch_size], lo)
        for lo in range(0, len(frames), batch_size)
    ]
    images = np.concatenate([o.images for o in outs])
    return images, torch.cat([o.x_d for o in outs]), torch.cat([o.image for o in outs])


OPTIONS = [
    MotionOptions(),
    MotionOptions(expression_friendly=False, normalize_lip=True, driving_multiplier=1.25),
    MotionOptions(relative=False, eye_retargeting=True, lip_retargeting=True, region="exp"),
    MotionOptions(region="lip", stitching=False),
]


def test_frames_batch_equals_single(pipe, source_crop, frames):
    """W + G on 5 frames at once equals 5 single-frame runs (keypoints, floats, uint8)."""
    ref_images, ref_x_d, ref_float = run(pipe, source_crop, frames, 1, MotionOptions())
    images, x_d, image = run(pipe, source_crop, frames, 5, MotionOptions())
    torch.testing.assert_close(x_d, ref_x_d, rtol=0, atol=1e-6)
    torch.testing.assert_close(image, ref_float, rtol=0, atol=1e-5)
    diff = np.abs(images.astype(np.int16) - ref_images.astype(np.int16))
    assert diff.max() <= 1 and diff.mean() < 0.01
    assert len({img.tobytes() for img in ref_images}) == len(frames)  # frames really differ


@pytest.mark.parametrize("options", OPTIONS, ids=["default", "lipnorm_mult", "abs_retarget", "lip"])
def test_keypoints_batch_equals_single(pipe, source_crop, frames, options):
    """The motion recipe of frame i needs only frame 0 and frame i, whatever the batching."""
    state = pipe.prepare_source(source_crop, SOURCE_RATIOS, options)
    drv = DrivingBatch.from_frames(frames)
    ref = motion.make_reference(state.motion, drv.head(1), options)

    def recipe(batch: DrivingBatch) -> torch.Tensor:
        x_d = motion.driving_keypoints(state.motion, batch, ref, options)
        x_d = motion.apply_expression_friendly(x_d, state.motion, ref, options)
        return motion.stitch_and_retarget(
            x_d, state.motion, batch, options, pipe.retargeters, lip_delta=state.lip_delta
        )

    whole = recipe(drv)
    single = torch.cat([recipe(DrivingBatch.from_frames([f])) for f in frames])
    torch.testing.assert_close(whole, single, rtol=0, atol=1e-6)
    assert float((whole[1:] - whole[:1]).abs().max()) > 1e-3  # motion really differs per frame


def test_generate_streams_in_order_across_chunks(pipe, source_crop, frames):
    pipe.batch_size = 2
    state = pipe.prepare_source(source_crop, SOURCE_RATIOS, MotionOptions())
    streamed = list(pipe.generate(state, frames[:3]))
    streamed += list(pipe.generate(state, frames[3:]))  # continues at state.frames_done
    pipe.batch_size = 5
    whole = pipe.run_batch(
        pipe.prepare_source(source_crop, SOURCE_RATIOS, MotionOptions()), frames, 0
    ).images
    assert len(streamed) == len(frames)
    for a, b in zip(streamed, whole, strict=True):
        assert np.abs(a.astype(np.int16) - b.astype(np.int16)).max() <= 1


def test_first_batch_must_start_at_frame_zero(pipe, source_crop, frames):
    state = pipe.prepare_source(source_crop, SOURCE_RATIOS, MotionOptions())
    with pytest.raises(InvalidInputError, match="frame 0"):
        pipe.run_batch(state, frames[1:2], 1)
    with pytest.raises(InvalidInputError):
        pipe.run_batch(state, [], 0)


def test_bad_crop_is_rejected(pipe):
    side = pipe.input_size  # the right size, the wrong type or layout
    with pytest.raises(InvalidInputError, match="uint8"):
        pipe.prepare_source(np.zeros((side, side, 3), dtype=np.float32), SOURCE_RATIOS)
    with pytest.raises(InvalidInputError):
        pipe.prepare_source(np.zeros((side, side), dtype=np.uint8), SOURCE_RATIOS)
