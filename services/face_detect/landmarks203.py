"""Optional upstream LivePortrait `landmark.onnx` runner: 203 face points (SPEC §6.1), used for
eye/lip open ratios and the driving box when the file is configured.

Input 1x3x224x224 RGB/255 cut around initial landmarks (rotated crop, scale 1.5, vy -0.1); the
third output holds 203 x 2 coordinates normalised to the crop, mapped back with M_c2o.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from services.common import face_geometry as g

logger = logging.getLogger(__name__)

INPUT_SIDE = 224
CROP_SCALE = 1.5
CROP_VY_RATIO = -0.1
NUM_POINTS = 203


class Landmark203:
    """203-point landmark refiner around any initial landmark set (5, 106 or 203 points)."""

    def __init__(self, model_path: Path) -> None:
        import onnxruntime

        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"landmark model not found: {path}")
        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(outputs) < 3:
            raise ValueError(
                f"{path.name}: expected >= 3 outputs (the third holds the 203 points), "
                f"got {len(outputs)}"
            )
        self.input_name = inputs[0].name
        logger.info("landmark.onnx loaded", extra={"path": str(path)})

    def run(
        self, image: np.ndarray, init_points: np.ndarray, scale: float = CROP_SCALE
    ) -> np.ndarray:
        """203 x 2 landmarks in image pixels, refined from ``init_points`` (N x 2).

        Args:
            image: H x W x 3 RGB uint8.
            init_points: landmarks that locate the face (any layout of face_geometry).
            scale: crop scale around them (1.5 for 106/203 points; larger for 5-point starts).
        """
        crop = g.crop_face(
            image, init_points, dsize=INPUT_SIDE, scale=scale, vy_ratio=CROP_VY_RATIO
        )
        blob = crop.image.astype(np.float32).transpose(2, 0, 1)[None] / 255.0  # 1 x 3 x 224 x 224
        out = self.session.run(None, {self.input_name: np.clip(blob, 0.0, 1.0)})
        pts = np.asarray(out[2], dtype=np.float64).reshape(-1, 2)[:NUM_POINTS] * INPUT_SIDE
        if pts.shape[0] != NUM_POINTS:
            raise ValueError(
                f"landmark model returned {pts.shape[0]} points, expected {NUM_POINTS}"
            )
        return g.transform_points(pts, crop.m_c2o)
