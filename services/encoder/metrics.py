"""Prometheus metrics of the encoder (names fixed by the dashboards)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

ENCODER_FRAMES = Counter("encoder_frames_total", "Frames written into FFmpeg.")
ENCODER_FFMPEG_SECONDS = Histogram(
    "encoder_ffmpeg_seconds",
    "Wall time of one encode, from FFmpeg's start (first frame) until the MP4 is complete.",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300),
)
