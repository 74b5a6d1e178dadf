"""Prometheus metrics of the face detection service (names fixed by the dashboards)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

FACES = Counter(
    "face_detect_faces_total",
    "Faces found (Detect / DetectSource: all faces of the "
    "image; TrackDriving: one per frame where the tracked face was found).",
)
FRAMES = Counter("face_detect_frames_total", "Driving frames tracked and cropped.")
SECONDS = Histogram(
    "face_detect_seconds",
    "Wall time of one analysis: kind=source per photo (Detect, DetectSource), "
    "kind=driving per driving frame (tracking + crop).",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
