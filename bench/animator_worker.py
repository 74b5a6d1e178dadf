"""One animator measurement in a fresh process (so memory peaks belong to one configuration).

    python -m bench.animator_worker WEIGHTS --batch 8 --frames 32 [--precision fp32]
                                    [--device cpu] [--mode batch|compare]

`batch`: frames/s of `AnimatorPipeline.generate` at one batch size and precision, and the
memory it needed: on CUDA `torch.cuda.max_memory_allocated`, on CPU the growth of the process's
peak resident set (VmHWM) over its resident set before the first W + G pass.
`compare`: the plain per-frame loop (`bench.plain_loop`) against the batched pipeline on the
same frames, with the largest pixel difference between them.
Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from bench.plain_loop import plain_frames
from services.animator.config import DTYPES
from services.animator.motion_types import MotionOptions
from services.animator.pipeline import AnimatorPipeline, Ratios

RATIOS = Ratios(0.3, 0.28, 0.05)


def proc_status_kib(field: str, pid: str = "self") -> int:
    """A `VmRSS` / `VmHWM` style field of /proc/<pid>/status, in KiB (0 if unreadable)."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _setup(args):
    device = torch.device(args.device)
    autocast = None if args.precision == "fp32" else DTYPES[args.precision]
    if args.backend == "onnxruntime":  # the export's precision; providers from the flag
        pipe = AnimatorPipeline.from_weights(
            args.weights,
            device=device,
            batch_size=args.batch,
            backend="onnxruntime",
            onnx_dir=args.onnx_dir,
            ort_providers=args.providers.split(","),
            input_size=args.input_size or None,
        )
    else:
        pipe = AnimatorPipeline.from_weights(
            args.weights,
            device=device,
            batch_size=args.batch,
            autocast_dtype=autocast,
            input_size=args.input_size or None,
        )
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 256, size=(256, 256, 3), dtype=np.uint8)
    state = pipe.prepare_source(crop, RATIOS, MotionOptions())
    drivers = [np.roll(crop, 3 * i, axis=1) for i in range(min(args.frames, 8))]
    frames = pipe.extract_motion(drivers, [RATIOS] * len(drivers))
    motions = [frames[i % len(frames)] for i in range(args.frames)]
    for i, m in enumerate(motions):
        m.index = i
    return pipe, state, motions


def _sync(pipe: AnimatorPipeline) -> None:
    if pipe.device.type == "cuda":
        torch.cuda.synchronize(pipe.device)


def measure_batch(args) -> dict:
    pipe, state, motions = _setup(args)
    base_kib = proc_status_kib("VmRSS")
    if pipe.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(pipe.device)
    list(pipe.generate(state, motions[: args.batch], 0))  # warm-up, same shapes
    _sync(pipe)
    best = float("inf")
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        list(pipe.generate(state, motions, 0))
        _sync(pipe)
        best = min(best, time.perf_counter() - t0)
    out = {
        "backend": pipe.backend,
        "batch": args.batch,
        "precision": args.precision,
        "device": str(pipe.device),
        "frames": len(motions),
        "seconds": best,
        "fps": len(motions) / best,
        "ms_per_frame": 1000 * best / len(motions),
    }
    if pipe.device.type == "cuda":
        out["peak_mib"] = torch.cuda.max_memory_allocated(pipe.device) / 2**20
        out["memory_basis"] = "torch.cuda.max_memory_allocated"
    else:
        out["peak_mib"] = (proc_status_kib("VmHWM") - base_kib) / 1024
        out["memory_basis"] = "CPU: VmHWM growth over VmRSS before the first W+G pass"
    return out


def measure_compare(args) -> dict:
    pipe, state, motions = _setup(args)
    plain_frames(pipe, state, motions[:1])  # warm-up
    list(pipe.generate(state, motions[: args.batch], 0))
    plain_s = batched_s = float("inf")
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        plain = plain_frames(pipe, state, motions)
        _sync(pipe)
        plain_s = min(plain_s, time.perf_counter() - t0)
        t0 = time.perf_counter()
        batched = list(pipe.generate(state, motions, 0))
        _sync(pipe)
        batched_s = min(batched_s, time.perf_counter() - t0)
    diff = max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(plain, batched))
    return {
        "batch": args.batch,
        "precision": args.precision,
        "frames": len(motions),
        "plain_fps": len(motions) / plain_s,
        "batched_fps": len(motions) / batched_s,
        "speedup": plain_s / batched_s,
        "max_pixel_diff": diff,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="animator_worker", description=__doc__.splitlines()[0])
    p.add_argument("weights")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--precision", choices=tuple(DTYPES), default="fp32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--mode", choices=("batch", "compare"), default="batch")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch")
    p.add_argument("--onnx-dir", default=None, help="export folder (onnxruntime backend)")
    p.add_argument("--providers", default="cpu", help="ORT providers, in order")
    p.add_argument("--input-size", type=int, default=0, help="network input (0: the config's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = measure_batch(args) if args.mode == "batch" else measure_compare(args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
