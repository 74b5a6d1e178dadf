"""The ONNX Runtime backend of the animator: F, M and W+G from an export (onnx_export.py).

`OrtEngine` runs the three exported graphs with one execution-provider list, chosen from
`ANIMATOR_ORT_PROVIDERS` (default `tensorrt,cuda,cpu`: whichever this onnxruntime build has, in
that order; every requested provider that is missing is logged as a fallback). Inputs and
outputs are torch tensors on the pipeline's device, bound by pointer with IOBinding, so the
source features f_s made by F stay on the device for the whole job and W+G's frame is written
straight into a device tensor; nothing crosses the bus but keypoints in and uint8 frames out.

TensorRT (when first in the list): engines are cached in `trt_cache_dir` (a PVC in the chart,
so a pod restart does not rebuild them), one optimisation profile covers batch 1 to the
batcher's `batch_size` (optimised for `batch_size`), fp16 when the animator's dtype is fp16.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from services.animator.onnx_export import (
    MOTION_OUTPUTS,
    ExportError,
    OnnxExport,
    load_export,
)

logger = logging.getLogger(__name__)

PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
DEFAULT_PROVIDERS = ("tensorrt", "cuda", "cpu")
_GPU_PROVIDERS = {"TensorrtExecutionProvider", "CUDAExecutionProvider"}
_NP_TYPES = {torch.float32: np.float32, torch.float16: np.float16, torch.int64: np.int64}


def parse_providers(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """'tensorrt,cuda,cpu' (short or full ORT names) → short names; ValueError on unknown."""
    if text is None or text == "":
        return DEFAULT_PROVIDERS
    items = text.split(",") if isinstance(text, str) else list(text)
    full_to_short = {v.lower(): k for k, v in PROVIDER_NAMES.items()}
    out = []
    for item in items:
        key = item.strip().lower()
        key = full_to_short.get(key, key)
        if key not in PROVIDER_NAMES:
            raise ValueError(
                f"unknown ONNX Runtime provider {item.strip()!r}; choose from "
                f"{', '.join(PROVIDER_NAMES)}"
            )
        if key not in out:
            out.append(key)
    if not out:
        raise ValueError("no ONNX Runtime provider named")
    return tuple(out)


def select_providers(requested: Sequence[str], available: Sequence[str] | None = None) -> list[str]:
    """The requested providers (short names) this onnxruntime has, as full names, in order.
    Each missing one is logged (WARNING) as a fallback; none left → ExportError-free
    ValueError naming what is available."""
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    chosen = []
    for short in requested:
        name = PROVIDER_NAMES[short]
        if name in available:
            chosen.append(name)
        else:
            logger.warning(
                "ONNX Runtime provider %s is not available in this build (has %s); "
                "falling back to the next one",
                name,
                ", ".join(available),
            )
    if "TensorrtExecutionProvider" in chosen and "CUDAExecutionProvider" not in chosen:
        logger.warning(
            "TensorrtExecutionProvider without CUDAExecutionProvider behind it: nodes TensorRT "
            "cannot build (the 5-D GridSample before TensorRT 11.2.1) will run on the CPU; "
            "list cuda after tensorrt"
        )
    if not chosen:
        raise ValueError(
            f"none of the requested ONNX Runtime providers "
            f"({', '.join(requested)}) is available; this build has "
            f"{', '.join(available)}"
        )
    return chosen


def preload_tensorrt() -> str | None:
    """Import TensorRT's Python package, which loads its libnvinfer, and return its version.

    onnxruntime's TensorRT provider library names libnvinfer.so.<major> as a dependency, and
    pip's TensorRT wheels keep that library in their own folder, off the loader's path. Once
    the package has loaded it, the provider finds it among the loaded libraries by soname.
    None (and a warning) when it cannot be imported: the provider then fails to start and
    the session falls back to the next provider, which OrtEngine logs."""
    try:
        import tensorrt
    except (ImportError, OSError) as exc:
        logger.warning(
            "TensorRT's Python package cannot be imported (%s); onnxruntime's TensorRT "
            "provider will not find libnvinfer",
            exc,
        )
        return None
    return str(tensorrt.__version__)


def device_of(provider: str, device_id: int = 0) -> torch.device:
    """Where a provider wants its inputs: cuda:N for TensorRT/CUDA, else the CPU."""
    return torch.device("cuda", device_id) if provider in _GPU_PROVIDERS else torch.device("cpu")


def _provider_options(
    name: str,
    *,
    device_id: int,
    trt_cache_dir: Path | None,
    fp16: bool,
    profiles: dict[str, str] | None,
) -> dict[str, str]:
    if name == "TensorrtExecutionProvider":
        opts = {"device_id": str(device_id), "trt_fp16_enable": str(fp16)}
        if trt_cache_dir is not None:
            trt_cache_dir.mkdir(parents=True, exist_ok=True)
            opts.update(
                trt_engine_cache_enable="True",
                trt_engine_cache_path=str(trt_cache_dir),
                trt_timing_cache_enable="True",
                trt_timing_cache_path=str(trt_cache_dir),
            )
        if profiles:
            opts.update(profiles)
        return opts
    if name == "CUDAExecutionProvider":
        return {"device_id": str(device_id), "cudnn_conv_algo_search": "HEURISTIC"}
    return {}


def trt_profiles(
    shapes: dict[str, tuple[int, ...]], batch_dims: dict[str, int], max_batch: int
) -> dict[str, str]:
    """TensorRT optimisation-profile options: every dynamic batch dimension from 1 to
    `max_batch` (the batcher's largest batch), optimised for `max_batch`."""

    def spec(batch: int) -> str:
        parts = []
        for name, shape in shapes.items():
            dims = list(shape)
            if name in batch_dims:
                dims[batch_dims[name]] = batch
            parts.append(f"{name}:{'x'.join(str(d) for d in dims)}")
        return ",".join(parts)

    return {
        "trt_profile_min_shapes": spec(1),
        "trt_profile_opt_shapes": spec(max_batch),
        "trt_profile_max_shapes": spec(max_batch),
    }


class _Graph:
    """One ONNX Runtime session run through IOBinding on torch tensors."""

    def __init__(
        self,
        path: Path,
        providers: list[str],
        options: list[dict[str, str]],
        device: torch.device,
        profile_dir: Path | None = None,
    ) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        so.intra_op_num_threads = torch.get_num_threads()  # the same CPU share as torch's
        if profile_dir is not None:
            so.enable_profiling = True
            so.profile_file_prefix = str(profile_dir / path.stem)
        self.session = ort.InferenceSession(
            str(path), sess_options=so, providers=providers, provider_options=options
        )
        self.device = device
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.output_shapes = {o.name: o.shape for o in self.session.get_outputs()}

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def _bind(self, binding, name: str, tensor: torch.Tensor, output: bool) -> None:
        kind = "cuda" if tensor.device.type == "cuda" else "cpu"
        index = tensor.device.index or 0
        args = (name, kind, index, _NP_TYPES[tensor.dtype], list(tensor.shape), tensor.data_ptr())
        (binding.bind_output if output else binding.bind_input)(*args)

    def run(
        self, feeds: dict[str, torch.Tensor], out_shapes: dict[str, tuple[int, ...]]
    ) -> dict[str, torch.Tensor]:
        """Run with device tensors bound in place; outputs are allocated here (fp32)."""
        binding = self.session.io_binding()
        keep = []
        for name in self.inputs:
            tensor = feeds[name].to(self.device).contiguous()
            keep.append(tensor)
            self._bind(binding, name, tensor, output=False)
        outs = {
            name: torch.empty(out_shapes[name], dtype=torch.float32, device=self.device)
            for name in self.outputs
        }
        for name, tensor in outs.items():
            self._bind(binding, name, tensor, output=True)
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()  # inputs written by torch
        binding.synchronize_inputs()
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()  # ORT's stream is done with the outputs
        del keep
        return outs

    def end_profiling(self) -> str:
        return self.session.end_profiling()


class OrtEngine:
    """F, M and W+G of one export on one provider list (see the module docstring)."""

    def __init__(
        self,
        export: OnnxExport,
        *,
        providers: Sequence[str] = DEFAULT_PROVIDERS,
        device_id: int = 0,
        batch_size: int = 8,
        trt_cache_dir: str | Path | None = None,
        profile_dir: str | Path | None = None,
        available: Sequence[str] | None = None,
    ) -> None:
        self.export = export
        self.batch_size = batch_size
        chosen = select_providers(providers, available)
        self.device = device_of(chosen[0], device_id)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ExportError(
                f"{chosen[0]} is in this onnxruntime build but torch sees no CUDA device "
                "(no GPU, no driver, or a CPU torch wheel); run on a GPU node or set "
                "ANIMATOR_ORT_PROVIDERS=cpu",
                reason="bad_backend",
            )
        self.tensorrt = preload_tensorrt() if "TensorrtExecutionProvider" in chosen else None
        if self.tensorrt:
            logger.info("TensorRT %s loaded for onnxruntime's TensorRT provider", self.tensorrt)
        fp16 = export.precision == "fp16"
        cache = Path(trt_cache_dir) if trt_cache_dir else None
        profile = Path(profile_dir) if profile_dir else None
        m = export.manifest
        self.input_size = int(m["input_size"])
        self.num_kp = int(m["num_kp"])
        image = (batch_size, 3, self.input_size, self.input_size)
        self.F = self._graph(
            export.path("appearance"),
            chosen,
            device_id,
            cache,
            fp16,
            profile,
            {"image": image},
            {"image": 0},
        )
        self.f_s_shape = tuple(self.F.output_shapes["f_s"][1:])  # C×D×h×w (static)
        self.M = self._graph(
            export.path("motion"),
            chosen,
            device_id,
            cache,
            fp16,
            profile,
            {"image": image},
            {"image": 0},
        )
        kp = (batch_size, self.num_kp, 3)
        self.WG = self._graph(
            export.path("warp_decode"),
            chosen,
            device_id,
            cache,
            fp16,
            profile,
            {
                "f_s": (batch_size, *self.f_s_shape),
                "source_index": (batch_size,),
                "x_s": kp,
                "x_d": kp,
            },
            {"f_s": 0, "source_index": 0, "x_s": 0, "x_d": 0},
        )
        self.frame_shape = tuple(self.WG.output_shapes["frame"][1:])  # 3×H×W
        self.provider = self.WG.providers[0]
        if self.provider != chosen[0]:
            logger.warning(
                "onnxruntime could not start %s for W+G; running on %s", chosen[0], self.provider
            )
            self.device = device_of(self.provider, device_id)
            for graph in (self.F, self.M, self.WG):
                graph.device = self.device
        logger.info(
            "animator backend onnxruntime: provider %s (of %s), device %s, export %s "
            "(%s, opset %s, %s sampler)",
            self.provider,
            ", ".join(chosen),
            self.device,
            export.folder,
            export.precision,
            m["opset"],
            m["sampler"],
        )

    def _graph(
        self,
        path: Path,
        chosen: list[str],
        device_id: int,
        cache: Path | None,
        fp16: bool,
        profile: Path | None,
        shapes: dict[str, tuple[int, ...]],
        batch_dims: dict[str, int],
    ) -> _Graph:
        profiles = trt_profiles(shapes, batch_dims, self.batch_size)
        options = [
            _provider_options(
                name, device_id=device_id, trt_cache_dir=cache, fp16=fp16, profiles=profiles
            )
            for name in chosen
        ]
        return _Graph(path, chosen, options, device_of(chosen[0], device_id), profile)

    @property
    def label(self) -> str:
        """'onnxruntime/<provider>' as GetInfo and the metrics name the backend."""
        return f"onnxruntime/{self.provider}"

    def appearance(self, images: torch.Tensor) -> torch.Tensor:
        """N×3×S×S → f_s N×C×D×h×w on the device."""
        n = images.shape[0]
        return self.F.run({"image": images.float()}, {"f_s": (n, *self.f_s_shape)})["f_s"]

    def motion(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """N×3×S×S → M's raw heads by name."""
        n = images.shape[0]
        shapes = {name: (n, *self.M.output_shapes[name][1:]) for name in MOTION_OUTPUTS}
        return self.M.run({"image": images.float()}, shapes)

    def warp_decode(self, f_s: torch.Tensor, x_s: torch.Tensor, x_d: torch.Tensor) -> torch.Tensor:
        """W+G: f_s 1 or B×C×D×h×w, x_s/x_d B×K×3 → frames B×3×H×W in (0, 1)."""
        b = x_d.shape[0]
        if f_s.shape[0] == 1:
            index = torch.zeros(b, dtype=torch.int64, device=self.device)
        elif f_s.shape[0] == b:
            index = torch.arange(b, dtype=torch.int64, device=self.device)
        else:
            raise ValueError(f"f_s batch {f_s.shape[0]} is neither 1 nor the frame batch {b}")
        feeds = {"f_s": f_s.float(), "source_index": index, "x_s": x_s.float(), "x_d": x_d.float()}
        return self.WG.run(feeds, {"frame": (b, *self.frame_shape)})["frame"]

    def end_profiling(self) -> list[str]:
        """Finish ORT profiling (profile_dir set) and return the JSON trace files."""
        return [g.end_profiling() for g in (self.F, self.M, self.WG)]


def open_engine(export_dir: str | Path, fingerprint: str, **kwargs) -> OrtEngine:
    """load_export (refuses a stale export) + OrtEngine."""
    return OrtEngine(load_export(export_dir, fingerprint), **kwargs)
