"""Driving-video face tracking and per-frame crops (SPEC §6.1, §6.4), streaming.

Detection runs on the whole first frame (largest face); later frames search a window around
the previous face at reduced resolution, and fall back to a whole-frame detection (nearest face
to the last one seen) when that fails. Frames without a face reuse the previous landmarks and
ratios and are flagged ``face_found=False``.

Crops: a square video without the crop flag is resized whole to 256 (upstream). Otherwise a
square box from the landmarks crops every frame to 512 and resizes to 256, where the box is
(``box_mode``): ``first_k`` the mean of the first K face boxes, then fixed (default: crops stream
after K frames); ``all`` upstream's mean over every frame (exact, but nothing leaves before the
last frame); ``per_frame`` each frame's own box.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from services.common import face_geometry as g
from services.common.errors import FaceNotFoundError, InvalidInputError, ResourceExhaustedError
from services.face_detect.config import DRIVING_BOX_MODES
from services.face_detect.detector import (
    FaceDetector,
    FaceRatios,
    driving_box_params,
    ratios_from_203,
)
from services.face_detect.types import Detection

logger = logging.getLogger(__name__)

TRACK_FACE_PX = 96  # the search window is scaled so the face is about this tall
SEARCH_WINDOW = 2.0  # window side, in face sizes


@dataclass(frozen=True)
class TrackedFrame:
    """One driving frame's output.

    Attributes:
        index: frame number.
        crop: 256 x 256 x 3 RGB network input.
        landmarks: N x 2 tracked landmarks in frame pixels (None before any face was seen).
        ratios: eye/lip ratios (None without the 203-point model).
        face_found: False when this frame had no face (previous landmarks reused).
        box: this frame's own crop box (left, top, right, bottom), None without landmarks.
    """

    index: int
    crop: np.ndarray
    landmarks: np.ndarray | None
    ratios: FaceRatios | None
    face_found: bool
    box: np.ndarray | None


@dataclass
class _Observation:
    index: int
    frame: np.ndarray
    points: np.ndarray | None
    ratios: FaceRatios | None
    found: bool
    box: np.ndarray | None


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class FaceTracker:
    """Follows one face from frame to frame (no crops)."""

    def __init__(self, detector: FaceDetector) -> None:
        self.detector = detector
        self.last: Detection | None = None

    def find(self, frame: np.ndarray) -> Detection | None:
        """The tracked face in this frame, or None (the last face is kept for re-acquisition)."""
        found = self._search_near(frame, self.last) if self.last is not None else None
        if found is None:
            faces = self.detector.detect(frame)
            if faces and self.last is None:
                found = faces[0]
            elif faces:
                found = min(faces, key=lambda f: float(np.linalg.norm(f.center - self.last.center)))
        if found is not None:
            self.last = found
        return found

    def _search_near(self, frame: np.ndarray, prev: Detection) -> Detection | None:
        h, w = frame.shape[:2]
        side = SEARCH_WINDOW * max(prev.width, prev.height)
        cx, cy = prev.center
        x0, y0 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
        x1, y1 = int(min(w, cx + side / 2)), int(min(h, cy + side / 2))
        if x1 - x0 < 24 or y1 - y0 < 24:
            return None
        scale = min(1.0, TRACK_FACE_PX / max(prev.width, prev.height))
        window = frame[y0:y1, x0:x1]
        if scale < 1.0:
            size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
            window = cv2.resize(window, size, interpolation=cv2.INTER_AREA)
        min_px = max(12, int(0.5 * max(prev.width, prev.height) * scale))
        faces = self.detector.detect(window, min_face_px=min_px)
        if not faces:
            return None
        faces = [
            f.shifted(x0, y0, 1.0 / scale) if scale < 1.0 else f.shifted(x0, y0) for f in faces
        ]
        best = max(faces, key=lambda f: _iou(f.box, prev.box))
        return best if _iou(best.box, prev.box) > 0.2 else None


class DrivingTracker:
    """Frames in (in order), crops out as soon as their box is known."""

    def __init__(
        self,
        detector: FaceDetector,
        width: int,
        height: int,
        crop_driving_video: bool = False,
        box_mode: str = "first_k",
        box_frames: int = 25,
        max_buffered: int = 600,
        total_frames: int = 0,
    ) -> None:
        if width <= 0 or height <= 0 or total_frames < 0:
            raise InvalidInputError(
                f"driving video size {width}x{height} ({total_frames} frames) is invalid",
                reason="bad_video",
            )
        if box_mode not in DRIVING_BOX_MODES:
            raise ValueError(f"box_mode must be one of {DRIVING_BOX_MODES}, got {box_mode!r}")
        self.detector = detector
        self.tracker = FaceTracker(detector)
        self.width, self.height = width, height
        self.resize_only = width == height and not crop_driving_video
        self.box_mode, self.box_frames, self.max_buffered = box_mode, box_frames, max_buffered
        self.total_frames = total_frames  # 0 = unknown
        if box_mode == "all" and not self.resize_only and total_frames > max_buffered:
            raise ResourceExhaustedError(
                f"box mode 'all' holds every frame back; {total_frames} frames exceed the limit "
                f"of {max_buffered}",
                reason="too_many_frames",
            )
        self.global_box: np.ndarray | None = None
        self._boxes: list[np.ndarray] = []
        self._pending: list[_Observation] = []
        self._last_points: np.ndarray | None = None
        self._last_ratios: FaceRatios | None = None
        self._last_box: np.ndarray | None = None
        self.frames_seen = 0
        self.faces_seen = 0

    def push(self, index: int, frame: np.ndarray) -> list[TrackedFrame]:
        """Add the next frame; returns the frames whose crops are ready (in order)."""
        if self.total_frames and index >= self.total_frames:
            raise InvalidInputError(
                f"driving frame {index} is beyond the announced {self.total_frames} frames",
                reason="bad_frame_order",
            )
        if index != self.frames_seen:
            raise InvalidInputError(
                f"driving frame {index} arrived, expected frame {self.frames_seen}",
                reason="bad_frame_order",
            )
        if frame.shape != (self.height, self.width, 3):
            raise InvalidInputError(
                f"driving frame {index} is {frame.shape[1]}x{frame.shape[0]}x{frame.shape[2]}, "
                f"expected {self.width}x{self.height}x3",
                reason="bad_frame_size",
            )
        self.frames_seen += 1
        obs = self._observe(index, frame)
        if self.resize_only:
            return [self._emit(obs, None)]
        if obs.box is not None:
            self._boxes.append(obs.box)
        self._pending.append(obs)
        return self._flush_ready()

    def finish(self) -> list[TrackedFrame]:
        """End of stream: emit what is still held back; raise when no frame had a face."""
        if self.total_frames and self.frames_seen != self.total_frames:
            raise InvalidInputError(
                f"the driving stream announced {self.total_frames} frames "
                f"but ended after {self.frames_seen}",
                reason="bad_frame_order",
            )
        if self.faces_seen == 0:
            raise FaceNotFoundError(
                f"no face found in any of the {self.frames_seen} driving frames "
                f"(frames 0..{max(0, self.frames_seen - 1)})"
            )
        if self.resize_only or not self._pending:
            return []
        if self.global_box is None:
            self.global_box = g.average_boxes(self._boxes)
        return self._drain()

    def _observe(self, index: int, frame: np.ndarray) -> _Observation:
        face = self.tracker.find(frame)
        if face is None:
            logger.debug("no face in driving frame %d", index)
            return _Observation(index, frame, self._last_points, self._last_ratios, False, None)
        points, lmk203 = self.detector.crop_points(frame, face)
        box_points = lmk203 if lmk203 is not None else points
        scale, vy = driving_box_params(box_points)
        box = g.box_ltrb(g.landmark_box(box_points, scale=scale, vy_ratio=vy)[0])
        self._last_points, self._last_ratios = box_points, ratios_from_203(lmk203)
        self.faces_seen += 1
        return _Observation(index, frame, box_points, self._last_ratios, True, box)

    def _flush_ready(self) -> list[TrackedFrame]:
        if self.box_mode == "per_frame":
            if not self._boxes:
                return self._check_buffer()
            return self._drain()
        if (
            self.global_box is None
            and self.box_mode == "first_k"
            and len(self._boxes) >= self.box_frames
        ):
            self.global_box = g.average_boxes(self._boxes)
            logger.info(
                "driving box fixed after %d frames",
                len(self._pending),
                extra={"box": [round(float(v), 1) for v in self.global_box]},
            )
        if self.global_box is None:
            return self._check_buffer()
        return self._drain()

    def _check_buffer(self) -> list[TrackedFrame]:
        if len(self._pending) <= self.max_buffered:
            return []
        if self._boxes and self.box_mode == "first_k":
            self.global_box = g.average_boxes(self._boxes)
            return self._drain()
        if not self._boxes:
            raise FaceNotFoundError(
                f"no face found in driving frames 0..{self.frames_seen - 1}", reason="no_face"
            )
        raise ResourceExhaustedError(
            f"box mode 'all' holds every frame back; {self.frames_seen} frames exceed the limit "
            f"of {self.max_buffered}",
            reason="too_many_frames",
        )

    def _drain(self) -> list[TrackedFrame]:
        out = []
        for obs in self._pending:
            if self.box_mode == "per_frame":
                if obs.box is not None:
                    self._last_box = obs.box
                box = self._last_box if self._last_box is not None else self._boxes[0]
            else:
                box = self.global_box
            out.append(self._emit(obs, box))
        self._pending = []
        return out

    def _emit(self, obs: _Observation, box: np.ndarray | None) -> TrackedFrame:
        if box is None:
            crop = g.resize_linear(obs.frame, g.NETWORK_INPUT)
        else:
            crop512 = g.crop_by_box(obs.frame, box, dsize=g.DRIVING_DSIZE)
            crop = g.resize_linear(crop512.image, g.NETWORK_INPUT)
        return TrackedFrame(
            index=obs.index,
            crop=crop,
            landmarks=obs.points,
            ratios=obs.ratios,
            face_found=obs.found,
            box=obs.box,
        )
