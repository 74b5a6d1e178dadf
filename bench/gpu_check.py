"""The GPU check's measurements (run by bench/gpu_check.sh; `--dry-run` on a CPU).

    python -m bench.gpu_check OUT_DIR [--dry-run] [--budget-s 420]

Real run (CUDA): seeded random weights at the real config (input 256, frames 512), then
- torch W+G at batch 1..32 in fp16 and bf16 (autocast), each eager, torch.compile (default)
  and CUDA graphs (compile mode reduce-overhead): frames/s, peak CUDA memory;
- ONNX Runtime on the CUDA EP (fp32 export: its 5-D GridSample kernel is fp32) and on the
  TensorRT EP with CUDA behind it (fp16 export, GridSample kept fp32; TensorRT 10 cannot
  build the 5-D GridSample, so the CUDA EP runs it), frames/s and device memory in use;
- where GridSample ran for each of those rows (ORT profiling of one W+G call): never the CPU;
- one 10 s job (250 frames) pipelined: M on the driving crops in one thread while the
  cross-job batcher runs W+G on what is ready, frames/s and wall time.
Every row that cannot run (no provider, out of time, an error) is recorded with its reason;
nothing is silently dropped. Writes OUT_DIR/gpu_check.json and OUT_DIR/gpu_check.md.

`--dry-run`: the same code on the CPU at the reduced width (input 32), fp32 (+ bf16 where
the CPU has it), eager only, batch 1-2, ORT CPU provider, a 1 s job; compile/CUDA-graph/CUDA EP/
TensorRT rows are recorded as skipped (no CUDA).
"""

from __future__ import annotations

import argparse
import json
import platform
import queue
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import torch

RATIOS = (0.3, 0.28, 0.05)


class Budget:
    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_used_mib(device: torch.device) -> float | None:
    """Device-wide memory in use (ORT's arena is invisible to torch's allocator counters)."""
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    return (total - free) / 2**20


def _motions(pipe, n: int):
    from services.animator.pipeline import Ratios

    rng = np.random.default_rng(0)
    crop = rng.integers(0, 256, size=(pipe.input_size, pipe.input_size, 3), dtype=np.uint8)
    drivers = [np.roll(crop, 3 * i, axis=1) for i in range(min(n, 8))]
    frames = pipe.extract_motion(drivers, [Ratios(*RATIOS)] * len(drivers))
    state = pipe.prepare_source(crop, Ratios(*RATIOS))
    return state, crop, frames


def measure_wg(pipe, batch: int, repeats: int) -> dict:
    """frames/s of run_batch (keypoints, W+G, uint8) at one batch size; memory peaks."""
    import dataclasses

    state, _, frames = _motions(pipe, batch)
    batch_frames = [dataclasses.replace(frames[i % len(frames)], index=i) for i in range(batch)]
    device = pipe.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    base = _device_used_mib(device)
    for _ in range(3 if pipe.cuda_graphs else 1):  # warm-up (graphs record on a later call)
        pipe.run_batch(state, batch_frames, 0)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        pipe.run_batch(state, batch_frames, 0)
    _sync(device)
    seconds = (time.perf_counter() - t0) / repeats
    row = {"batch": batch, "fps": batch / seconds, "ms_per_frame": 1000 * seconds / batch}
    if device.type == "cuda":
        row["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        used = _device_used_mib(device)
        row["device_used_mib"] = used
        row["device_growth_mib"] = used - base if used is not None and base is not None else None
    return row


def gridsample_placement(profile_files: list[str]) -> dict[str, int]:
    """Provider → number of GridSample node runs, from ORT profiling JSON files."""
    counts: dict[str, int] = {}
    for path in profile_files:
        try:
            events = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            continue
        for ev in events:
            args = ev.get("args") or {}
            if (
                ev.get("cat") == "Node"
                and args.get("op_name") == "GridSample"
                and str(ev.get("name", "")).endswith("_kernel_time")
            ):
                provider = args.get("provider", "?")
                counts[provider] = counts.get(provider, 0) + 1
    return counts


def placement_verdict(session_provider: str, counts: dict[str, int]) -> dict:
    """Where W+G's GridSample ran, from `gridsample_placement` counts of one session whose
    first provider is `session_provider`. On a GPU it must never be the CPU provider: either
    every GridSample node ran on CUDA, or (TensorRT first) none ran as an onnxruntime node
    because TensorRT built it into its engine."""
    if counts:
        where = ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))
        on_gpu = set(counts) == {"CUDAExecutionProvider"}
    elif session_provider == "TensorrtExecutionProvider":
        where, on_gpu = "inside the TensorRT engine (no onnxruntime GridSample node ran)", True
    else:
        where, on_gpu = "no GridSample node in the profile", False
    return {
        "session_provider": session_provider,
        "runs_by_provider": counts,
        "where": where,
        "on_gpu": on_gpu,
    }


