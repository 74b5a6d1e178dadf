"""Animator service settings, read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from services.animator.pipeline import cpu_has_bf16
from services.common.config import (
    DEFAULT_BIND_HOST,
    ConfigError,
    env_bind_host,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_path,
    env_port,
)

DEVICES = ("auto", "cpu", "cuda")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
LOG_LEVELS = ("debug", "info", "warning", "error")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
BACKENDS = ("torch", "onnxruntime")


@dataclass(frozen=True)
class AnimatorConfig:
    """Everything the animator service needs; built by `from_env`, passed explicitly."""

    weights_dir: Path
    device: str = "cpu"  # resolved: "cpu" or "cuda"
    dtype: str = "fp32"  # fp32 = eager fp32; fp16/bf16 = autocast (CPU: bf16 with AVX512-BF16/AMX)
    batch_size: int = 8
    compile: bool = False
    compile_mode: str = "default"  # torch.compile mode; "reduce-overhead" = CUDA graphs
    max_frames: int = 3000  # longest job (frames) one Animate call may stream
    queue_frames: int = 16  # driving frames buffered per call before back-pressure
    max_jobs: int = 8  # concurrent Animate calls sharing the device; more get RESOURCE_EXHAUSTED
    max_wait_ms: float = 10.0  # how long a batch may wait for other jobs' frames
    channels_last: bool = False  # CUDA: G's 2-D convolutions in NHWC
    input_size: int = 0  # network input side; 0 = the weights' config (image_size) or 256
    port: int = 50052
    metrics_port: int = 9102
    bind_host: str = DEFAULT_BIND_HOST  # gRPC + metrics listen address (env_bind_host)
    grace_s: float = 300.0
    max_workers: int = 4
    log_level: str = "INFO"
    backend: str = "torch"  # torch | onnxruntime (F, M, W+G from an export-onnx folder)
    onnx_dir: Path | None = None  # the export; None = WEIGHTS_DIR/onnx
    ort_providers: tuple[str, ...] = ("tensorrt", "cuda", "cpu")  # wanted, in order
    trt_cache_dir: Path | None = None  # TensorRT engine cache (a PVC in the chart)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """None for fp32, else the autocast dtype."""
        return None if self.dtype == "fp32" else DTYPES[self.dtype]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> AnimatorConfig:
        """Read ANIMATOR_* (and LOG_LEVEL) variables; raise ConfigError on bad values."""
        device = _resolve_device(env_choice(environ, "ANIMATOR_DEVICE", DEVICES, "auto"))
        dtype = env_choice(environ, "ANIMATOR_DTYPE", tuple(DTYPES), "fp32")
        if dtype == "fp16" and device != "cuda":
            raise ConfigError(
                "ANIMATOR_DTYPE", dtype, "fp32 or bf16 unless ANIMATOR_DEVICE is cuda"
            )
        if dtype == "bf16" and device == "cpu" and not cpu_has_bf16():
            raise ConfigError(
                "ANIMATOR_DTYPE", dtype, "fp32 on this CPU (bf16 needs AVX512-BF16 or AMX)"
            )
        return cls(
            weights_dir=env_path(environ, "ANIMATOR_WEIGHTS_DIR", must_exist=True),
            device=device,
            dtype=dtype,
            batch_size=env_int(environ, "ANIMATOR_BATCH_SIZE", 8, minimum=1, maximum=256),
            compile=env_bool(environ, "ANIMATOR_COMPILE", False),
            compile_mode=env_choice(environ, "ANIMATOR_COMPILE_MODE", COMPILE_MODES, "default"),
            max_frames=env_int(environ, "ANIMATOR_MAX_FRAMES", 3000, minimum=1),
            queue_frames=env_int(environ, "ANIMATOR_QUEUE_FRAMES", 16, minimum=1),
            max_jobs=env_int(environ, "ANIMATOR_MAX_JOBS", 8, minimum=1, maximum=1024),
            max_wait_ms=env_float(
                environ, "ANIMATOR_MAX_WAIT_MS", 10.0, minimum=0.0, maximum=10000.0
            ),
            channels_last=env_bool(environ, "ANIMATOR_CHANNELS_LAST", False),
            input_size=env_int(environ, "ANIMATOR_INPUT_SIZE", 0, minimum=0, maximum=4096),
            port=env_port(environ, "ANIMATOR_PORT", 50052),
            metrics_port=env_port(environ, "ANIMATOR_METRICS_PORT", 9102),
            bind_host=env_bind_host(environ, "ANIMATOR"),
            grace_s=env_float(environ, "ANIMATOR_GRACE_S", 300.0, minimum=0.0),
            max_workers=env_int(environ, "ANIMATOR_MAX_WORKERS", 4, minimum=1, maximum=64),
            log_level=env_choice(environ, "LOG_LEVEL", LOG_LEVELS, "info").upper(),
            backend=env_choice(environ, "ANIMATOR_BACKEND", BACKENDS, "torch"),
            onnx_dir=_optional_path(environ, "ANIMATOR_ONNX_DIR"),
            ort_providers=_providers(environ),
            trt_cache_dir=_optional_path(environ, "ANIMATOR_TRT_CACHE_DIR"),
        )


def _optional_path(environ: Mapping[str, str], name: str) -> Path | None:
    value = environ.get(name, "").strip()
    return Path(value) if value else None


def _providers(environ: Mapping[str, str]) -> tuple[str, ...]:
    from services.animator.ort_backend import parse_providers

    value = environ.get("ANIMATOR_ORT_PROVIDERS", "")
    try:
        return parse_providers(value)
    except ValueError as exc:
        raise ConfigError(
            "ANIMATOR_ORT_PROVIDERS", value, "a comma list of tensorrt, cuda, cpu"
        ) from exc


def _resolve_device(choice: str) -> str:
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("ANIMATOR_DEVICE", choice, "cpu or auto: CUDA is not available here")
    return choice
