"""Result types of the face detection core (numpy in, dataclasses out)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Detection:
    """One detected face in pixel coordinates of the analysed image.

    Attributes:
        box: (4,) x1, y1, x2, y2.
        score: detector confidence in [0, 1].
        landmarks: K x 2 detector key points (5 for MTCNN and SCRFD: left eye, right eye, nose,
            left mouth corner, right mouth corner, as seen in the image).
        dense: M x 2 dense landmarks when the backend has them (106 for insightface), else None.
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    dense: np.ndarray | None = field(default=None)

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    @property
    def center(self) -> np.ndarray:
        return np.array([(self.box[0] + self.box[2]) / 2.0, (self.box[1] + self.box[3]) / 2.0])

    def shifted(self, dx: float, dy: float, scale: float = 1.0) -> Detection:
        """The same face in another image: p' = p * scale + (dx, dy)."""
        off = np.array([dx, dy])
        return Detection(
            box=self.box * scale + np.r_[off, off],
            score=self.score,
            landmarks=self.landmarks * scale + off,
            dense=None if self.dense is None else self.dense * scale + off,
        )

    def to_json(self) -> dict:
        """The `dynamics detect --json` shape of one face."""
        return {
            "box": [round(float(v), 2) for v in self.box],
            "score": round(self.score, 4),
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
        }


class FaceDetectorBackend(Protocol):
    """What a detector backend provides: all faces of an RGB uint8 image whose longer box side
    is at least ``min_face_px``, largest first."""

    name: str

    def detect(self, image: np.ndarray, min_face_px: int = 20) -> list[Detection]: ...
