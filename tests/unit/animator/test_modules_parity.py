"""Parity of F, M, W, G and the S/R MLPs with the upstream reference outputs (modules.npz).

The fixture checkpoints are loaded through the production loader (strict, spectral norm folded),
then each network runs the recorded batch-2 inputs; tolerances are those of FIXTURES.md.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from services.animator.weights import LivePortraitModels, load_models

pytestmark = pytest.mark.parity

MODULE_TOL = 1e-4  # max|a-b| <= 1e-4 * max(1, max|ref|)
DEFORMATION_TOL = 1e-5
ME_HEADS = ("pitch", "yaw", "roll", "t", "exp", "scale", "kp")


@pytest.fixture(scope="module")
def ref(lp_set) -> dict[str, np.ndarray]:
    return lp_set.npz("modules")


@pytest.fixture(scope="module")
def models(lp_set) -> LivePortraitModels:
    return load_models(lp_set.checkpoints, input_size=lp_set.image_size)


def _t(ref: dict[str, np.ndarray], key: str) -> torch.Tensor:
    return torch.from_numpy(ref[key])


def assert_close(name: str, got: torch.Tensor, expected: np.ndarray, tol: float = MODULE_TOL):
    got = got.detach().cpu().numpy()
    assert got.shape == expected.shape, f"{name}: shape {got.shape} != {expected.shape}"
    err = float(np.abs(got - expected).max())
    limit = tol * max(1.0, float(np.abs(expected).max()))
    assert err <= limit, f"{name}: max|a-b| = {err:.3e} > {limit:.3e}"


def test_recorded_shapes_follow_the_config(lp_set, ref):
    """The recorded batch-2 inputs and outputs have the sizes the set's config.json states."""
    s, out, side = lp_set.image_size, lp_set.output_size, lp_set.feature_side
    assert ref["afe.in.x"].shape == ref["me.in.x"].shape == (2, 3, s, s)
    assert ref["afe.out.f_s"].shape == ref["wm.in.feature_3d"].shape == (2, *lp_set.feature_shape)
    assert ref["sg.in.feature"].shape == (2, lp_set.warped_channels, side, side)
    assert ref["sg.out.image"].shape == (2, 3, out, out)
    assert ref["wm.in.kp_source"].shape == (2, lp_set.num_kp, 3)


@torch.no_grad()
def test_appearance_feature_extractor(models, ref):
    assert_close("afe.out.f_s", models.F(_t(ref, "afe.in.x")), ref["afe.out.f_s"])


@torch.no_grad()
def test_motion_extractor_raw_heads(models, ref):
    out = models.M(_t(ref, "me.in.x"))
    assert set(out) == set(ME_HEADS)
    for head in ME_HEADS:
        assert_close(f"me.out.{head}", out[head], ref[f"me.out.{head}"])


@torch.no_grad()
def test_warping_module(models, ref):
    args = (_t(ref, "wm.in.feature_3d"), _t(ref, "wm.in.kp_driving"), _t(ref, "wm.in.kp_source"))
    out = models.W(*args)
    assert_close("wm.out.out", out["out"], ref["wm.out.out"])
    assert_close("wm.out.occlusion_map", out["occlusion_map"], ref["wm.out.occlusion_map"])
    assert_close(
        "wm.out.deformation", out["deformation"], ref["wm.out.deformation"], DEFORMATION_TOL
    )
    dense = models.W.dense_motion_network(*args)
    assert_close("wm.dense.mask", dense["mask"], ref["wm.dense.mask"])


@torch.no_grad()
def test_spade_generator(models, ref):
    assert_close("sg.out.image", models.G(_t(ref, "sg.in.feature")), ref["sg.out.image"])


@pytest.mark.parametrize("name", ["stitching", "lip", "eye"])
@torch.no_grad()
def test_stitching_retargeting_mlps(models, ref, name):
    net = getattr(models, name)
    assert_close(f"sr.{name}.out", net(_t(ref, f"sr.{name}.in")), ref[f"sr.{name}.out"])


def test_parameter_counts_match_manifest(models, lp_set):
    counts = lp_set.manifest["n_parameters"]
    got = models.param_counts()
    names = {
        "F": "appearance_feature_extractor",
        "M": "motion_extractor",
        "W": "warping_module",
        "G": "spade_generator",
        "stitching": "sr_stitching",
        "lip": "sr_lip",
        "eye": "sr_eye",
    }
    assert {names[k]: v for k, v in got.items()} == counts
