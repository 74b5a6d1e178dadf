"""AnimatorConfig.from_env: defaults, parsing and precise errors."""

from __future__ import annotations

import pytest
import torch

from services.animator import config as config_module
from services.animator.config import AnimatorConfig
from services.common.config import ConfigError


def test_defaults(tmp_path):
    cfg = AnimatorConfig.from_env({"ANIMATOR_WEIGHTS_DIR": str(tmp_path), "ANIMATOR_DEVICE": "cpu"})
    assert (cfg.weights_dir, cfg.device, cfg.dtype, cfg.batch_size) == (tmp_path, "cpu", "fp32", 8)
    assert (cfg.port, cfg.metrics_port, cfg.compile) == (50052, 9102, False)
    assert cfg.autocast_dtype is None
    assert cfg.log_level == "INFO"


def test_values(tmp_path):
    cfg = AnimatorConfig.from_env(
        {
            "ANIMATOR_WEIGHTS_DIR": str(tmp_path),
            "ANIMATOR_DEVICE": "cpu",
            "ANIMATOR_BATCH_SIZE": "4",
            "ANIMATOR_COMPILE": "yes",
            "ANIMATOR_MAX_FRAMES": "500",
            "ANIMATOR_PORT": "0",
            "ANIMATOR_METRICS_PORT": "0",
            "ANIMATOR_GRACE_S": "12.5",
            "LOG_LEVEL": "debug",
        }
    )
    assert (cfg.batch_size, cfg.compile, cfg.max_frames) == (4, True, 500)
    assert (cfg.port, cfg.grace_s) == (0, 12.5)
    assert cfg.log_level == "DEBUG"


@pytest.mark.parametrize(
    "env, name",
    [
        ({}, "ANIMATOR_WEIGHTS_DIR"),
        ({"ANIMATOR_WEIGHTS_DIR": "/nonexistent/weights"}, "ANIMATOR_WEIGHTS_DIR"),
        ({"ANIMATOR_DEVICE": "tpu"}, "ANIMATOR_DEVICE"),
        ({"ANIMATOR_DTYPE": "int8"}, "ANIMATOR_DTYPE"),
        ({"ANIMATOR_BATCH_SIZE": "0"}, "ANIMATOR_BATCH_SIZE"),
        ({"ANIMATOR_COMPILE": "maybe"}, "ANIMATOR_COMPILE"),
    ],
)
def test_errors_name_the_variable(tmp_path, env, name):
    base = {"ANIMATOR_WEIGHTS_DIR": str(tmp_path), "ANIMATOR_DEVICE": "cpu"}
    if name == "ANIMATOR_WEIGHTS_DIR":
        base.pop(name)
    with pytest.raises(ConfigError, match=name):
        AnimatorConfig.from_env({**base, **env})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_half_precision_needs_cuda(tmp_path):
    with pytest.raises(ConfigError, match="ANIMATOR_DTYPE"):
        AnimatorConfig.from_env({"ANIMATOR_WEIGHTS_DIR": str(tmp_path), "ANIMATOR_DTYPE": "fp16"})
    with pytest.raises(ConfigError, match="ANIMATOR_DEVICE"):
        AnimatorConfig.from_env({"ANIMATOR_WEIGHTS_DIR": str(tmp_path), "ANIMATOR_DEVICE": "cuda"})


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_cpu_needs_native_bf16(tmp_path, monkeypatch, native):
    monkeypatch.setattr(config_module, "cpu_has_bf16", lambda: native)
    env = {
        "ANIMATOR_WEIGHTS_DIR": str(tmp_path),
        "ANIMATOR_DEVICE": "cpu",
        "ANIMATOR_DTYPE": "bf16",
    }
    if native:
        cfg = AnimatorConfig.from_env(env)
        assert (cfg.dtype, cfg.autocast_dtype) == ("bf16", torch.bfloat16)
    else:
        with pytest.raises(ConfigError, match="AVX512-BF16 or AMX"):
            AnimatorConfig.from_env(env)
