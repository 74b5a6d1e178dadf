"""Encoder service settings, read once from the environment."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from services.common.config import (
    DEFAULT_BIND_HOST,
    ConfigError,
    env_bind_host,
    env_float,
    env_int,
    env_port,
    env_str,
)

# x264 presets, fastest to slowest (x264 --help); anything else is refused at start-up.
X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)

# The defaults and why (docs/encoder.md): CRF 18 is what upstream LivePortrait's writer uses and
# is visually transparent for 512-1280 px faces; "veryfast" keeps libx264 far ahead of the
# animator on one CPU core (250 frames of 512x512 in about 1 s) at a modest size cost.
DEFAULT_CRF = 18
DEFAULT_PRESET = "veryfast"


@dataclass(frozen=True)
class EncoderConfig:
    """Everything the encoder needs; built by `from_env` in `__main__`, passed explicitly."""

    crf: int = DEFAULT_CRF
    preset: str = DEFAULT_PRESET
    ffmpeg: str = "ffmpeg"
    ffprobe: str = "ffprobe"
    tmp_dir: str | None = None  # None: the system temp dir (an emptyDir in Kubernetes)
    max_frames: int = 1800  # 60 s at 30 fps; jobs are 5 or 10 s
    max_audio_bytes: int = 200 * 1024 * 1024
    audio_bitrate: str = "128k"
    port: int = 50053
    metrics_port: int = 9103
    bind_host: str = DEFAULT_BIND_HOST  # gRPC + metrics listen address (env_bind_host)
    grace_s: float = 10.0
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> EncoderConfig:
        """Read ENCODER_* (and LOG_LEVEL) variables; raise ConfigError on bad values."""
        preset = env_str(environ, "ENCODER_PRESET", DEFAULT_PRESET).lower()
        if preset not in X264_PRESETS:
            raise ConfigError("ENCODER_PRESET", preset, "one of " + ", ".join(X264_PRESETS))
        tmp_dir = env_str(environ, "ENCODER_TMP_DIR", "") or None
        bitrate = env_str(environ, "ENCODER_AUDIO_BITRATE", "128k")
        if not re.fullmatch(r"[1-9][0-9]*[kKmM]?", bitrate):
            raise ConfigError("ENCODER_AUDIO_BITRATE", bitrate, "a bit rate such as 128k")
        return cls(
            crf=env_int(environ, "ENCODER_CRF", DEFAULT_CRF, minimum=0, maximum=51),
            preset=preset,
            ffmpeg=env_str(environ, "ENCODER_FFMPEG", "ffmpeg"),
            ffprobe=env_str(environ, "ENCODER_FFPROBE", "ffprobe"),
            tmp_dir=tmp_dir,
            max_frames=env_int(environ, "ENCODER_MAX_FRAMES", 1800, minimum=1),
            max_audio_bytes=env_int(
                environ, "ENCODER_MAX_AUDIO_BYTES", 200 * 1024 * 1024, minimum=1
            ),
            audio_bitrate=bitrate,
            port=env_port(environ, "ENCODER_PORT", 50053),
            metrics_port=env_port(environ, "ENCODER_METRICS_PORT", 9103),
            bind_host=env_bind_host(environ, "ENCODER"),
            grace_s=env_float(environ, "ENCODER_GRACE_S", 10.0, minimum=0.0),
            log_level=env_str(environ, "LOG_LEVEL", "INFO").upper(),
        )
