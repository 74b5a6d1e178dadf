"""Parity of services.common.face_geometry with the upstream crop geometry (geometry.npz)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from services.common import face_geometry as g

pytestmark = pytest.mark.parity

LAYOUTS = (5, 9, 68, 101, 106, 203)
# Bilinear warps of OpenCV builds differ in their fixed-point rounding: warping the fixture's own
# M_o2c with this OpenCV already differs from the stored crop by up to 3 levels on a few pixels.
IMG_MAX, IMG_MEAN, IMG_FRAC_OVER_1 = 4, 0.05, 0.01


@pytest.fixture(scope="module")
def geo(lp_set):
    return lp_set.npz("geometry")


@pytest.fixture(scope="module")
def dsize(lp_set) -> int:
    """The set's crop side: its geometry.npz crops and similarity transforms are at this size."""
    return lp_set.crop_dsize


def _close(a, b, tol=1e-4):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= tol * max(1.0, np.abs(b).max())


def _image_close(a, b):
    assert a.shape == b.shape and a.dtype == np.uint8
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert diff.max() <= IMG_MAX
    assert diff.mean() < IMG_MEAN
    assert (diff > 1).mean() < IMG_FRAC_OVER_1


@pytest.mark.parametrize("n", LAYOUTS)
@pytest.mark.parametrize("use_lip", [True, False])
def test_two_point_axis(geo, n, use_lip):
    key = f"pt2.{n}.{'lip' if use_lip else 'eyes'}"
    _close(g.two_point_axis(geo[f"lmk{n}"], use_lip=use_lip), geo[key], tol=1e-5)


@pytest.mark.parametrize("n", LAYOUTS)
@pytest.mark.parametrize("use_lip", [True, False])
def test_crop_rect(geo, n, use_lip):
    ref = geo[f"rect.{n}.{'lip' if use_lip else 'eyes'}"]  # cx, cy, w, h, angle (rad)
    rect = g.crop_rect(geo[f"lmk{n}"], scale=2.3, vy_ratio=-0.125, use_lip=use_lip)
    _close(np.r_[rect.center, rect.size, rect.angle], ref)


def test_similarity_transforms(geo, dsize):
    keys = [k for k in geo if k.startswith("sim.")]
    assert len(keys) == 24
    for key in keys:
        m = re.fullmatch(r"sim\.(\d+)\.rot([01])\.s([\d.]+)\.vx([-\d.]+)\.vy([-\d.]+)\.M_o2c", key)
        n, rot, scale, vx, vy = m.groups()
        ours = g.similarity_o2c(
            geo[f"lmk{n}"], dsize, float(scale), float(vx), float(vy), rotate=rot == "1"
        )
        _close(ours, geo[key])


def test_unsupported_layout_raises():
    with pytest.raises(ValueError, match="unsupported landmark count 7"):
        g.two_point_axis(np.zeros((7, 2)))


def test_axis_falls_back_when_points_coincide():
    rect = g.crop_rect(np.full((5, 2), 10.0), scale=2.0)
    assert rect.angle == 0.0


def test_source_crop_106(geo, dsize):
    crop = g.crop_face(geo["img"], geo["lmk106"], dsize=dsize)
    assert crop.image.shape == geo["crop106.img_crop"].shape == (dsize, dsize, 3)
    _close(crop.m_o2c, geo["crop106.M_o2c"])
    _close(crop.m_c2o, geo["crop106.M_c2o"])
    _close(crop.points, geo["crop106.pt_crop"], tol=1e-4)
    _image_close(crop.image, geo["crop106.img_crop"])
    _image_close(g.resize_area(crop.image), geo["crop106.img_crop_256"])
    assert g.resize_area(geo["crop106.img_crop"]).tobytes() == geo["crop106.img_crop_256"].tobytes()


def test_driving_box_crop_203(geo, dsize):
    bbox, bbox_rot = g.landmark_box(geo["lmk203"])
    _close(bbox, geo["bbox203.bbox"])
    _close(bbox_rot, geo["bbox203.bbox_rot"])
    crop = g.crop_by_box(geo["img"], g.box_ltrb(bbox), geo["lmk203"], dsize=dsize)
    _close(crop.m_c2o, geo["bbox203.M_c2o"])
    _close(crop.points, geo["bbox203.lmk_crop"])
    _image_close(crop.image, geo["bbox203.img_crop"])


def test_average_boxes_is_mean_and_validates():
    boxes = [np.array([0.0, 0.0, 10.0, 10.0]), np.array([2.0, 4.0, 14.0, 16.0])]
    assert np.allclose(g.average_boxes(boxes), [1.0, 2.0, 12.0, 13.0])
    with pytest.raises(ValueError):
        g.average_boxes([])


def test_ratios(geo):
    _close(g.eye_ratios(geo["lmk203"])[None], geo["ratio.eye"], tol=1e-6)
    _close(g.lip_ratio(geo["lmk203"]), geo["ratio.lip"][0, 0], tol=1e-6)
    with pytest.raises(ValueError):
        g.eye_ratios(geo["lmk106"])


def test_m_c2o_round_trips_points(geo):
    crop = g.crop_face(geo["img"], geo["lmk203"], dsize=512)
    back = g.transform_points(crop.points, crop.m_c2o)
    _close(back, geo["lmk203"], tol=1e-6)
