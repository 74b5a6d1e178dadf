"""Properties of the motion recipe that the fixtures do not pin down directly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from services.animator import motion, source_video
from services.animator.keypoints import rotation_matrix, transform_keypoints
from services.animator.motion_types import (
    NEUTRAL_LIP,
    DrivingBatch,
    MotionOptions,
    SourceMotion,
    region_mask,
)

K = 21


def _rot(b: int, seed: int) -> torch.Tensor:
    angles = torch.from_numpy(np.random.default_rng(seed).uniform(-20, 20, (b, 3))).float()
    return rotation_matrix(angles[:, 0], angles[:, 1], angles[:, 2])


def _source(n: int = 1, seed: int = 0) -> SourceMotion:
    g = torch.Generator().manual_seed(seed)
    kp, exp = torch.randn(n, K, 3, generator=g), 0.1 * torch.randn(n, K, 3, generator=g)
    scale, t = 1 + 0.1 * torch.rand(n, 1, generator=g), torch.randn(n, 3, generator=g)
    rot = _rot(n, seed)
    return SourceMotion(
        kp=kp,
        rot=rot,
        exp=exp,
        scale=scale,
        t=t,
        x_s=transform_keypoints(kp, rot, exp, scale, t),
        eye_ratio=torch.full((n, 2), 0.3),
        lip_ratio=torch.full((n, 1), 0.1),
    )


def _driving(b: int = 4, seed: int = 1) -> DrivingBatch:
    g = torch.Generator().manual_seed(seed)
    return DrivingBatch(
        rot=_rot(b, seed),
        exp=0.1 * torch.randn(b, K, 3, generator=g),
        scale=1 + 0.1 * torch.rand(b, 1, generator=g),
        t=torch.randn(b, 3, generator=g),
        eye_ratio=torch.full((b, 2), 0.25),
        lip_ratio=torch.full((b, 1), 0.2),
    )


def test_expression_friendly_maps_frame_zero_onto_source():
    src, drv, opts = _source(), _driving(), MotionOptions()
    ref = motion.make_reference(src, drv.head(1), opts)
    assert ref.multiplier is not None and ref.multiplier > 0
    x_d = motion.driving_keypoints(src, drv, ref, opts)
    x_d = motion.apply_expression_friendly(x_d, src, ref, opts)
    torch.testing.assert_close(x_d[0], src.x_s[0], rtol=0, atol=1e-6)
    assert float((x_d[1:] - src.x_s).abs().max()) > 1e-3


def test_pose_friendly_frame_zero_also_reproduces_source():
    src, drv, opts = _source(), _driving(), MotionOptions(expression_friendly=False)
    ref = motion.make_reference(src, drv.head(1), opts)
    assert ref.multiplier is None
    x_d = motion.driving_keypoints(src, drv, ref, opts)
    torch.testing.assert_close(x_d[0], src.x_s[0], rtol=0, atol=1e-5)  # relative: Δ = 0 at i = 0


@pytest.mark.parametrize("region", ["all", "exp", "lip", "eyes", "pose"])
def test_absolute_mode_takes_only_the_region_rows(region):
    src, drv = _source(), _driving()
    opts = MotionOptions(relative=False, region=region)
    ref = motion.make_reference(src, drv.head(1), opts)
    exp = motion.expression_target(src, drv, ref, opts)
    mask = torch.from_numpy(region_mask(region))
    torch.testing.assert_close(exp[:, ~mask], src.exp.expand_as(exp)[:, ~mask])
    torch.testing.assert_close(exp[:, mask], drv.exp[:, mask])
    if region in ("all", "exp"):
        assert not mask[[0, 7, 10]].any() and mask[3].tolist() == [False, True, False]
    rot = motion.rotation_target(src, drv, ref, opts)
    expected_rot = drv.rot if region in ("all", "pose") else src.rot.expand_as(drv.rot)
    torch.testing.assert_close(rot, expected_rot)


def test_driving_image_uses_neutral_lip_and_zero_for_eyes():
    src, drv = _source(), _driving(1)
    lip = torch.tensor(NEUTRAL_LIP, dtype=torch.float32)
    all_opts = MotionOptions(driving_image=True)
    ref = motion.make_reference(src, drv, all_opts)
    torch.testing.assert_close(
        motion.expression_target(src, drv, ref, all_opts), src.exp + (drv.exp - lip)
    )
    eye_opts = MotionOptions(driving_image=True, region="eyes")
    eyes = motion.expression_target(src, drv, ref, eye_opts)
    mask = torch.from_numpy(region_mask("eyes"))
    torch.testing.assert_close(eyes[:, mask], (src.exp + drv.exp)[:, mask])


def test_translation_z_is_always_zeroed():
    src, drv = _source(), _driving()
    for opts in (MotionOptions(), MotionOptions(relative=False), MotionOptions(region="exp")):
        ref = motion.make_reference(src, drv.head(1), opts)
        _, t = motion.scale_translation_target(src, drv, ref, opts)
        assert torch.all(t[:, 2] == 0)


def test_driving_multiplier_scales_the_offset_from_the_source():
    src, drv = _source(), _driving()
    base = MotionOptions(stitching=False)
    doubled = MotionOptions(stitching=False, driving_multiplier=2.0)
    ref = motion.make_reference(src, drv.head(1), base)
    x_d = motion.driving_keypoints(src, drv, ref, base)
    x_d = motion.apply_expression_friendly(x_d, src, ref, base)
    nets = None  # no MLP is called without stitching/retargeting/lip normalisation
    one = motion.stitch_and_retarget(x_d, src, drv, base, nets)
    two = motion.stitch_and_retarget(x_d, src, drv, doubled, nets)
    torch.testing.assert_close(two - src.x_s, 2 * (one - src.x_s))


def test_video_source_smoothing_keeps_frame_count_and_rotation_unnormalised():
    src, drv = _source(5), _driving(5)
    opts = MotionOptions(smooth_observation_variance=1e-2)
    rot, exp = source_video.smoothed_targets(src, drv, opts)
    assert rot.shape == (5, 3, 3) and exp.shape == (5, K, 3)
    raw = (drv.rot @ drv.rot[:1].transpose(1, 2)) @ src.rot
    assert float((rot - raw).abs().max()) > 1e-4  # heavy smoothing really changes R
    det = torch.linalg.det(rot)
    assert float((det - 1).abs().max()) > 1e-6  # element-wise smoothing: not re-orthonormalised