def pipelined_job(pipe, frames_total: int) -> dict:
    """One job: M on the driving crops (a producer thread, batches of B) while the cross-job
    batcher runs W+G on what is ready (the consumer): wall time and frames/s end to end."""
    from services.animator.batcher import CrossJobBatcher
    from services.animator.pipeline import Ratios

    state, crop, _ = _motions(pipe, 1)
    batcher = CrossJobBatcher(pipe, max_wait_s=0.0, max_jobs=1).start()
    slot = batcher.open_job("gpu-check")
    slot.state = state
    ready: queue.Queue = queue.Queue(maxsize=4)
    b = pipe.batch_size

    def produce() -> None:
        for lo in range(0, frames_total, b):
            n = min(b, frames_total - lo)
            crops = [np.roll(crop, 2 * (lo + i), axis=1) for i in range(n)]
            ready.put(pipe.extract_motion(crops, [Ratios(*RATIOS)] * n, lo))
        ready.put(None)

    t0 = time.perf_counter()
    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    done = 0
    try:
        while (chunk := ready.get()) is not None:
            out = batcher.submit(slot, chunk, chunk[0].index).result()
            done += len(out.indices)
        _sync(pipe.device)
    finally:
        batcher.close_job(slot)
        batcher.stop()
    wall = time.perf_counter() - t0
    return {
        "frames": done,
        "wall_s": wall,
        "fps": done / wall,
        "batch": b,
        "device_seconds": slot.device_seconds,
    }


def _try(rows: list, label: dict, fn, budget: Budget, min_left: float = 5.0) -> None:
    if budget.left() < min_left:
        rows.append({**label, "skipped": "time budget spent"})
        return
    try:
        rows.append({**label, **fn()})
    except Exception as exc:  # noqa: BLE001 - a failed row is a result, with its reason
        rows.append(
            {
                **label,
                "error": f"{type(exc).__name__}: {str(exc)[:300]}",
                "trace": traceback.format_exc(limit=3)[-800:],
            }
        )


