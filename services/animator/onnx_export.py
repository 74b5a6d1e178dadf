"""ONNX export of the animator's networks, and the manifest that ties an export to its weights.

`export_onnx(weights_dir, out_dir)` writes three graphs with `torch.onnx.export(dynamo=True)`:

- `warp_decode.onnx`: W + G fused. Inputs `f_s` (S×C×D×h×w: the source feature volumes, one
  per job in the batch, computed once per job), `source_index` (B int64: which volume each
  frame warps), `x_s`, `x_d` (B×K×3 source / driving keypoints); output `frame` (B×3×H×W float
  in (0, 1), G's output). S and B are dynamic: one job is S = 1, cross-job batches stack their
  jobs' volumes.
- `appearance.onnx` (F): `image` B×3×S×S → `f_s`.
- `motion.onnx` (M): `image` B×3×S×S → M's seven heads (`MOTION_OUTPUTS`).

The trace uses an example batch of 2 (a batch of 1 would specialise the dimension) with
distinct tensors for every input (the exporter merges inputs traced with one tensor object).
Opset 20 is the first with a rank-5 GridSample that ONNX Runtime's CUDA kernel accepts; lower
opsets need `gather_sampler=True` (W's two 5-D samplers as eight gathers, no GridSample node).
`fp16=True` stores and runs the networks in half precision with fp32 inputs/outputs, and keeps
every grid sample in fp32 (cast in, cast out).

`DYNAMICS_ONNX_MANIFEST.json` records the weights' model fingerprint, the opset, precision,
sampler, input size and the torch/onnx versions, plus each graph's sha256. `load_export` refuses
an export whose fingerprint is not the loaded weights' (a stale export) or whose files changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from services.animator.gather_sampler import sampler_for_export
from services.animator.weights import load_models
from services.common.errors import FailedPreconditionError

logger = logging.getLogger(__name__)

MANIFEST = "DYNAMICS_ONNX_MANIFEST.json"
FORMAT = 1
MIN_GRIDSAMPLE_OPSET = 20
MIN_OPSET = 18  # the dynamo exporter's floor
WARP_DECODE = "warp_decode.onnx"
APPEARANCE = "appearance.onnx"
MOTION = "motion.onnx"
MOTION_OUTPUTS = ("pitch", "yaw", "roll", "t", "exp", "scale", "kp")
MAX_EXPORT_BATCH = 256  # the batch dimension's upper bound in the exported graphs
EXAMPLE_BATCH = 2


class ExportError(FailedPreconditionError):
    """An export cannot be written, or an existing export does not fit the loaded weights."""

    def __init__(self, message: str, *, reason: str = "bad_export") -> None:
        super().__init__(message, reason=reason)


class WarpDecode(nn.Module):
    """W + G for B frames of one or more jobs: (f_s S×…, source_index B, x_s, x_d) → frame."""

    def __init__(self, W: nn.Module, G: nn.Module, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.W = W
        self.G = G
        self.dtype = dtype

    def forward(
        self, f_s: torch.Tensor, source_index: torch.Tensor, x_s: torch.Tensor, x_d: torch.Tensor
    ) -> torch.Tensor:
        feature = torch.index_select(f_s, 0, source_index).to(self.dtype)  # B×C×D×h×w
        warped = self.W(feature, kp_driving=x_d.to(self.dtype), kp_source=x_s.to(self.dtype))
        return self.G(feature=warped["out"]).float()  # B×3×H×W


class Appearance(nn.Module):
    def __init__(self, F: nn.Module, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.F = F
        self.dtype = dtype

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.F(image.to(self.dtype)).float()


class Motion(nn.Module):
    def __init__(self, M: nn.Module, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.M = M
        self.dtype = dtype

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raw = self.M(image.to(self.dtype))
        return tuple(raw[name].float() for name in MOTION_OUTPUTS)


@dataclass(frozen=True)
class OnnxExport:
    """A checked export folder: its manifest and the paths of its graphs."""

    folder: Path
    manifest: dict[str, Any]

    def path(self, name: str) -> Path:
        return self.folder / self.manifest["files"][name]["file"]

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def precision(self) -> str:
        return self.manifest["precision"]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    import onnx

    versions = {"torch": torch.__version__, "onnx": onnx.__version__}
    try:
        import onnxscript

        versions["onnxscript"] = onnxscript.__version__
    except ImportError:  # pragma: no cover - the dynamo exporter needs it
        pass
    return versions


def _prepare_out_dir(out_dir: Path) -> None:
    """Refuse a path that is a file, or a non-empty folder that is not an earlier export."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir}: exists and is not a folder", reason="bad_folder")
    if out_dir.is_dir():
        known = {MANIFEST, WARP_DECODE, APPEARANCE, MOTION}
        others = [
            p.name
            for p in out_dir.iterdir()
            if p.name not in known and not p.name.endswith(".onnx.data")
        ]
        if others:
            raise ExportError(
                f"{out_dir}: not empty and not an ONNX export (holds "
                f"{sorted(others)[:3]}); choose another --out",
                reason="bad_folder",
            )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(
            f"{out_dir}: cannot create ({exc.strerror})", reason="bad_folder"
        ) from exc


