"""CUDA paths of the pipeline (skipped without CUDA): fp32 parity and autocast sanity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from services.animator import templates
from services.animator.motion_types import MotionOptions
from services.animator.pipeline import AnimatorPipeline, Ratios

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def scenario(lp_set):
    ref = lp_set.npz("e2e_cli_default")
    return ref, templates.load_pickle_template(lp_set.path / "template_3f.pkl").frames


def _run(lp_set, scenario, autocast_dtype=None):
    ref, frames = scenario
    pipe = AnimatorPipeline.from_weights(
        lp_set.checkpoints,
        device="cuda",
        input_size=lp_set.image_size,
        batch_size=3,
        autocast_dtype=autocast_dtype,
    )
    state = pipe.prepare_source(
        torch.from_numpy(ref["prep0.I"]), Ratios(0.3, 0.3, 0.1), MotionOptions()
    )
    return ref, pipe.run_batch(state, frames, 0)


def test_cuda_fp32_matches_reference(lp_set, scenario):
    ref, out = _run(lp_set, scenario)
    for i in range(3):
        np.testing.assert_allclose(out.x_d[i].cpu().numpy(), ref[f"frame{i}.x_d"][0], atol=1e-4)
        diff = np.abs(out.images[i].astype(np.int16) - ref[f"frame{i}.I_p_uint8"])
        assert diff.max() <= 2


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_stays_close(lp_set, scenario, dtype):
    ref, out = _run(lp_set, scenario, dtype)
    assert out.image.dtype == torch.float32 and torch.isfinite(out.image).all()
    for i in range(3):
        diff = np.abs(out.images[i].astype(np.int16) - ref[f"frame{i}.I_p_uint8"])
        assert diff.mean() < 2.0
