"""AnimatorPipeline behaviour beyond parity: random-weight labelling, warm-up, motion extraction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from services.animator import pipeline as pipeline_module
from services.animator.motion_types import MotionOptions
from services.animator.pipeline import AnimatorPipeline, Ratios
from services.animator.random_weights import write_random_weights


@pytest.fixture(scope="module")
def random_pipe(tmp_path_factory, lp_primary) -> AnimatorPipeline:
    """Seeded random weights of the primary fixture set's architecture, fed its image size."""
    folder = write_random_weights(
        tmp_path_factory.mktemp("weights"), config=lp_primary.checkpoints / "models.yaml", seed=3
    )
    return AnimatorPipeline.from_weights(folder, input_size=lp_primary.image_size, batch_size=2)


def test_random_weights_are_labelled(random_pipe, lp_primary):
    assert random_pipe.provenance == "random" and random_pipe.random_weights
    crop = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    state = random_pipe.prepare_source(crop, Ratios(0.3, 0.3, 0.1))
    frames = random_pipe.extract_motion([crop, crop[::-1]], [Ratios(0.3, 0.3, 0.1)] * 2)
    out = random_pipe.run_batch(state, frames, 0)
    side = lp_primary.output_size
    assert out.random_weights and out.images.shape == (2, side, side, 3)


def test_fixture_weights_are_not_labelled_random(lp_primary):
    pipe = AnimatorPipeline.from_weights(lp_primary.checkpoints, input_size=lp_primary.image_size)
    assert not pipe.random_weights


def test_warm_up_renders_one_frame_of_a_grey_source_driven_by_itself(
    random_pipe, lp_primary, monkeypatch
):
    """warm_up runs the whole recipe once on CPU: one frame at the output size, and it is the
    frame a plain render gives for a mid-grey crop at the input size driving itself."""
    rendered = []
    run_batch = random_pipe.run_batch

    def spy(state, motions, start_index):
        rendered.append(run_batch(state, motions, start_index))
        return rendered[-1]

    monkeypatch.setattr(random_pipe, "run_batch", spy)
    seconds = random_pipe.warm_up()
    monkeypatch.undo()
    assert len(rendered) == 1, "warm-up rendered no frame, or more than one batch"
    out, side = rendered[0], lp_primary.output_size
    assert out.indices == [0] and out.images.shape == (1, side, side, 3)
    assert out.images.dtype == np.uint8 and torch.isfinite(out.image).all()
    assert out.images.min() < out.images.max()  # a generated picture, not a blank buffer
    assert seconds >= out.seconds > 0
    size, ratios = random_pipe.input_size, Ratios(0.3, 0.3, 0.1)
    grey = np.full((size, size, 3), 128, np.uint8)
    expected = random_pipe.run_batch(
        random_pipe.prepare_source(grey, ratios), random_pipe.extract_motion([grey], [ratios]), 0
    )
    np.testing.assert_array_equal(out.images, expected.images)
    torch.testing.assert_close(out.x_d, expected.x_d, rtol=0, atol=0)


def test_extract_motion_matches_kp_info(random_pipe):
    size = random_pipe.input_size
    crops = [
        np.random.default_rng(i).integers(0, 256, (size, size, 3), dtype=np.uint8) for i in range(3)
    ]
    frames = random_pipe.extract_motion(crops, [Ratios(0.1 * i, 0.2, 0.05) for i in range(3)], 10)
    info = random_pipe.kp_info(random_pipe.prepare_images(crops))
    rot = info.rotation()
    for i, frame in enumerate(frames):
        assert frame.index == 10 + i and frame.eye_ratio == (pytest.approx(0.1 * i), 0.2)
        np.testing.assert_allclose(frame.rotation, rot[i].numpy(), atol=1e-5)
        np.testing.assert_allclose(frame.expression, info.exp[i].numpy(), atol=1e-5)  # batch 2 vs 3
        assert frame.scale == pytest.approx(float(info.scale[i, 0]))


def _rebuild(pipe, **kwargs):
    return AnimatorPipeline(
        F=pipe.F,
        M=pipe.M,
        W=pipe.W,
        G=pipe.G,
        stitching=pipe.stitching,
        lip=pipe.lip,
        eye=pipe.eye,
        input_size=pipe.input_size,
        **kwargs,
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusals")
def test_cpu_autocast_is_bf16_only_and_needs_native_bf16(random_pipe, monkeypatch):
    with pytest.raises(ValueError, match="CUDA"):
        _rebuild(random_pipe, autocast_dtype=torch.float16)
    monkeypatch.setattr(pipeline_module, "cpu_has_bf16", lambda: False)
    with pytest.raises(ValueError, match="AVX512-BF16 or AMX"):
        _rebuild(random_pipe, autocast_dtype=torch.bfloat16)


def test_driving_image_uses_single_frame(random_pipe):
    size = random_pipe.input_size
    crop = np.random.default_rng(5).integers(0, 256, (size, size, 3), dtype=np.uint8)
    frames = random_pipe.extract_motion([crop], [Ratios(0.3, 0.3, 0.1)])
    video = random_pipe.prepare_source(crop, Ratios(0.3, 0.3, 0.1), MotionOptions())
    image = random_pipe.prepare_source(
        crop, Ratios(0.3, 0.3, 0.1), MotionOptions(driving_image=True)
    )
    a = random_pipe.run_batch(video, frames, 0).x_d
    b = random_pipe.run_batch(image, frames, 0).x_d
    assert float((a - b).abs().max()) > 1e-6  # neutral lip array L instead of frame 0


def test_half_weights_need_cuda(lp_primary):
    if torch.cuda.is_available():
        pytest.skip("checks the CPU refusal")
    with pytest.raises(ValueError, match="CUDA"):
        AnimatorPipeline.from_weights(lp_primary.checkpoints, dtype=torch.float16)


def test_held_seconds_count_holding_the_device_not_waiting_for_it(random_pipe):
    """Busy-time metrics use `held_seconds`: a job queued behind another's batch must not count
    the other job's device time as its own (table 6 once showed the animator 105 % busy)."""
    import threading
    import time

    holding = threading.Event()

    def long_batch():
        with random_pipe.on_device():
            holding.set()
            time.sleep(0.4)

    other = threading.Thread(target=long_batch)
    other.start()
    holding.wait(5)
    before = random_pipe.held_seconds()
    t0 = time.perf_counter()
    with random_pipe.on_device():  # waits ~0.4 s for the other thread, then holds ~0.05 s
        time.sleep(0.05)
    waited_and_held = time.perf_counter() - t0
    other.join()
    held = random_pipe.held_seconds() - before
    assert waited_and_held >= 0.3
    assert 0.04 <= held < 0.2
