"""FaceDetectConfig.from_env: defaults, overrides and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.config import ConfigError
from services.face_detect.config import FaceDetectConfig


def test_defaults():
    cfg = FaceDetectConfig.from_env({})
    assert cfg.backend == "mtcnn" and cfg.model_dir is None and cfg.landmark_model is None
    assert (cfg.port, cfg.metrics_port, cfg.source_max_dim) == (50051, 9101, 1280)
    assert cfg.driving_box_mode == "first_k" and cfg.driving_box_frames == 25
    assert cfg.threshold is None


def test_overrides():
    cfg = FaceDetectConfig.from_env(
        {
            "FACE_DETECT_BACKEND": "InsightFace",
            "FACE_DETECT_MODEL_DIR": "/models/buffalo_l",
            "FACE_DETECT_LANDMARK_MODEL": "/models/landmark.onnx",
            "FACE_DETECT_MIN_FACE_PX": "48",
            "FACE_DETECT_THRESHOLD": "0.3",
            "FACE_DETECT_SOURCE_MAX_DIM": "960",
            "FACE_DETECT_PORT": "0",
            "FACE_DETECT_METRICS_PORT": "0",
            "FACE_DETECT_GRACE_S": "3",
            "FACE_DETECT_DRIVING_BOX": "all",
            "LOG_LEVEL": "debug",
        }
    )
    assert cfg.backend == "insightface" and cfg.model_dir == Path("/models/buffalo_l")
    assert cfg.landmark_model == Path("/models/landmark.onnx")
    assert (cfg.min_face_px, cfg.threshold, cfg.source_max_dim) == (48, 0.3, 960)
    assert (cfg.port, cfg.metrics_port, cfg.grace_s) == (0, 0, 3.0)
    assert cfg.driving_box_mode == "all" and cfg.log_level == "DEBUG"


@pytest.mark.parametrize(
    "env,name",
    [
        ({"FACE_DETECT_BACKEND": "dlib"}, "FACE_DETECT_BACKEND"),
        ({"FACE_DETECT_BACKEND": "insightface"}, "FACE_DETECT_MODEL_DIR"),
        ({"FACE_DETECT_THRESHOLD": "1.5"}, "FACE_DETECT_THRESHOLD"),
        ({"FACE_DETECT_MIN_FACE_PX": "0"}, "FACE_DETECT_MIN_FACE_PX"),
        ({"FACE_DETECT_PORT": "70000"}, "FACE_DETECT_PORT"),
        ({"FACE_DETECT_DRIVING_BOX": "median"}, "FACE_DETECT_DRIVING_BOX"),
    ],
)
def test_bad_values_name_the_variable(env, name):
    with pytest.raises(ConfigError, match=name):
        FaceDetectConfig.from_env(env)
