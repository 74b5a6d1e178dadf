"""Face detection core: backend choice, detection, and the source-photo analysis of SPEC §5.1/§6
(canvas, 512 crop + M_c2o, 256 network input, landmarks, eye/lip ratios).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.common import face_geometry as g
from services.common.canvas import prepare_canvas
from services.common.errors import FaceNotFoundError, InvalidInputError
from services.face_detect.config import FaceDetectConfig
from services.face_detect.types import Detection, FaceDetectorBackend

logger = logging.getLogger(__name__)

DETECT_MIN_PX = 20  # smallest face the detectors look for; smaller chosen faces are "too small"
# 5-point landmarks (eyes, nose, mouth corners) span about half of what the 106/203-point sets
# span (contour and brows): brow-to-chin and cheek-to-cheek are about twice the eye-to-mouth
# distance, and their centre lies ~0.14 eye-mouth distances lower. These constants scale the
# 5-point rectangle to the one upstream's dense landmarks give (docs/face_detect.md).
FIVE_POINT_EXTENT = 2.1
FIVE_POINT_VY_SHIFT = 0.03


@dataclass(frozen=True)
class FaceRatios:
    """Eye/lip open ratios (SPEC §5.5); only measurable with the 203-point model."""

    eye_left: float
    eye_right: float
    lip: float


@dataclass(frozen=True)
class SourceFace:
    """The face to animate in a source photo.

    Attributes:
        canvas: H x W x 3 RGB photo after EXIF orientation, max-dim resize and even crop.
        crop: 256 x 256 x 3 network input (INTER_AREA from the 512 crop).
        m_c2o: 3x3 transform of the 512 crop back into the canvas.
        landmarks: N x 2 landmarks the crop was computed from (canvas pixels).
        ratios: eye/lip ratios, None without the 203-point model.
        face: the chosen detection; faces_found: how many faces the photo has.
    """

    canvas: np.ndarray
    crop: np.ndarray
    m_c2o: np.ndarray
    landmarks: np.ndarray
    ratios: FaceRatios | None
    face: Detection
    faces_found: int


def build_backend(cfg: FaceDetectConfig) -> FaceDetectorBackend:
    """The configured detector backend, weights loaded."""
    if cfg.backend == "insightface":
        from services.face_detect.insightface_backend import InsightFaceDetector

        return InsightFaceDetector(cfg.model_dir, threshold=cfg.threshold)
    import torch

    from services.face_detect.mtcnn import STAGE_THRESHOLDS, MtcnnDetector

    torch.set_num_threads(
        cfg.torch_threads
    )  # process-wide: MTCNN is this process's only torch user
    threshold = STAGE_THRESHOLDS[2] if cfg.threshold is None else cfg.threshold
    return MtcnnDetector(cfg.model_dir, threshold=threshold)


class FaceDetector:
    """Detection plus LivePortrait crop landmarks for one backend (and the optional 203 model)."""

    def __init__(self, backend: FaceDetectorBackend, landmark203=None, min_face_px: int = 32):
        self.backend = backend
        self.landmark203 = landmark203
        self.min_face_px = int(min_face_px)

    @classmethod
    def from_config(cls, cfg: FaceDetectConfig) -> FaceDetector:
        landmark = None
        landmark_path = find_landmark_model(cfg)
        if landmark_path is not None:
            from services.face_detect.landmarks203 import Landmark203

            landmark = Landmark203(landmark_path)
        return cls(build_backend(cfg), landmark203=landmark, min_face_px=cfg.min_face_px)

    @property
    def name(self) -> str:
        return self.backend.name

    def detect(self, image: np.ndarray, min_face_px: int = DETECT_MIN_PX) -> list[Detection]:
        """All faces of an H x W x 3 RGB uint8 image, largest first."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InvalidInputError(
                f"expected an H x W x 3 uint8 image, got {image.shape} {image.dtype}",
                reason="bad_image",
            )
        return self.backend.detect(image, min_face_px=min_face_px)

    def crop_points(
        self, image: np.ndarray, face: Detection
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(landmarks for the crop rectangle, 203 points or None) of one detected face.

        Dense backend landmarks (106) are used as upstream does; 5-point detections are
        replaced by landmark.onnx's 203 points when it is configured, else used with the
        5-point compensation of `source_crop_params` / `driving_box_params`.
        """
        base = face.dense if face.dense is not None else face.landmarks
        if self.landmark203 is None:
            return base, None
        start_scale = 1.5 if base.shape[0] > 5 else 1.5 * FIVE_POINT_EXTENT
        lmk203 = self.landmark203.run(image, base, scale=start_scale)
        # 203 points describe the crop better than a 5-point compensation does
        return (lmk203 if base.shape[0] == 5 else base), lmk203

    def analyse_source(
        self, image: np.ndarray, source_max_dim: int = 1280, face_index: int = 0
    ) -> SourceFace:
        """Pick the face to animate (largest first) in an oriented photo and compute its
        LivePortrait crop on the photo's canvas (`services.common.canvas.prepare_canvas`)."""
        return self.analyse_canvas(prepare_canvas(image, source_max_dim), face_index)

    def analyse_canvas(self, canvas: np.ndarray, face_index: int = 0) -> SourceFace:
        """`analyse_source` on a canvas that is already prepared."""
        if face_index < 0:
            raise InvalidInputError(
                f"face_index must be >= 0, got {face_index}", reason="bad_face_index"
            )
        faces = self.detect(canvas)
        h, w = canvas.shape[:2]
        if not faces:
            raise FaceNotFoundError(f"no face found in the source image ({w}x{h} px)")
        if face_index >= len(faces):
            raise FaceNotFoundError(
                f"face_index {face_index} requested but the source image has {len(faces)} face(s)",
                reason="bad_face_index",
            )
        face = faces[face_index]
        side = max(face.width, face.height)
        if side < self.min_face_px:
            raise FaceNotFoundError(
                f"the face in the source image is too small: {side:.0f} px "
                f"(at least {self.min_face_px} px needed; image {w}x{h})",
                reason="face_too_small",
            )
        points, lmk203 = self.crop_points(canvas, face)
        scale, vy = source_crop_params(points)
        crop512 = g.crop_face(canvas, points, dsize=g.SOURCE_DSIZE, scale=scale, vy_ratio=vy)
        return SourceFace(
            canvas=canvas,
            crop=g.resize_area(crop512.image, g.NETWORK_INPUT),
            m_c2o=crop512.m_c2o,
            landmarks=points,
            ratios=ratios_from_203(lmk203),
            face=face,
            faces_found=len(faces),
        )


def find_landmark_model(cfg: FaceDetectConfig) -> Path | None:
    """FACE_DETECT_LANDMARK_MODEL, else a landmark.onnx in the model folder (or its
    liveportrait/ subfolder, upstream's pretrained_weights layout), else None."""
    if cfg.landmark_model is not None:
        return cfg.landmark_model
    if cfg.model_dir is None:
        return None
    for candidate in (
        cfg.model_dir / "landmark.onnx",
        cfg.model_dir / "liveportrait" / "landmark.onnx",
    ):
        if candidate.is_file():
            logger.info("using %s for 203-point landmarks", candidate)
            return candidate
    return None


def source_crop_params(points: np.ndarray) -> tuple[float, float]:
    """(scale, vy_ratio) of the source crop for this landmark layout (SPEC §6.3 defaults)."""
    if points.shape[0] == 5:
        return g.SOURCE_SCALE * FIVE_POINT_EXTENT, g.SOURCE_VY_RATIO + FIVE_POINT_VY_SHIFT
    return g.SOURCE_SCALE, g.SOURCE_VY_RATIO


def driving_box_params(points: np.ndarray) -> tuple[float, float]:
    """(scale, vy_ratio) of the driving box for this landmark layout (SPEC §6.4 defaults)."""
    if points.shape[0] == 5:
        return g.DRIVING_SCALE * FIVE_POINT_EXTENT, g.DRIVING_VY_RATIO + FIVE_POINT_VY_SHIFT
    return g.DRIVING_SCALE, g.DRIVING_VY_RATIO


def ratios_from_203(lmk203: np.ndarray | None) -> FaceRatios | None:
    """Eye/lip ratios of 203 points, or None when there are none."""
    if lmk203 is None:
        return None
    left, right = g.eye_ratios(lmk203)
    return FaceRatios(eye_left=float(left), eye_right=float(right), lip=float(g.lip_ratio(lmk203)))
