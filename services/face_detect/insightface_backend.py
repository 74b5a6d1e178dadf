"""InsightFace backend: SCRFD (det_10g) boxes + 5 points and 2d106det landmarks, loaded through
the insightface library's own model zoo on onnxruntime's CPU provider (what upstream
LivePortrait uses).

The buffalo_l model files are licensed for non-commercial research only (see docs/face_detect.md);
nothing here downloads them: the folder comes from FACE_DETECT_MODEL_DIR.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from services.face_detect.types import Detection

logger = logging.getLogger(__name__)

DETECTOR_FILE = "det_10g.onnx"
LANDMARK_FILE = "2d106det.onnx"
DET_SIZE = 512  # upstream's det_size
SMALL_DET_SIZE = 256  # for small images (tracking regions); SCRFD needs multiples of 32
DEFAULT_THRESHOLD = 0.5
PROVIDERS = ["CPUExecutionProvider"]


def resolve_model_dir(model_dir: Path) -> Path:
    """Accept the buffalo_l folder itself, an insightface root holding models/buffalo_l, or
    upstream LivePortrait's pretrained_weights folder (insightface/models/buffalo_l)."""
    model_dir = Path(model_dir)
    candidates = (
        model_dir,
        model_dir / "buffalo_l",
        model_dir / "models" / "buffalo_l",
        model_dir / "insightface" / "models" / "buffalo_l",
    )
    for candidate in candidates:
        if (candidate / DETECTOR_FILE).is_file():
            return candidate
    raise FileNotFoundError(
        f"{model_dir} holds no {DETECTOR_FILE} (looked in it, buffalo_l/, models/buffalo_l/ "
        "and insightface/models/buffalo_l/)"
    )


class InsightFaceDetector:
    """SCRFD + 2d106det. Input RGB uint8; insightface works in BGR, so channels are swapped."""

    name = "insightface"

    def __init__(self, model_dir: Path, threshold: float | None = None) -> None:
        from insightface.app.common import Face  # heavy import, only for this backend
        from insightface.model_zoo import get_model

        folder = resolve_model_dir(model_dir)
        landmark_path = folder / LANDMARK_FILE
        if not landmark_path.is_file():
            raise FileNotFoundError(f"{folder} holds no {LANDMARK_FILE}")
        self._face_cls = Face
        self.threshold = DEFAULT_THRESHOLD if threshold is None else float(threshold)
        self.det = get_model(str(folder / DETECTOR_FILE), providers=PROVIDERS)
        self.lmk = get_model(str(landmark_path), providers=PROVIDERS)
        if type(self.det).__name__ != "SCRFD" or type(self.lmk).__name__ != "Landmark":
            raise ValueError(
                f"{folder}: insightface routed the models to {type(self.det).__name__} and "
                f"{type(self.lmk).__name__}, expected SCRFD and Landmark"
            )
        if not self.det.use_kps:
            raise ValueError(f"{folder / DETECTOR_FILE}: this SCRFD variant has no key-point head")
        self.det.prepare(ctx_id=-1, det_thresh=self.threshold, input_size=(DET_SIZE, DET_SIZE))
        self.lmk.prepare(ctx_id=-1)
        logger.info("insightface models loaded", extra={"model_dir": str(folder)})

    def detect(self, image: np.ndarray, min_face_px: int = 20) -> list[Detection]:
        """All faces of an H x W x 3 RGB uint8 image, largest first, with 106 dense points."""
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        side = DET_SIZE if max(image.shape[:2]) > SMALL_DET_SIZE * 1.25 else SMALL_DET_SIZE
        boxes, kpss = self.det.detect(bgr, input_size=(side, side), det_thresh=self.threshold)
        found = []
        for i, row in enumerate(boxes):
            box = row[:4].astype(np.float64)
            if max(box[2] - box[0], box[3] - box[1]) < min_face_px:
                continue
            kps = kpss[i].astype(np.float64)
            face = self._face_cls(bbox=row[:4], kps=kps, det_score=float(row[4]))
            dense = np.asarray(self.lmk.get(bgr, face), dtype=np.float64)[:, :2]
            found.append(Detection(box=box, score=float(row[4]), landmarks=kps, dense=dense))
        return sorted(found, key=lambda d: -d.area)