def run(out_dir: Path, dry_run: bool, budget_s: float) -> dict:
    from services.animator.onnx_export import export_onnx
    from services.animator.pipeline import AnimatorPipeline, cpu_has_bf16
    from services.animator.random_weights import write_random_weights

    budget = Budget(budget_s)
    cuda = torch.cuda.is_available() and not dry_run
    device = "cuda" if cuda else "cpu"
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    config, input_size = ("real", 256) if not dry_run else ("reduced", 32)
    batches = [1, 2, 4, 8, 16, 32] if not dry_run else [1, 2]
    repeats = 5 if not dry_run else 1
    job_frames = 250 if not dry_run else 25
    weights = write_random_weights(work / "weights", config, 0)
    result: dict = {
        "dry_run": dry_run,
        "config": config,
        "input_size": input_size,
        "machine": platform.node(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu",
        "torch_rows": [],
        "ort_rows": [],
        "notes": [],
    }
    try:
        import onnxruntime as ort

        result["onnxruntime"] = ort.__version__
        result["ort_providers"] = ort.get_available_providers()
    except ImportError:
        result["onnxruntime"] = None
        result["ort_providers"] = []
    try:
        import tensorrt

        result["tensorrt"] = tensorrt.__version__
    except ImportError:
        result["tensorrt"] = None
    # torch rows
    if cuda:
        precisions = ["fp16", "bf16"]
        modes = [
            ("eager", False, "default"),
            ("compile", True, "default"),
            ("cudagraphs", True, "reduce-overhead"),
        ]
    else:
        precisions = ["fp32"] + (["bf16"] if cpu_has_bf16() else [])
        modes = [("eager", False, "default")]
        for name in ("compile", "cudagraphs"):
            result["torch_rows"].append({"mode": name, "skipped": "needs CUDA"})
    dtypes = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
    for precision in precisions:
        for mode, compiled, compile_mode in modes:
            try:
                pipe = AnimatorPipeline.from_weights(
                    weights,
                    device=device,
                    batch_size=max(batches),
                    input_size=input_size,
                    autocast_dtype=dtypes[precision],
                    compile=compiled,
                    compile_mode=compile_mode,
                )
            except Exception as exc:  # noqa: BLE001
                result["torch_rows"].append(
                    {
                        "precision": precision,
                        "mode": mode,
                        "error": f"{type(exc).__name__}: {exc}"[:300],
                    }
                )
                continue
            for batch in batches:
                _try(
                    result["torch_rows"],
                    {"backend": "torch", "precision": precision, "mode": mode},
                    lambda p=pipe, b=batch: measure_wg(p, b, repeats),
                    budget,
                    20.0 if compiled else 5.0,
                )
            del pipe
            if cuda:
                torch.cuda.empty_cache()
    # ONNX Runtime rows
    exports = {}
    for precision in ("fp32", "fp16") if cuda else ("fp32",):
        if budget.left() < 30:
            result["notes"].append(f"{precision} export skipped: time budget spent")
            continue
        try:
            t0 = time.perf_counter()
            exports[precision] = export_onnx(
                weights, work / f"onnx-{precision}", fp16=precision == "fp16", input_size=input_size
            )
            result["notes"].append(f"{precision} export: {time.perf_counter() - t0:.1f} s")
        except Exception as exc:  # noqa: BLE001
            result["notes"].append(f"{precision} export failed: {type(exc).__name__}: {exc}"[:300])
    # TensorRT rows keep the CUDA provider behind it: nodes TensorRT cannot build (the 5-D
    # GridSample before TensorRT 11.2.1; onnxruntime-gpu 1.31.1 links TensorRT 10) run there,
    # not on the CPU provider that onnxruntime appends to every list.
    plan = [("cuda", "fp32"), ("tensorrt", "fp16")] if cuda else [("cpu", "fp32")]
    chains = {"cuda": ["cuda"], "tensorrt": ["tensorrt", "cuda"], "cpu": ["cpu"]}
    if not cuda:
        for provider in ("cuda", "tensorrt"):
            result["ort_rows"].append({"provider": provider, "skipped": "needs CUDA"})
    trt_cache = work / "trt-cache"
    for provider, precision in plan:
        if precision not in exports:
            result["ort_rows"].append({"provider": provider, "skipped": f"no {precision} export"})
            continue
        full = {
            "cuda": "CUDAExecutionProvider",
            "tensorrt": "TensorrtExecutionProvider",
            "cpu": "CPUExecutionProvider",
        }[provider]
        if full not in result["ort_providers"]:
            result["ort_rows"].append(
                {"provider": provider, "skipped": f"{full} not in this onnxruntime"}
            )
            continue
        try:
            pipe = AnimatorPipeline.from_weights(
                weights,
                batch_size=max(batches),
                input_size=input_size,
                backend="onnxruntime",
                onnx_dir=exports[precision].folder,
                ort_providers=chains[provider],
                trt_cache_dir=trt_cache,
                device=device,
            )
        except Exception as exc:  # noqa: BLE001
            result["ort_rows"].append(
                {
                    "provider": provider,
                    "precision": precision,
                    "error": f"{type(exc).__name__}: {exc}"[:300],
                }
            )
            continue
        for batch in batches:
            _try(
                result["ort_rows"],
                {"backend": pipe.backend, "provider": provider, "precision": precision},
                lambda p=pipe, b=batch: measure_wg(p, b, repeats),
                budget,
                60.0 if provider == "tensorrt" else 5.0,
            )
        del pipe
    # where GridSample runs: profile one W+G call on each planned row's providers
    result["gridsample"] = []
    for provider, precision in plan:
        if precision not in exports or budget.left() < 10:
            continue
        row = {"row": provider, "providers": chains[provider]}
        try:
            from services.animator.ort_backend import OrtEngine

            prof = work / f"profile-{provider}"
            prof.mkdir()
            engine = OrtEngine(
                exports[precision],
                providers=chains[provider],
                batch_size=2,
                profile_dir=prof,
                trt_cache_dir=trt_cache,
            )
            f_s = torch.zeros(1, *engine.f_s_shape, device=engine.device)
            kp = torch.zeros(2, engine.num_kp, 3, device=engine.device)
            engine.warp_decode(f_s, kp, kp + 0.01)
            row.update(
                placement_verdict(engine.provider, gridsample_placement(engine.end_profiling()))
            )
        except Exception as exc:  # noqa: BLE001
            row["error"] = f"{type(exc).__name__}: {exc}"[:300]
        result["gridsample"].append(row)
    # one whole job, pipelined, on the best torch configuration measured
    if budget.left() > 15:
        try:
            pipe = AnimatorPipeline.from_weights(
                weights,
                device=device,
                batch_size=8,
                input_size=input_size,
                autocast_dtype=torch.float16 if cuda else None,
            )
            result["job"] = {
                "precision": "fp16" if cuda else "fp32",
                "mode": "eager",
                **pipelined_job(pipe, job_frames),
            }
        except Exception as exc:  # noqa: BLE001
            result["job"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    else:
        result["job"] = {"skipped": "time budget spent"}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu_check.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (out_dir / "gpu_check.md").write_text(markdown(result))
    return result


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def markdown(result: dict) -> str:
    kind = "DRY RUN (CPU, reduced width; no GPU number here)" if result["dry_run"] else "GPU run"
    lines = [
        f"# GPU check: {kind}",
        "",
        (
            f"device: {result['device']} | torch {result['torch']} (CUDA {result['cuda']}) | "
            f"onnxruntime {result.get('onnxruntime')} | TensorRT {result.get('tensorrt')} | "
            f"config {result['config']} (input {result['input_size']}), seeded random weights"
        ),
        "",
        "## torch W+G (keypoints, W, G, uint8)",
        "",
        "| precision | mode | batch | frames/s | ms/frame | peak CUDA MiB | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["torch_rows"]:
        note = r.get("skipped") or r.get("error") or ""
        lines.append(
            f"| {_cell(r.get('precision'))} | {_cell(r.get('mode'))} | "
            f"{_cell(r.get('batch'))} | {_cell(r.get('fps'))} | "
            f"{_cell(r.get('ms_per_frame'))} | {_cell(r.get('peak_cuda_mib'))} | {note} |"
        )
    lines += [
        "",
        "## ONNX Runtime W+G",
        "",
        "| provider | export | batch | frames/s | ms/frame | device MiB in use | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["ort_rows"]:
        note = r.get("skipped") or r.get("error") or ""
        lines.append(
            f"| {r.get('provider')} | {_cell(r.get('precision'))} | "
            f"{_cell(r.get('batch'))} | {_cell(r.get('fps'))} | "
            f"{_cell(r.get('ms_per_frame'))} | {_cell(r.get('device_used_mib'))} | "
            f"{note} |"
        )
    lines += [
        "",
        "## GridSample placement (ORT profiling of one W+G call)",
        "",
        "| row | providers | session provider | GridSample ran | on the GPU |",
        "|---|---|---|---|---|",
    ]
    for g in result.get("gridsample", []):
        lines.append(
            f"| {g['row']} | {', '.join(g['providers'])} | {_cell(g.get('session_provider'))} "
            f"| {g.get('where') or g.get('error')} | {_cell(g.get('on_gpu'))} |"
        )
    lines += [
        "",
        "## One job, pipelined (M in a thread, W+G through the batcher)",
        "",
        f"`{json.dumps(result.get('job', {}), default=str)}`",
        "",
    ]
    if result["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in result["notes"]] + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gpu_check", description=__doc__.splitlines()[0])
    p.add_argument("out_dir", type=Path)
    p.add_argument("--dry-run", action="store_true", help="CPU, reduced width, quick")
    p.add_argument(
        "--budget-s",
        type=float,
        default=420.0,
        help="seconds the measurements may take; rows past it are marked skipped",
    )
    args = p.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device (torch.cuda.is_available() is False); use --dry-run "
            "on a CPU",
            file=sys.stderr,
        )
        return 2
    result = run(args.out_dir, args.dry_run, args.budget_s)
    errors = [r for r in result["torch_rows"] + result["ort_rows"] if "error" in r]
    print(
        f"gpu_check: wrote {args.out_dir / 'gpu_check.json'} and gpu_check.md "
        f"({len(errors)} rows failed)"
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