def _export_one(
    module: nn.Module,
    args: tuple,
    path: Path,
    opset: int,
    input_names: list[str],
    output_names: list[str],
    dynamic: dict[str, dict[int, Any]],
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            args,
            dynamo=True,
            opset_version=opset,
            input_names=input_names,
            output_names=output_names,
            dynamic_shapes=dynamic,
            verbose=False,
        )
    if program is None:  # pragma: no cover - dynamo=True always returns a program
        raise ExportError(f"torch.onnx.export returned nothing for {path.name}")
    program.save(str(path))


def export_onnx(
    weights_dir: str | Path,
    out_dir: str | Path,
    *,
    opset: int = 20,
    fp16: bool = False,
    gather_sampler: bool = False,
    config=None,
    input_size: int | None = None,
) -> OnnxExport:
    """Export W+G, F and M of the weights in `weights_dir` to `out_dir` (see the module doc).

    Raises:
        ExportError: bad opset or output folder, or the exporter failed.
        WeightsError / ModelConfigError: the weights folder does not load.
    """
    if opset < MIN_OPSET:
        raise ExportError(
            f"opset {opset} is below the exporter's minimum {MIN_OPSET}", reason="bad_opset"
        )
    if opset < MIN_GRIDSAMPLE_OPSET and not gather_sampler:
        raise ExportError(
            f"W samples a 5-D volume; GridSample of rank 5 needs opset >= "
            f"{MIN_GRIDSAMPLE_OPSET} (use --gather-sampler for opset {opset})",
            reason="bad_opset",
        )
    out_dir = Path(out_dir)
    models = load_models(weights_dir, config=config, input_size=input_size)
    _prepare_out_dir(out_dir)
    dtype = torch.float16 if fp16 else torch.float32
    nets = {name: getattr(models, name).to(dtype).eval() for name in ("F", "M", "W", "G")}
    size = models.input_size
    num_kp = int(models.config["model_params"]["motion_extractor_params"].get("num_kp", 21))
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(EXAMPLE_BATCH, 3, size, size, generator=gen)
    with torch.no_grad():
        f_s = Appearance(nets["F"].float()).eval()(images)  # example volume (fp32 trace input)
        nets["F"].to(dtype)
    batch = torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)
    sources = torch.export.Dim("sources", min=1, max=MAX_EXPORT_BATCH)
    t0 = time.perf_counter()
    # fp16 on CPU: trace only (the exporter does not run the half-precision kernels)
    with torch.no_grad(), sampler_for_export(gather_sampler, keep_fp32=fp16):
        _export_one(
            WarpDecode(nets["W"], nets["G"], dtype).eval(),
            (
                f_s,
                torch.tensor([0, 1]),
                0.2 * torch.randn(EXAMPLE_BATCH, num_kp, 3, generator=gen),
                0.2 * torch.randn(EXAMPLE_BATCH, num_kp, 3, generator=gen),
            ),
            out_dir / WARP_DECODE,
            opset,
            ["f_s", "source_index", "x_s", "x_d"],
            ["frame"],
            {"f_s": {0: sources}, "source_index": {0: batch}, "x_s": {0: batch}, "x_d": {0: batch}},
        )
        _export_one(
            Appearance(nets["F"], dtype).eval(),
            (images,),
            out_dir / APPEARANCE,
            opset,
            ["image"],
            ["f_s"],
            {"image": {0: batch}},
        )
        _export_one(
            Motion(nets["M"], dtype).eval(),
            (images.clone(),),
            out_dir / MOTION,
            opset,
            ["image"],
            list(MOTION_OUTPUTS),
            {"image": {0: batch}},
        )
    seconds = time.perf_counter() - t0
    files = {}
    for key, name in (("warp_decode", WARP_DECODE), ("appearance", APPEARANCE), ("motion", MOTION)):
        path = out_dir / name
        files[key] = {"file": name, "sha256": _sha256(path), "bytes": path.stat().st_size}
        if (out_dir / f"{name}.data").exists():
            raise ExportError(f"{name}: the exporter wrote external data; not supported")
    manifest = {
        "format": FORMAT,
        "fingerprint": models.fingerprint,
        "config_name": models.config_name,
        "provenance": models.provenance,
        "input_size": size,
        "num_kp": num_kp,
        "opset": opset,
        "precision": "fp16" if fp16 else "fp32",
        "grid_sample_precision": "fp32",
        "sampler": "gather" if gather_sampler else "GridSample",
        "max_batch": MAX_EXPORT_BATCH,
        "versions": _versions(),
        "files": files,
        "export_seconds": round(seconds, 2),
    }
    (out_dir / MANIFEST).write_text(
        json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    logger.info(
        "exported %s (opset %d, %s, %s sampler) to %s in %.1f s",
        models.fingerprint,
        opset,
        manifest["precision"],
        manifest["sampler"],
        out_dir,
        seconds,
    )
    return OnnxExport(out_dir, manifest)


def load_export(folder: str | Path, fingerprint: str, *, verify_files: bool = True) -> OnnxExport:
    """Read and check an export folder against the loaded weights' fingerprint.

    Raises:
        ExportError: no manifest (reason bad_folder), an unknown format, another model's export
            (reason stale_export), or a graph file missing or changed since the export.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ExportError(
            f"{folder}: no {MANIFEST}; run `dynamics weights export-onnx` first",
            reason="bad_folder",
        ) from exc
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path}: unreadable ({exc})", reason="bad_folder") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ExportError(
            f"{path}: unknown manifest format {manifest.get('format')!r}"
            if isinstance(manifest, dict)
            else f"{path}: not a manifest",
            reason="bad_folder",
        )
    if manifest.get("fingerprint") != fingerprint:
        raise ExportError(
            f"{folder}: stale ONNX export: made from model {manifest.get('fingerprint')}, the "
            f"loaded weights are {fingerprint}; export again",
            reason="stale_export",
        )
    for key in ("warp_decode", "appearance", "motion"):
        entry = manifest.get("files", {}).get(key)
        file = folder / entry["file"] if entry else None
        if file is None or not file.is_file():
            raise ExportError(f"{folder}: the export lacks its {key} graph", reason="bad_folder")
        if verify_files and _sha256(file) != entry["sha256"]:
            raise ExportError(
                f"{file}: changed since the export (sha256 differs); export again",
                reason="stale_export",
            )
    current = _versions()
    for name in ("torch", "onnx"):
        made = manifest.get("versions", {}).get(name)
        if made and made.split("+")[0] != current.get(name, "").split("+")[0]:
            logger.warning(
                "ONNX export %s was made with %s %s, this process has %s",
                folder,
                name,
                made,
                current.get(name),
            )
    return OnnxExport(folder, manifest)
