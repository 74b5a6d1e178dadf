"""Tables 4 and 5 and the animator's memory: each configuration in a fresh worker process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from services.animator.pipeline import cpu_has_bf16


def precisions(device: str) -> list[str]:
    """fp32 everywhere; fp16 and bf16 on CUDA; bf16 on a CPU with native bf16 units."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return ["fp32", "fp16", "bf16"]
    return ["fp32", "bf16"] if cpu_has_bf16() else ["fp32"]


def run_worker(
    weights: Path,
    *,
    batch: int,
    frames: int,
    precision: str = "fp32",
    device: str = "cpu",
    mode: str = "batch",
    threads: int = 0,
    repeats: int = 1,
    backend: str = "torch",
    onnx_dir: Path | None = None,
    providers: str = "cpu",
    input_size: int = 0,
) -> dict:
    """`python -m bench.animator_worker ...` → its JSON result (raises on failure)."""
    cmd = [
        sys.executable,
        "-m",
        "bench.animator_worker",
        str(weights),
        "--batch",
        str(batch),
        "--frames",
        str(frames),
        "--precision",
        precision,
        "--device",
        device,
        "--mode",
        mode,
        "--threads",
        str(threads),
        "--repeats",
        str(repeats),
        "--backend",
        backend,
        "--providers",
        providers,
        "--input-size",
        str(input_size),
    ]
    if onnx_dir is not None:
        cmd += ["--onnx-dir", str(onnx_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"animator worker failed ({' '.join(cmd[3:])}): {proc.stderr[-2000:]}")
    return json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])


def batch_table(
    weights: Path, batch_sizes: list[int], frames: int, device: str, threads: int
) -> list[dict]:
    """Table 4 (+ memory): frames/s and peak memory by batch size and precision."""
    rows = []
    for precision in precisions(device):
        for batch in batch_sizes:
            n = max(frames, batch) // batch * batch  # whole batches only
            rows.append(
                run_worker(
                    weights,
                    batch=batch,
                    frames=n,
                    precision=precision,
                    device=device,
                    threads=threads,
                    repeats=2,
                )
            )
    return rows


def compare_table(weights: Path, batch: int, frames: int, device: str, threads: int) -> dict:
    """Table 5: the plain per-frame loop vs the batched pipeline (best of 2 each)."""
    return run_worker(
        weights,
        batch=batch,
        frames=frames,
        device=device,
        mode="compare",
        threads=threads,
        repeats=2,
    )


def backend_rows(
    weights: Path,
    batch: int,
    frames: int,
    device: str,
    threads: int,
    workdir: Path,
    onnx_dir: Path | None = None,
    input_size: int = 0,
) -> list[dict]:
    """Table 4's backend rows, one run: torch fp32, torch bf16 where this CPU has native bf16
    (fp16/bf16 on CUDA), and ONNX Runtime (CPU provider; CUDA then CPU on a GPU) on an fp32
    export made here (or `onnx_dir`), all at the animator's batch size."""
    n = max(frames, batch) // batch * batch
    rows = [
        run_worker(
            weights,
            batch=batch,
            frames=n,
            precision=p,
            device=device,
            threads=threads,
            repeats=2,
            input_size=input_size,
        )
        for p in precisions(device)
    ]
    if onnx_dir is None:
        from services.animator.onnx_export import export_onnx

        onnx_dir = workdir / "onnx"
        export_onnx(weights, onnx_dir, input_size=input_size or None)
    providers = "cuda,cpu" if device.startswith("cuda") else "cpu"
    rows.append(
        run_worker(
            weights,
            batch=batch,
            frames=n,
            device=device,
            threads=threads,
            repeats=2,
            backend="onnxruntime",
            onnx_dir=onnx_dir,
            providers=providers,
            input_size=input_size,
        )
    )
    for row in rows:
        row.setdefault("backend", "torch")
    return rows
