"""Source-photo analysis: canvas preparation, crop and M_c2o, EXIF orientation, clear errors."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from services.common import face_geometry as g
from services.common.canvas import prepare_canvas
from services.common.errors import FaceNotFoundError, InvalidInputError
from services.common.media import decode_image
from services.face_detect.detector import FaceDetector, source_crop_params


def test_prepare_canvas_limits_and_evens():
    img = np.zeros((1001, 2001, 3), np.uint8)
    out = prepare_canvas(img, 1280)
    # long side to 1280, the other int(1001 * 1280 / 2001) = 640, then even
    assert out.shape == (640, 1280, 3)
    assert prepare_canvas(np.zeros((301, 201, 3), np.uint8), 1280).shape == (300, 200, 3)
    tall = prepare_canvas(np.zeros((3000, 1001, 3), np.uint8), 1280)
    assert tall.shape == (1280, 426, 3)


def test_source_on_tom_hanks(face_detector, tom_image):
    source = face_detector.analyse_source(tom_image)
    assert source.faces_found == 1
    assert source.canvas.shape == (112, 112, 3)
    assert source.crop.shape == (256, 256, 3) and source.crop.dtype == np.uint8
    assert source.landmarks.shape == (5, 2)
    scale, vy = source_crop_params(source.landmarks)
    ref = g.crop_face(source.canvas, source.landmarks, dsize=512, scale=scale, vy_ratio=vy)
    assert np.allclose(source.m_c2o, ref.m_c2o)
    assert np.array_equal(source.crop, g.resize_area(ref.image))
    # the eyes land in the upper middle of the crop, as in upstream's crops
    eyes_crop = g.transform_points(source.landmarks[:2], np.linalg.inv(source.m_c2o))
    assert np.all((eyes_crop[:, 0] > 150) & (eyes_crop[:, 0] < 362))
    assert np.all((eyes_crop[:, 1] > 170) & (eyes_crop[:, 1] < 300))
    assert source.ratios is None


def test_largest_face_by_default_and_face_index(face_detector, t1_image):
    first = face_detector.analyse_source(t1_image)
    assert first.faces_found == 6
    third = face_detector.analyse_source(t1_image, face_index=2)
    assert first.face.area >= third.face.area
    assert not np.allclose(first.m_c2o, third.m_c2o)
    with pytest.raises(FaceNotFoundError, match="has 6 face"):
        face_detector.analyse_source(t1_image, face_index=6)


def test_source_max_dim_scales_the_canvas(face_detector, t1_image):
    source = face_detector.analyse_source(t1_image, source_max_dim=640)
    assert source.canvas.shape == (442, 640, 3)
    # M_c2o maps into the canvas, whose scale is half the photo's
    full = face_detector.analyse_source(t1_image)
    centre = np.array([256.0, 256.0, 1.0])
    assert np.allclose((source.m_c2o @ centre)[:2] * 2.0, (full.m_c2o @ centre)[:2], atol=6.0)


def test_no_face_error_names_the_image(face_detector):
    with pytest.raises(
        FaceNotFoundError, match=r"no face found in the source image \(320x240 px\)"
    ) as info:
        face_detector.analyse_source(np.full((240, 320, 3), 90, np.uint8))
    assert info.value.reason == "no_face"


def test_too_small_face(mtcnn, astronaut_image):
    small = cv2.resize(astronaut_image, (200, 200), interpolation=cv2.INTER_AREA)
    detector = FaceDetector(mtcnn, min_face_px=64)
    with pytest.raises(FaceNotFoundError, match="too small") as info:
        detector.analyse_source(small)
    assert info.value.reason == "face_too_small"


def test_bad_arrays_are_invalid_input(face_detector):
    with pytest.raises(InvalidInputError):
        face_detector.detect(np.zeros((10, 10), np.uint8))
    with pytest.raises(InvalidInputError):
        face_detector.analyse_source(np.zeros((64, 64, 3), np.uint8), face_index=-1)


def test_exif_orientation_is_honoured(face_detector, astronaut_image):
    upright = np.ascontiguousarray(astronaut_image[:, 56:456])  # 512 x 400, face upright
    stored = np.ascontiguousarray(
        np.rot90(upright, k=1)
    )  # 400 x 512, as a sideways camera saves it
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    buf = io.BytesIO()
    Image.fromarray(stored).save(buf, format="JPEG", quality=95, exif=exif)
    decoded = decode_image(buf.getvalue())
    assert decoded.shape == (512, 400, 3)
    source = face_detector.analyse_source(decoded)
    left_eye, right_eye, _nose, mouth_l, mouth_r = source.face.landmarks
    assert max(left_eye[1], right_eye[1]) < min(mouth_l[1], mouth_r[1]), "face must be upright"
