"""EncoderConfig.from_env: defaults, parsing and precise errors."""

from __future__ import annotations

import pytest

from services.common.config import ConfigError
from services.encoder.config import EncoderConfig


def test_defaults():
    cfg = EncoderConfig.from_env({})
    assert (cfg.crf, cfg.preset, cfg.ffmpeg, cfg.ffprobe) == (18, "veryfast", "ffmpeg", "ffprobe")
    assert (cfg.port, cfg.metrics_port, cfg.tmp_dir, cfg.log_level) == (50053, 9103, None, "INFO")
    assert cfg.max_frames == 1800 and cfg.grace_s == 10.0


def test_values_from_environment():
    cfg = EncoderConfig.from_env(
        {
            "ENCODER_CRF": "23",
            "ENCODER_PRESET": "Medium",
            "ENCODER_FFMPEG": "/opt/ff/ffmpeg",
            "ENCODER_TMP_DIR": "/scratch",
            "ENCODER_MAX_FRAMES": "300",
            "ENCODER_PORT": "0",
            "ENCODER_METRICS_PORT": "0",
            "ENCODER_GRACE_S": "2.5",
            "LOG_LEVEL": "debug",
        }
    )
    assert (cfg.crf, cfg.preset, cfg.ffmpeg) == (23, "medium", "/opt/ff/ffmpeg")
    assert cfg.tmp_dir == "/scratch"
    assert (cfg.max_frames, cfg.port, cfg.metrics_port, cfg.grace_s) == (300, 0, 0, 2.5)
    assert cfg.log_level == "DEBUG"


@pytest.mark.parametrize(
    "name,value,expected",
    [
        ("ENCODER_CRF", "52", "<= 51"),
        ("ENCODER_CRF", "high", "an integer"),
        ("ENCODER_PRESET", "turbo", "veryfast"),
        ("ENCODER_MAX_FRAMES", "0", ">= 1"),
        ("ENCODER_PORT", "70000", "<= 65535"),
        ("ENCODER_AUDIO_BITRATE", "lots", "128k"),
    ],
)
def test_bad_values_name_the_variable(name, value, expected):
    with pytest.raises(ConfigError, match=name) as info:
        EncoderConfig.from_env({name: value})
    assert expected in str(info.value)
