"""Face detection service settings, read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.common.config import (
    DEFAULT_BIND_HOST,
    ConfigError,
    env_bind_host,
    env_choice,
    env_float,
    env_int,
    env_optional,
    env_port,
    env_str,
)

BACKENDS = ("mtcnn", "insightface")
# How the driving box of SPEC 6.4 is formed (docs/face_detect.md):
#   first_k   - mean box of the first K frames with a face, then fixed; crops stream after K frames
#   all       - upstream's mean over every frame; exact, but no crop leaves before the last frame
#   per_frame - every frame cropped by its own box (follows large motion, jitters with landmarks)
DRIVING_BOX_MODES = ("first_k", "all", "per_frame")


@dataclass(frozen=True)
class FaceDetectConfig:
    """Everything the face detection service needs; built by `from_env`, passed explicitly."""

    backend: str = "mtcnn"
    model_dir: Path | None = (
        None  # mtcnn: optional folder with {p,r,o}net.pt; insightface: required
    )
    landmark_model: Path | None = None  # optional upstream landmark.onnx (203 points)
    min_face_px: int = 32  # a chosen source face smaller than this is refused
    threshold: float | None = None  # detector score threshold; None = the backend's default
    source_max_dim: int = 1280
    driving_box_mode: str = "first_k"
    driving_box_frames: int = 25  # K of first_k: one second at 25 fps
    max_buffered_frames: int = 600  # frames held back while a driving box is being formed
    port: int = 50051
    metrics_port: int = 9101
    bind_host: str = DEFAULT_BIND_HOST  # gRPC + metrics listen address (env_bind_host)
    grace_s: float = 10.0
    max_workers: int = 4
    torch_threads: int = 1  # MTCNN's small convolutions gain nothing from intra-op threads
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> FaceDetectConfig:
        """Read FACE_DETECT_* (and LOG_LEVEL) variables; raise ConfigError on bad values."""
        backend = env_choice(environ, "FACE_DETECT_BACKEND", BACKENDS, "mtcnn")
        model_dir = env_optional(environ, "FACE_DETECT_MODEL_DIR")
        if backend == "insightface" and model_dir is None:
            raise ConfigError(
                "FACE_DETECT_MODEL_DIR",
                None,
                "the folder holding det_10g.onnx and 2d106det.onnx (required by insightface)",
            )
        landmark = env_optional(environ, "FACE_DETECT_LANDMARK_MODEL")
        threshold = env_optional(environ, "FACE_DETECT_THRESHOLD")
        return cls(
            backend=backend,
            model_dir=Path(model_dir).expanduser() if model_dir else None,
            landmark_model=Path(landmark).expanduser() if landmark else None,
            min_face_px=env_int(environ, "FACE_DETECT_MIN_FACE_PX", 32, minimum=1),
            threshold=None
            if threshold is None
            else env_float(environ, "FACE_DETECT_THRESHOLD", 0.5, minimum=0.0, maximum=1.0),
            source_max_dim=env_int(environ, "FACE_DETECT_SOURCE_MAX_DIM", 1280, minimum=64),
            driving_box_mode=env_choice(
                environ, "FACE_DETECT_DRIVING_BOX", DRIVING_BOX_MODES, "first_k"
            ),
            driving_box_frames=env_int(environ, "FACE_DETECT_DRIVING_BOX_FRAMES", 25, minimum=1),
            max_buffered_frames=env_int(environ, "FACE_DETECT_MAX_BUFFERED_FRAMES", 600, minimum=1),
            port=env_port(environ, "FACE_DETECT_PORT", 50051),
            metrics_port=env_port(environ, "FACE_DETECT_METRICS_PORT", 9101),
            bind_host=env_bind_host(environ, "FACE_DETECT"),
            grace_s=env_float(environ, "FACE_DETECT_GRACE_S", 10.0, minimum=0.0),
            max_workers=env_int(environ, "FACE_DETECT_MAX_WORKERS", 4, minimum=1),
            torch_threads=env_int(environ, "FACE_DETECT_TORCH_THREADS", 1, minimum=1),
            log_level=env_str(environ, "LOG_LEVEL", "INFO").upper(),
        )
