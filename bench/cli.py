"""`dynamics bench`: the seven performance tables, the memory tables and the CPU goals.

    dynamics bench [--config mid] [--weights DIR] [--seconds 10] [--json] [--skip memory ...]

Without --weights, seeded random weights of --config ('mid' by default, sized for a CPU run of
a few minutes; 'real' where a GPU is present) are written to a temporary folder. Demo inputs (a
portrait and a generated hero clip with audio) are made offline. Jobs run through the real
services on loopback. Exit code 0 when every goal checked holds, 1 when one fails.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench import animator_bench, fleet_bench, job_bench, tables
from bench.cost import load_prices
from bench.report import machine_description
from services.animator.random_weights import write_random_weights
from services.cli.demo_media import build_demo_inputs, write_hero_clip

SECTIONS = ("jobs", "batch", "backends", "compare", "concurrency", "memory", "fleet")


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dynamics bench", description=__doc__.splitlines()[0])
    p.add_argument(
        "--config",
        default=None,
        help="random-weights config: mid, real, reduced "
        "or a models.yaml (default: mid on CPU, real on CUDA; ignored with --weights)",
    )
    p.add_argument("--weights", type=Path, help="weights folder to benchmark instead")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument(
        "--dtype",
        default="fp32",
        choices=("fp32", "fp16", "bf16"),
        help="the services' animator precision (fp16: CUDA only; bf16: CUDA "
        "or a CPU with AVX512-BF16/AMX)",
    )
    p.add_argument("--seconds", type=float, default=10.0, help="hero clip of the job tables")
    p.add_argument(
        "--fps", type=int, default=25, help="frame rate of the generated hero clip (default: 25)"
    )
    p.add_argument("--batch-size", type=int, default=8, help="the animator's batch size")
    p.add_argument(
        "--batch-sizes",
        type=_ints,
        default=[1, 2, 4, 8, 16],
        metavar="N,N,...",
        help="table 4: the animator batch sizes to time (default: 1,2,4,8,16)",
    )
    p.add_argument("--batch-frames", type=int, default=32, help="frames per table-4 run")
    p.add_argument(
        "--concurrency",
        type=_ints,
        default=[1, 2, 4],
        metavar="N,N,...",
        help="table 6: numbers of jobs run at once (default: 1,2,4)",
    )
    p.add_argument(
        "--concurrent-seconds",
        type=float,
        default=2.0,
        help="table 6: hero clip length of each concurrent job (default: 2)",
    )
    p.add_argument(
        "--memory-seconds",
        type=_floats,
        default=[10.0, 60.0],
        metavar="S,S,...",
        help="memory tables: hero clip lengths to measure (default: 10,60)",
    )
    p.add_argument(
        "--memory-fps",
        type=int,
        default=10,
        help="memory tables: frame rate of those clips (default: 10)",
    )
    p.add_argument(
        "--fleet-jobs",
        type=int,
        default=6,
        help="table 8: jobs per row of the 1 vs 2 animators comparison (default: 6; "
        "their clips are --concurrent-seconds long)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per process (services and workers); 0 = torch default",
    )
    p.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=SECTIONS,
        help="leave a section out (repeatable)",
    )
    p.add_argument("--prices", type=Path, help="GPU price file (default bench/prices.yaml)")
    p.add_argument("--json", action="store_true", help="also print one JSON object (last line)")
    return p


def _device(choice: str) -> str:
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice


def run(args, work: Path) -> dict:
    """Run every section not skipped; returns the results dict."""
    device = _device(args.device)
    config = args.config or ("real" if device == "cuda" else "mid")
    weights = args.weights
    if weights is None:
        weights = work / "weights"
        write_random_weights(weights, config, seed=0)
    media = work / "media"
    source, hero = build_demo_inputs(media, seconds=args.seconds, fps=args.fps)
    results: dict = {
        "device": device,
        "weights": str(args.weights or f"random:{config}"),
        "cost_frames": 10 * 25,
        "dtype": args.dtype,
    }
    env = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
    env["ANIMATOR_DTYPE"] = args.dtype
    if "jobs" not in args.skip or "concurrency" not in args.skip:
        warm = write_hero_clip(media / "warm.mp4", seconds=1.0, fps=args.fps, size=256)
        short = write_hero_clip(
            media / "short.mp4", seconds=args.concurrent_seconds, fps=args.fps, size=256
        )
        with job_bench.open_stack(weights, args.batch_size, env, device) as bs:
            if "jobs" not in args.skip:
                _log("tables 1-3: jobs through the services")
                results["jobs"] = job_bench.job_tables(bs, source, hero, args.seconds, warm)
            if "concurrency" not in args.skip:
                _log("table 6: concurrent jobs")
                results["concurrency"] = job_bench.concurrency_table(
                    bs, source, short, args.concurrent_seconds, tuple(args.concurrency)
                )
    if "batch" not in args.skip:
        _log("table 4: batch sizes")
        results["batch"] = animator_bench.batch_table(
            weights, args.batch_sizes, args.batch_frames, device, args.threads
        )
    if "backends" not in args.skip:
        _log("table 4b: backends (torch, onnxruntime) at the animator's batch size")
        results["backends"] = animator_bench.backend_rows(
            weights, args.batch_size, args.batch_frames, device, args.threads, work
        )
    if "compare" not in args.skip:
        _log("table 5: plain loop")
        results["compare"] = animator_bench.compare_table(
            weights, args.batch_size, args.batch_frames, device, args.threads
        )
    if "fleet" not in args.skip:
        _log("table 8: 1 vs 2 animators behind one target")
        short = write_hero_clip(
            media / "fleet.mp4", seconds=args.concurrent_seconds, fps=args.fps, size=256
        )
        results["fleet"] = fleet_bench.animator_scaling(
            weights,
            args.batch_size,
            source,
            short,
            args.concurrent_seconds,
            args.fleet_jobs,
            env,
            device,
        )
    if "memory" not in args.skip:
        results["service_memory"] = []
        for seconds in args.memory_seconds:
            _log(f"memory: {seconds:g} s clip")
            clip = write_hero_clip(
                media / f"mem{seconds:g}.mp4", seconds=seconds, fps=args.memory_fps, size=256
            )
            row = job_bench.service_memory(
                weights, args.batch_size, source, clip, seconds, env, device
            )
            results["service_memory"].append(row)
    if device == "cuda" and "jobs" in results:
        results["gpu_seconds_per_job"] = {
            _gpu_key(): round(results["jobs"]["pipelined"]["device_seconds"], 3)
        }
    return results


def _gpu_key() -> str:
    name = torch.cuda.get_device_name(0)
    for key in ("T4", "L4", "A10G", "A100", "H100"):
        if key in name:
            return key
    return name


def _log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    prices = load_prices(args.prices)
    machine = machine_description()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dynamics-bench-") as work:
        results = run(args, Path(work))
    results["machine"] = machine
    results["seconds"] = round(time.monotonic() - started, 1)
    results["goals"] = tables.goals(results)
    for text in tables.render(results, machine, prices):
        print(text + "\n")
    print(tables.render_goals(results["goals"]))
    print(f"benchmark wall time: {results['seconds']:.0f} s on {machine}")
    if args.json:
        print(json.dumps(results, default=str))
    return 0 if all(g["result"] == "PASS" for g in results["goals"]) else 1
