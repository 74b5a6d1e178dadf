"""Keypoint maths against the upstream reference numbers (modules.npz, geometry.npz)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from services.animator import keypoints, retargeting
from services.animator.motion import convex_hull_multiplier
from services.animator.smoothing import rts_smooth
from services.animator.weights import load_models

pytestmark = pytest.mark.parity

KP_TOL = 1e-5


@pytest.fixture(scope="module")
def modules(lp_set):
    return lp_set.npz("modules")


@pytest.fixture(scope="module")
def geometry(lp_set):
    return lp_set.npz("geometry")


@pytest.fixture(scope="module")
def lp_models(lp_set):
    return load_models(lp_set.checkpoints, input_size=lp_set.image_size)


@pytest.fixture(scope="module")
def kp_info(modules):
    raw = {
        k.removeprefix("me.out."): torch.from_numpy(v)
        for k, v in modules.items()
        if k.startswith("me.out.")
    }
    return keypoints.kp_info_from_motion_output(raw)


def test_bins_to_degrees(modules, kp_info):
    for name in ("pitch", "yaw", "roll"):
        got = getattr(kp_info, name).numpy().ravel()
        np.testing.assert_allclose(got, modules[f"cam.deg.{name}"], rtol=0, atol=KP_TOL)
    degrees = torch.tensor([[10.0], [-5.0]])
    assert keypoints.bins_to_degrees(degrees) is degrees  # already degrees: unchanged


def test_bins_span():
    peaked = torch.full((2, 66), -1e4)
    peaked[0, 0], peaked[1, 65] = 0.0, 0.0
    np.testing.assert_allclose(keypoints.bins_to_degrees(peaked).numpy(), [-97.5, 97.5])


def test_rotation_from_predicted_angles(modules, kp_info):
    np.testing.assert_allclose(kp_info.rotation().numpy(), modules["cam.R"], rtol=0, atol=KP_TOL)


def test_rotation_grid(modules):
    angles = torch.from_numpy(modules["cam.grid_angles_pyr_deg"])  # N×3 pitch, yaw, roll
    rot = keypoints.rotation_matrix(angles[:, 0], angles[:, 1], angles[:, 2])
    np.testing.assert_allclose(rot.numpy(), modules["cam.grid_R"], rtol=0, atol=KP_TOL)
    # row-vector convention: kp · R with R = (Rz·Ry·Rx)ᵀ, so a pure yaw maps +x to (cos, 0, −sin)
    yaw30 = torch.tensor([[1.0, 0.0, 0.0]]) @ rot[2]
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    np.testing.assert_allclose(yaw30.numpy(), [[c, 0.0, -s]], atol=1e-6)
    eye = rot.transpose(1, 2) @ rot
    np.testing.assert_allclose(eye.numpy(), np.broadcast_to(np.eye(3), eye.shape), atol=1e-6)


def test_transformed_keypoints(modules, kp_info):
    np.testing.assert_allclose(
        kp_info.transformed().numpy(), modules["kp.transformed"], rtol=0, atol=KP_TOL
    )


def test_transform_ignores_tz(kp_info):
    moved = keypoints.KpInfo(**{**kp_info.__dict__, "t": kp_info.t + torch.tensor([0, 0, 5.0])})
    torch.testing.assert_close(moved.transformed(), kp_info.transformed(), rtol=0, atol=0)


def test_convex_hull_multiplier(geometry):
    got = convex_hull_multiplier(geometry["mult.x_s"], geometry["mult.x_d0"])
    assert got == pytest.approx(float(geometry["mult.value"]), rel=1e-12)


@pytest.mark.parametrize("variance", ["3e-07", "1e-05"])
def test_kalman_smoothing(geometry, variance):
    observed = geometry["kalman.in"][:, 0]  # N×21×3
    smoothed = rts_smooth(observed, observation_variance=float(variance)).astype(np.float32)
    reference = geometry[f"kalman.out.obsvar{variance}"]
    np.testing.assert_allclose(smoothed, reference, rtol=0, atol=KP_TOL)
    assert np.abs(observed - reference).max() > 1e-4  # the smoother really changes the input


def test_retargeting_wrappers(modules, lp_models):
    x_s = torch.from_numpy(modules["wm.in.kp_source"])
    x_d = torch.from_numpy(modules["wm.in.kp_driving"])
    cases = {
        "wrap.stitching.out": retargeting.stitch(lp_models.stitching, x_s, x_d),
        "wrap.retarget_eye.out": retargeting.retarget_eye(
            lp_models.eye, x_s, torch.from_numpy(modules["wrap.retarget_eye.in.ratio"])
        ),
        "wrap.retarget_lip.out": retargeting.retarget_lip(
            lp_models.lip, x_s, torch.from_numpy(modules["wrap.retarget_lip.in.ratio"])
        ),
    }
    for key, got in cases.items():
        np.testing.assert_allclose(got.numpy(), modules[key], rtol=0, atol=KP_TOL, err_msg=key)


def test_flat_hull_gives_neutral_multiplier():
    flat = np.random.default_rng(0).normal(size=(21, 3))
    flat[:, 2] = 0.0  # coplanar keypoints: upstream's ConvexHull would raise
    assert convex_hull_multiplier(flat, flat) == 1.0
