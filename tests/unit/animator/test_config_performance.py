"""AnimatorConfig: the cross-job batching, channels-last and compile-mode settings."""

from __future__ import annotations

import pytest

from services.animator.config import AnimatorConfig
from services.animator.servicer import AnimatorServicer
from services.common.config import ConfigError


def test_defaults(tmp_path):
    cfg = AnimatorConfig.from_env({"ANIMATOR_WEIGHTS_DIR": str(tmp_path), "ANIMATOR_DEVICE": "cpu"})
    assert (cfg.max_jobs, cfg.max_wait_ms, cfg.channels_last) == (8, 10.0, False)
    assert cfg.compile_mode == "default"


def test_values(tmp_path):
    cfg = AnimatorConfig.from_env(
        {
            "ANIMATOR_WEIGHTS_DIR": str(tmp_path),
            "ANIMATOR_DEVICE": "cpu",
            "ANIMATOR_MAX_JOBS": "3",
            "ANIMATOR_MAX_WAIT_MS": "2.5",
            "ANIMATOR_CHANNELS_LAST": "true",
            "ANIMATOR_COMPILE_MODE": "reduce-overhead",
        }
    )
    assert (cfg.max_jobs, cfg.max_wait_ms, cfg.channels_last) == (3, 2.5, True)
    assert cfg.compile_mode == "reduce-overhead"


@pytest.mark.parametrize(
    "env, name",
    [
        ({"ANIMATOR_MAX_JOBS": "0"}, "ANIMATOR_MAX_JOBS"),
        ({"ANIMATOR_MAX_WAIT_MS": "-1"}, "ANIMATOR_MAX_WAIT_MS"),
        ({"ANIMATOR_COMPILE_MODE": "fast"}, "ANIMATOR_COMPILE_MODE"),
    ],
)
def test_errors_name_the_variable(tmp_path, env, name):
    with pytest.raises(ConfigError, match=name):
        AnimatorConfig.from_env(
            {"ANIMATOR_WEIGHTS_DIR": str(tmp_path), "ANIMATOR_DEVICE": "cpu", **env}
        )


def test_servicer_starts_its_batcher_on_attach(lp_primary):
    from services.animator.pipeline import AnimatorPipeline

    pipe = AnimatorPipeline.from_weights(
        lp_primary.checkpoints, input_size=lp_primary.image_size, batch_size=2
    )
    servicer = AnimatorServicer(max_jobs=2, max_wait_ms=5.0)
    assert servicer.batcher is None
    servicer.attach(pipe)
    try:
        assert servicer.batcher.max_jobs == 2 and servicer.batcher.max_wait_s == 0.005
        assert servicer.batcher.max_batch == 2
    finally:
        servicer.close()


def test_mid_config_builds_and_generates_64px(tmp_path):
    """`dynamics weights random --config mid` writes weights the pipeline loads (32 px in,
    64 px out)."""
    import numpy as np

    from services.animator.motion_types import MotionOptions
    from services.animator.pipeline import AnimatorPipeline, Ratios
    from services.animator.weights_cli import main as weights_main

    assert weights_main(["random", "--config", "mid", str(tmp_path / "w")]) == 0
    pipe = AnimatorPipeline.from_weights(tmp_path / "w", batch_size=2)
    assert pipe.input_size == 32
    crop = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    state = pipe.prepare_source(crop, Ratios(0.3, 0.3, 0.1), MotionOptions())
    frames = pipe.extract_motion([crop, crop], [Ratios(0.3, 0.3, 0.1)] * 2)
    images = list(pipe.generate(state, frames, 0))
    assert [i.shape for i in images] == [(64, 64, 3)] * 2
