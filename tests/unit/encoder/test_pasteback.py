"""Paste-back: the generated mask (SPEC 6.5), the warp, and parity with the upstream fixtures."""

from __future__ import annotations

import numpy as np
import pytest

from services.encoder.pasteback import PasteBack, mask_template, warp_affine

# FIXTURES.md: uint8 images may differ by 1 where float->uint8 lands on a boundary.
MAX_ABS = 1
MAX_MISMATCH_FRACTION = 1e-3


def _frames_with_pasteback(data) -> list[int]:
    return sorted(int(k[5:].split(".")[0]) for k in data.files if k.endswith(".pasteback_uint8"))


def _e2e_cases(lp_set):
    for path in sorted(lp_set.path.glob("e2e_*.npz")):
        data = np.load(path)
        for i in _frames_with_pasteback(data):
            if "in.source_rgb_frames" in data.files:
                canvas = data["in.source_rgb_frames"][i]
            else:
                canvas = data["in.source_rgb"]
            yield path.stem, i, data, canvas


def _assert_close(ours: np.ndarray, ref: np.ndarray, what: str) -> None:
    diff = np.abs(ours.astype(np.int16) - ref.astype(np.int16))
    assert ours.shape == ref.shape, what
    assert diff.max() <= MAX_ABS, f"{what}: max |diff| {diff.max()}"
    assert (diff > 0).mean() <= MAX_MISMATCH_FRACTION, f"{what}: {(diff > 0).sum()} px differ"


def test_template_follows_spec_6_5():
    mask = mask_template()
    assert mask.shape == (512, 512, 3) and mask.dtype == np.uint8
    assert (mask[..., 0] == mask[..., 1]).all() and (mask[..., 0] == mask[..., 2]).all()
    m = mask[..., 0].astype(np.int32)
    assert (m[16:497, 16:497] == 255).all()  # inside the square [16, 496]^2
    # Linear fall-off of 16 per pixel on the edges, rounded corners, 0 at the corners.
    assert m[256, 15] == 239 and m[256, 8] == 127 and m[256, 0] == 0
    assert m[256, 511] == 255 - 16 * 15 and m[0, 256] == 0
    assert m[0, 0] == 0 and m[511, 511] == 0
    d = np.hypot(6, 6)  # pixel (10, 10) is 6 px from the square along each axis
    assert m[10, 10] == round(255 - 16 * d)
    # Monotone: never increases towards the border.
    assert (np.diff(m[256, :256]) >= 0).all() and (np.diff(m[256, 256:]) <= 0).all()


@pytest.mark.parity
def test_template_resized_matches_fixture_mask(lp_set):
    """The set's crop-sized mask is upstream's template resized; ours agrees within 1/255."""
    side = lp_set.crop_dsize
    ours = mask_template(side)
    ref = lp_set.npz("geometry")["paste.mask_crop"]
    assert ref.shape == ours.shape == (side, side, 3)
    assert np.abs(ours.astype(np.int16) - ref).max() <= 1
    for path in sorted(lp_set.path.glob("e2e_*.npz")):
        assert (np.load(path)["in.mask_crop"] == ref).all(), path.name


@pytest.mark.parity
def test_geometry_paste(lp_set):
    g = lp_set.npz("geometry")
    canvas, m_c2o, side = g["img"], g["crop106.M_c2o"], lp_set.crop_dsize
    mask_ori = warp_affine(g["paste.mask_crop"], m_c2o, canvas.shape[:2]).astype(np.float32) / 255
    assert (mask_ori == g["paste.mask_ori"]).all()
    result = PasteBack(canvas, m_c2o, (side, side), g["paste.mask_crop"])(g["paste.I_p"])
    _assert_close(result, g["paste.result"], "geometry paste.result")


@pytest.mark.parity
def test_e2e_pasteback_with_fixture_mask(lp_set):
    cases = list(_e2e_cases(lp_set))
    assert len(cases) >= 15  # 7 scenarios with paste-back, 1-3 frames each
    side = lp_set.crop_dsize
    for name, i, data, canvas in cases:
        paste = PasteBack(canvas, data[f"frame{i}.M_c2o"], (side, side), data["in.mask_crop"])
        _assert_close(
            paste(data[f"frame{i}.I_p_uint8"]),
            data[f"frame{i}.pasteback_uint8"],
            f"{name} frame {i}",
        )


@pytest.mark.parity
def test_e2e_pasteback_with_generated_mask(lp_set):
    side = lp_set.crop_dsize
    for name, i, data, canvas in _e2e_cases(lp_set):
        paste = PasteBack(canvas, data[f"frame{i}.M_c2o"], (side, side))
        _assert_close(
            paste(data[f"frame{i}.I_p_uint8"]),
            data[f"frame{i}.pasteback_uint8"],
            f"{name} frame {i} (generated mask)",
        )


@pytest.mark.parametrize("seed", range(6))
def test_box_restriction_equals_full_blend(seed):
    """Blending only inside the mask's bounding box gives the full-canvas formula exactly."""
    rng = np.random.default_rng(seed)
    canvas = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    crop = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    angle, scale = rng.uniform(-0.6, 0.6), rng.uniform(0.5, 3.0)
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    # Some placements hang over the canvas border.
    m_c2o = np.array([[c, -s, rng.uniform(-30, 110)], [s, c, rng.uniform(-30, 80)], [0, 0, 1]])
    mask = warp_affine(mask_template(32), m_c2o, (90, 120)).astype(np.float32) / 255
    warped = warp_affine(crop, m_c2o, (90, 120))
    full = np.clip(mask * warped + (1 - mask) * canvas, 0, 255).astype(np.uint8)
    paste = PasteBack(canvas, m_c2o, (32, 32))
    assert paste.box is None or paste.box != (0, 90, 0, 120)
    assert (paste(crop) == full).all()


def test_identity_warp_and_black_border():
    rng = np.random.default_rng(2)
    crop = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    same = warp_affine(crop, np.eye(3), (16, 16))
    assert (same == crop).all()
    shifted = warp_affine(crop, np.array([[1, 0, 4], [0, 1, 0], [0, 0, 1.0]]), (16, 24))
    assert (shifted[:, :4] == 0).all() and (shifted[:, 20:] == 0).all()
    assert (shifted[:, 4:20] == crop).all()


def test_crop_outside_canvas_returns_canvas():
    canvas = np.full((20, 20, 3), 77, np.uint8)
    paste = PasteBack(canvas, np.array([[1, 0, 500], [0, 1, 500], [0, 0, 1.0]]), (8, 8))
    assert paste.box is None
    assert (paste(np.zeros((8, 8, 3), np.uint8)) == canvas).all()


def test_bad_inputs_raise_value_error():
    canvas = np.zeros((20, 20, 3), np.uint8)
    with pytest.raises(ValueError, match="singular"):
        PasteBack(canvas, np.zeros((3, 3)), (8, 8))
    with pytest.raises(ValueError, match="square"):
        PasteBack(canvas, np.eye(3), (8, 6))
    paste = PasteBack(canvas, np.eye(3), (8, 8))
    with pytest.raises(ValueError, match="expected"):
        paste(np.zeros((9, 9, 3), np.uint8))
