"""The onnxruntime backend on GPU providers (skipped without CUDA; bench/gpu_check.sh runs them
with onnxruntime-gpu and tensorrt installed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.gpu_check import gridsample_placement, placement_verdict
from services.animator import ort_backend, templates
from services.animator.motion_types import MotionOptions
from services.animator.pipeline import AnimatorPipeline, Ratios
from tests.unit.animator.ort_export_cache import primary_export

pytestmark = pytest.mark.gpu


def _has(provider: str) -> bool:
    """In this onnxruntime build, and (TensorRT) its libraries importable: the GPU check
    installs TensorRT separately and carries on without it when pypi.nvidia.com is out of
    reach."""
    import onnxruntime as ort

    if provider == "TensorrtExecutionProvider" and ort_backend.preload_tensorrt() is None:
        return False
    return provider in ort.get_available_providers()


def _frames(pipe, lp_primary):
    ref = lp_primary.npz("e2e_cli_default")
    frames = templates.load_pickle_template(lp_primary.path / "template_3f.pkl").frames
    state = pipe.prepare_source(
        torch.from_numpy(ref["prep0.I"]), Ratios(0.3, 0.3, 0.1), MotionOptions()
    )
    return pipe.run_batch(state, frames, 0)


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_gpu_provider_matches_torch_fp32_on_cuda(lp_primary, provider, tmp_path):
    full = ort_backend.PROVIDER_NAMES[provider]
    if not _has(full):
        pytest.skip(f"{full} is not in this onnxruntime, or TensorRT is not installed")
    kwargs = {"input_size": lp_primary.image_size, "batch_size": 3, "device": "cuda"}
    torch_pipe = AnimatorPipeline.from_weights(lp_primary.checkpoints, **kwargs)
    ort_pipe = AnimatorPipeline.from_weights(
        lp_primary.checkpoints,
        backend="onnxruntime",
        onnx_dir=primary_export().folder,
        ort_providers=[provider, "cuda"] if provider == "tensorrt" else [provider],
        trt_cache_dir=tmp_path / "trt",
        **kwargs,
    )
    assert ort_pipe.backend == f"onnxruntime/{full}" and ort_pipe.device.type == "cuda"
    want, got = _frames(torch_pipe, lp_primary), _frames(ort_pipe, lp_primary)
    assert got.image.device.type == "cuda"  # IOBinding wrote the frame on the device
    diff = np.abs(got.images.astype(np.int16) - want.images.astype(np.int16))
    assert diff.max() <= 1
    if provider == "tensorrt":
        assert any((tmp_path / "trt").iterdir())  # the engine cache was written


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_gridsample_never_runs_on_the_cpu_provider(tmp_path, provider):
    full = ort_backend.PROVIDER_NAMES[provider]
    if not _has(full):
        pytest.skip(f"{full} is not in this onnxruntime, or TensorRT is not installed")
    chain = ["tensorrt", "cuda"] if provider == "tensorrt" else ["cuda"]
    engine = ort_backend.OrtEngine(
        primary_export(),
        providers=chain,
        batch_size=2,
        profile_dir=tmp_path,
        trt_cache_dir=tmp_path / "trt",
    )
    assert engine.provider == full  # the provider really started (TensorRT: libnvinfer found)
    f_s = torch.zeros(1, *engine.f_s_shape, device="cuda")
    kp = torch.zeros(2, engine.num_kp, 3, device="cuda")
    engine.warp_decode(f_s, kp, kp + 0.01)
    verdict = placement_verdict(engine.provider, gridsample_placement(engine.end_profiling()))
    assert verdict["on_gpu"], verdict
