"""Synthetic driving clips with known face motion, for tests and the benchmark: a real face photo
(scikit-image's astronaut, or any RGB image) pasted onto a plain background, moved along a
smooth path and turned slightly over time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np


def astronaut_face(side: int = 200) -> np.ndarray:
    """A side x side RGB patch around the astronaut's face (skimage.data.astronaut, 512x512)."""
    from skimage import data

    image = data.astronaut()
    patch = image[18:238, 114:334]  # 220 x 220 around the face, from the photo's known layout
    return cv2.resize(patch, (side, side), interpolation=cv2.INTER_AREA)


@dataclass(frozen=True)
class SyntheticClip:
    """A clip description; frames are rendered on demand (no video kept in memory).

    Attributes:
        patch: P x P x 3 face patch.
        width, height: frame size.
        n_frames: number of frames.
        amplitude: (ax, ay) pixels of the circular-ish path of the patch centre.
        max_angle: degrees of the slow roll.
        gap: indices of frames rendered without the face (background only).
    """

    patch: np.ndarray
    width: int = 640
    height: int = 360
    n_frames: int = 50
    amplitude: tuple[float, float] = (120.0, 50.0)
    max_angle: float = 10.0
    gap: tuple[int, ...] = ()

    def offset(self, i: int) -> np.ndarray:
        """Known displacement (dx, dy) of the patch centre from the frame centre at frame i."""
        t = 2.0 * np.pi * i / max(1, self.n_frames)
        return np.array([self.amplitude[0] * np.sin(t), self.amplitude[1] * np.sin(2 * t)])

    def angle(self, i: int) -> float:
        return self.max_angle * float(np.sin(2.0 * np.pi * i / max(1, self.n_frames)))

    def transform(self, i: int) -> np.ndarray:
        """2 x 3 map of patch pixels into frame i (rotation about the patch centre + shift)."""
        p = self.patch.shape[0]
        center = np.array([self.width / 2.0, self.height / 2.0]) + self.offset(i)
        rot = cv2.getRotationMatrix2D((p / 2.0, p / 2.0), self.angle(i), 1.0)  # 2 x 3
        rot[:, 2] += center - p / 2.0
        return rot

    def follow(self, point: np.ndarray, i: int, j: int) -> np.ndarray:
        """Where a point seen at (x, y) in frame i is in frame j (the known motion)."""
        inv = cv2.invertAffineTransform(self.transform(i))
        in_patch = inv[:, :2] @ point + inv[:, 2]
        fwd = self.transform(j)
        return fwd[:, :2] @ in_patch + fwd[:, 2]

    def frame(self, i: int) -> np.ndarray:
        """H x W x 3 RGB frame i."""
        canvas = np.full((self.height, self.width, 3), (40, 60, 80), dtype=np.uint8)
        if i in self.gap:
            return canvas
        p = self.patch.shape[0]
        rot = self.transform(i)
        mask = cv2.warpAffine(np.full((p, p), 255, np.uint8), rot, (self.width, self.height))
        moved = cv2.warpAffine(self.patch, rot, (self.width, self.height))
        alpha = (mask.astype(np.float32) / 255.0)[:, :, None]
        return (moved * alpha + canvas * (1.0 - alpha)).astype(np.uint8)

    def frames(self) -> Iterator[np.ndarray]:
        for i in range(self.n_frames):
            yield self.frame(i)
