"""bf16 autocast on a CPU with native bf16 units (AVX512-BF16 / AMX): the documented bounds.

Skipped on CPUs without them, where bf16 is refused (see test_pipeline / test_config). Runs on
the primary fixture set only: a precision bound, not a parity check.
The bounds (docs/performance.md): generated pixels within 6 levels of upstream's fp32 output
and within 1 level on average; driving keypoints within 0.05.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from services.animator import templates
from services.animator.motion_types import MotionOptions
from services.animator.pipeline import AnimatorPipeline, Ratios, cpu_has_bf16

pytestmark = pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bf16")


@pytest.fixture(scope="module")
def pipes(lp_primary):
    def build(dtype):
        return AnimatorPipeline.from_weights(
            lp_primary.checkpoints,
            device="cpu",
            input_size=lp_primary.image_size,
            batch_size=3,
            autocast_dtype=dtype,
        )

    return build(None), build(torch.bfloat16)


def _run(pipe, lp_primary):
    ref = lp_primary.npz("e2e_cli_default")
    frames = templates.load_pickle_template(lp_primary.path / "template_3f.pkl").frames
    state = pipe.prepare_source(
        torch.from_numpy(ref["prep0.I"]), Ratios(0.3, 0.3, 0.1), MotionOptions()
    )
    return ref, pipe.run_batch(state, frames, 0)


def test_bf16_runs_in_bf16_and_stays_within_bounds(pipes, lp_primary):
    fp32, bf16 = pipes
    ref, out32 = _run(fp32, lp_primary)
    _, out16 = _run(bf16, lp_primary)
    assert out16.image.dtype == torch.float32 and torch.isfinite(out16.image).all()
    # autocast really changed the arithmetic (a no-op context would give fp32's bits) ...
    assert float((out16.image - out32.image).abs().max()) > 0
    for i in range(3):
        # ... and stays within the documented bounds of upstream's fp32 result
        diff = np.abs(out16.images[i].astype(np.int16) - ref[f"frame{i}.I_p_uint8"])
        assert diff.max() <= 6 and diff.mean() < 1.0, (i, diff.max(), diff.mean())
        np.testing.assert_allclose(out16.x_d[i].numpy(), ref[f"frame{i}.x_d"][0], atol=0.05)
