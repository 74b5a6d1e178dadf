"""Shared fixtures of the face_detect unit tests: the real MTCNN detector, photos, ONNX fakes."""

from __future__ import annotations

import pytest
import torch

from services.face_detect.detector import FaceDetector
from services.face_detect.mtcnn import MtcnnDetector
from tests.unit.face_detect import assets


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """MTCNN's small convolutions run fastest on one thread (as the service runs them)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def mtcnn() -> MtcnnDetector:
    return MtcnnDetector()


@pytest.fixture(scope="session")
def face_detector(mtcnn) -> FaceDetector:
    return FaceDetector(mtcnn, min_face_px=32)


@pytest.fixture(scope="session")
def t1_image():
    return assets.load_rgb(assets.insightface_image_path("t1.jpg"))


@pytest.fixture(scope="session")
def tom_image():
    return assets.load_rgb(assets.insightface_image_path("Tom_Hanks_54745.png"))


@pytest.fixture(scope="session")
def astronaut_image():
    return assets.astronaut()


@pytest.fixture(scope="session")
def onnx_dir(tmp_path_factory):
    """A buffalo_l-like folder (det_10g.onnx, 2d106det.onnx) plus a landmark.onnx beside it."""
    root = tmp_path_factory.mktemp("insightface_models")
    folder = root / "models" / "buffalo_l"
    folder.mkdir(parents=True)
    assets.build_scrfd(folder / "det_10g.onnx")
    assets.build_landmark106(folder / "2d106det.onnx")
    assets.build_landmark203(root / "landmark.onnx")
    return root
