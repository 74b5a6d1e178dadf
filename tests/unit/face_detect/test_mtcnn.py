"""MTCNN backend on real photos shipped in installed packages, and its strict weight loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from services.face_detect.mtcnn import MtcnnDetector, PNet, _load, default_weights_dir, nms


def _landmarks_inside(face) -> bool:
    x1, y1, x2, y2 = face.box
    lm = face.landmarks
    return bool(np.all((lm[:, 0] >= x1) & (lm[:, 0] <= x2) & (lm[:, 1] >= y1) & (lm[:, 1] <= y2)))


@pytest.mark.parametrize("name,count", [("t1_image", 6), ("tom_image", 1), ("astronaut_image", 1)])
def test_real_photos(request, mtcnn, name, count):
    image = request.getfixturevalue(name)
    faces = mtcnn.detect(image)
    assert len(faces) == count
    areas = [f.area for f in faces]
    assert areas == sorted(areas, reverse=True), "largest first"
    for face in faces:
        assert face.landmarks.shape == (5, 2)
        assert face.score > 0.9
        assert _landmarks_inside(face)
        left_eye, right_eye, _nose, mouth_l, mouth_r = face.landmarks
        assert left_eye[0] < right_eye[0] and mouth_l[0] < mouth_r[0]
        assert max(left_eye[1], right_eye[1]) < max(mouth_l[1], mouth_r[1])


def test_astronaut_face_location(mtcnn, astronaut_image):
    (face,) = mtcnn.detect(astronaut_image)
    # the face of skimage's astronaut lies around x 180..270, y 60..175 of the 512x512 photo
    cx, cy = face.center
    assert 200 < cx < 250 and 95 < cy < 140
    assert 70 < face.width < 120


def test_no_face_in_plain_or_noise_images(mtcnn):
    assert mtcnn.detect(np.full((240, 320, 3), 128, np.uint8)) == []
    noise = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    assert mtcnn.detect(noise) == []


def test_min_face_size_skips_small_faces(mtcnn, t1_image):
    assert len(mtcnn.detect(t1_image, min_face_px=200)) == 0


def test_weights_come_from_the_wheel_folder():
    folder = default_weights_dir()
    assert {p.name for p in folder.glob("*.pt")} >= {"pnet.pt", "rnet.pt", "onet.pt"}


def test_loader_rejects_wrong_shapes_and_keys(tmp_path):
    state = PNet().state_dict()
    state["conv1.weight"] = torch.zeros(10, 3, 5, 5)
    torch.save(state, tmp_path / "pnet.pt")
    with pytest.raises(ValueError, match="conv1.weight has shape"):
        _load(PNet(), tmp_path / "pnet.pt")
    state = PNet().state_dict()
    state.pop("conv4_2.bias")
    torch.save(state, tmp_path / "pnet.pt")
    with pytest.raises(ValueError, match="conv4_2.bias"):
        _load(PNet(), tmp_path / "pnet.pt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="pnet.pt"):
        MtcnnDetector(empty)


def test_nms_modes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [2, 2, 6, 6]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    assert nms(boxes, scores, 0.5).tolist() == [0, 2, 3]
    assert nms(boxes, scores, 0.5, mode="min").tolist() == [0, 2]
