"""insightface backend through the library's own model loading, on small ONNX models with the
det_10g / 2d106det signatures, plus the optional 203-point landmark.onnx runner."""

from __future__ import annotations

import numpy as np
import pytest

from services.common import face_geometry as g
from services.face_detect.config import FaceDetectConfig
from services.face_detect.detector import FaceDetector, find_landmark_model
from services.face_detect.insightface_backend import InsightFaceDetector, resolve_model_dir
from services.face_detect.landmarks203 import Landmark203
from tests.unit.face_detect import assets

SQUARE = (200, 120, 392, 312)


@pytest.fixture(scope="module")
def insight(onnx_dir):
    return InsightFaceDetector(onnx_dir)


def test_model_dir_layouts(onnx_dir, tmp_path):
    folder = onnx_dir / "models" / "buffalo_l"
    assert resolve_model_dir(onnx_dir) == folder
    assert resolve_model_dir(folder) == folder
    with pytest.raises(FileNotFoundError, match="det_10g.onnx"):
        resolve_model_dir(tmp_path)


def test_detects_boxes_points_and_106_landmarks(insight):
    faces = insight.detect(assets.bright_square(box=SQUARE))
    assert faces, "the bright square must fire the SCRFD-like model"
    x1, y1, x2, y2 = SQUARE
    for face in faces:
        cx, cy = face.center
        assert x1 <= cx <= x2 and y1 <= cy <= y2
        assert face.landmarks.shape == (5, 2) and face.dense.shape == (106, 2)
        assert 0.5 < face.score <= 1.0
        inside = (face.dense >= face.box[:2]) & (face.dense <= face.box[2:])
        assert inside.all()
    assert [f.area for f in faces] == sorted((f.area for f in faces), reverse=True)


def test_dark_image_has_no_face(insight):
    assert insight.detect(np.full((480, 640, 3), 20, np.uint8)) == []


def test_min_face_filter(insight):
    assert insight.detect(assets.bright_square(box=SQUARE), min_face_px=1000) == []


def test_upstream_weights_layout_finds_both_models(onnx_dir, tmp_path):
    root = tmp_path / "pretrained_weights"
    (root / "insightface" / "models").mkdir(parents=True)
    (root / "liveportrait").mkdir()
    (root / "insightface" / "models" / "buffalo_l").symlink_to(onnx_dir / "models" / "buffalo_l")
    (root / "liveportrait" / "landmark.onnx").symlink_to(onnx_dir / "landmark.onnx")
    cfg = FaceDetectConfig(backend="insightface", model_dir=root)
    assert find_landmark_model(cfg) == root / "liveportrait" / "landmark.onnx"
    detector = FaceDetector.from_config(cfg)
    assert detector.name == "insightface" and detector.landmark203 is not None
    assert find_landmark_model(FaceDetectConfig()) is None


def test_source_crop_uses_the_106_points(onnx_dir):
    cfg = FaceDetectConfig(backend="insightface", model_dir=onnx_dir / "models", min_face_px=8)
    detector = FaceDetector.from_config(cfg)
    source = detector.analyse_source(assets.bright_square(box=SQUARE))
    assert source.landmarks.shape == (106, 2)
    expected = g.crop_face(source.canvas, source.landmarks, dsize=512)
    assert np.allclose(source.m_c2o, expected.m_c2o)
    assert source.ratios is None


def test_landmark203_ratios_and_mapping(onnx_dir, astronaut_image, mtcnn):
    runner = Landmark203(onnx_dir / "landmark.onnx")
    (face,) = mtcnn.detect(astronaut_image)
    pts = runner.run(astronaut_image, face.landmarks, scale=3.0)
    assert pts.shape == (203, 2)
    eyes = g.eye_ratios(pts)
    assert np.allclose(eyes, assets.RATIOS_203[:2], atol=1e-4)
    assert abs(g.lip_ratio(pts) - assets.RATIOS_203[2]) < 1e-4
    # the constant model output sits in the crop around the face, so the points surround it
    assert np.linalg.norm(pts.mean(axis=0) - face.center) < face.width


def test_detector_with_landmark_model_reports_ratios(onnx_dir, mtcnn, astronaut_image):
    detector = FaceDetector(mtcnn, landmark203=Landmark203(onnx_dir / "landmark.onnx"))
    source = detector.analyse_source(astronaut_image)
    assert source.landmarks.shape == (203, 2)
    got = (source.ratios.eye_left, source.ratios.eye_right, source.ratios.lip)
    assert np.allclose(got, assets.RATIOS_203, atol=1e-4)


def test_landmark_model_with_too_few_outputs(tmp_path, onnx_dir):
    with pytest.raises(ValueError, match="expected >= 3 outputs"):
        Landmark203(onnx_dir / "models" / "buffalo_l" / "2d106det.onnx")
    with pytest.raises(FileNotFoundError):
        Landmark203(tmp_path / "missing.onnx")
