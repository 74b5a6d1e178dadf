"""Tables 1, 2, 3 and 6 and the services' memory: whole jobs through the real services.

face_detect, animator and encoder run as loopback subprocesses (`LocalStack`); jobs go through
the gateway's `Orchestrator` and its stage timings (`JobResult.timings`). Animator device time
comes from its Prometheus counters (`animator_busy_seconds_total`, `animator_batch_size`).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bench.animator_worker import proc_status_kib
from bench.gateway_job import run_job
from services.cli.local_stack import LocalStack, StackConfig
from services.gateway.pipeline.clients import ServiceClients
from services.gateway.pipeline.motion_cache import FolderMotionCache, NullMotionCache


@dataclass
class BenchStack:
    """A running local stack with clients and the animator's metrics endpoint."""

    stack: LocalStack
    clients: ServiceClients

    def animator_metrics(self) -> dict[str, float]:
        """Busy seconds and batch-size histogram count/sum scraped from the animator."""
        port = self.stack.services["animator"].find_metrics_port()
        if not port:
            return {}
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        wanted = {
            "animator_busy_seconds_total",
            "animator_batch_size_count",
            "animator_batch_size_sum",
            "animator_frames_total",
        }
        return {
            s.name: s.value
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
            if s.name in wanted
        }

    def pid(self, service: str) -> int:
        return self.stack.services[service].proc.pid

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds (user + system, with reaped children such as FFmpeg) used so far by each
        service process and by this process, which runs the gateway's orchestrator."""
        own = os.times()
        out = {
            name: process_cpu_seconds(self.pid(name))
            for name in ("face_detect", "animator", "encoder")
        }
        out["gateway"] = own.user + own.system
        return out

    @property
    def targets_arg(self) -> str:
        t = self.stack.targets
        return f"{t.face_detect},{t.animator},{t.encoder}"


def process_cpu_seconds(pid: int) -> float:
    """utime + stime + cutime + cstime of a process from /proc/<pid>/stat (0 if unreadable)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    ticks = sum(int(v) for v in fields[11:15])  # fields 14-17 of proc(5), after "pid (comm)"
    return ticks / os.sysconf("SC_CLK_TCK")


def bench_stack(
    weights: Path,
    batch_size: int,
    extra_env: dict[str, str] | None = None,
    device: str = "cpu",
    animators: int = 1,
) -> LocalStack:
    """The loopback stack a benchmark runs: this environment without its service settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANIMATOR_", "ENCODER_"))}
    env["LOG_LEVEL"] = "INFO"
    return LocalStack(
        StackConfig(
            weights_dir=weights,
            env=env,
            animator_device=device,
            animator_batch_size=batch_size,
            extra_env=extra_env or {},
            animators=animators,
        )
    )


@contextmanager
def open_stack(
    weights: Path, batch_size: int, extra_env: dict[str, str] | None = None, device: str = "cpu"
) -> Iterator[BenchStack]:
    """Start the three services on loopback and yield a BenchStack."""
    stack = bench_stack(weights, batch_size, extra_env, device)
    targets = stack.start()
    try:
        with ServiceClients(targets) as clients:
            yield BenchStack(stack, clients)
    finally:
        stack.stop()


def _delta(before: dict, after: dict, key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


def measured_job(
    bs: BenchStack,
    cache,
    source: Path,
    hero: Path,
    seconds: float,
    *,
    sequential: bool = False,
    job_id: str = "bench",
) -> dict:
    """run_job plus the animator's device seconds and every process's CPU seconds for it."""
    before, cpu_before = bs.animator_metrics(), bs.cpu_seconds()
    out = run_job(
        bs.clients, cache, source, hero, seconds=seconds, sequential=sequential, job_id=job_id
    )
    after, cpu_after = bs.animator_metrics(), bs.cpu_seconds()
    out["device_seconds"] = _delta(before, after, "animator_busy_seconds_total")
    out["cpu_seconds"] = {k: round(cpu_after[k] - cpu_before[k], 3) for k in cpu_after}
    return out


def job_tables(bs: BenchStack, source: Path, hero: Path, seconds: float, warm_hero: Path) -> dict:
    """Tables 1-3: pipelined miss, sequential miss, pipelined hit (after a warm-up job)."""
    run_job(bs.clients, NullMotionCache(), source, warm_hero, seconds=seconds, job_id="warm-up")
    with tempfile.TemporaryDirectory(prefix="dynamics-bench-cache-") as cache_dir:
        cache = FolderMotionCache(Path(cache_dir))
        first = measured_job(bs, cache, source, hero, seconds, job_id="first")
        sequential = measured_job(
            bs, NullMotionCache(), source, hero, seconds, sequential=True, job_id="sequential"
        )
        repeat = measured_job(bs, cache, source, hero, seconds, job_id="repeat")
    return {"pipelined": first, "sequential": sequential, "repeat": repeat}


def concurrency_table(
    bs: BenchStack, source: Path, hero: Path, seconds: float, levels: tuple[int, ...]
) -> list[dict]:
    """Table 6: N jobs at once on one animator (motion from the cache: the animator is shared)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="dynamics-bench-cache-") as cache_dir:
        cache = FolderMotionCache(Path(cache_dir))
        run_job(bs.clients, cache, source, hero, seconds=seconds, job_id="fill")
        for n in levels:
            rows.append(_concurrent(bs, cache, source, hero, seconds, n))
    return rows


def _concurrent(bs: BenchStack, cache, source: Path, hero: Path, seconds: float, n: int) -> dict:
    results: list[dict] = [{} for _ in range(n)]
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            results[i] = run_job(
                bs.clients, cache, source, hero, seconds=seconds, job_id=f"c{n}-{i}"
            )
        except BaseException as exc:  # noqa: BLE001 - reported after the join
            errors.append(exc)

    before = bs.animator_metrics()
    t0 = time.monotonic()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    after = bs.animator_metrics()
    if errors:
        raise errors[0]
    latencies = sorted(r["timings"]["total"] for r in results)
    frames = sum(r["frames"] for r in results)
    batches = _delta(before, after, "animator_batch_size_count")
    return {
        "jobs": n,
        "frames": frames,
        "wall": wall,
        "frames_per_s": frames / wall,
        "jobs_per_min": 60 * n / wall,
        "latency_p50": statistics.median(latencies),
        "latency_p95": _percentile(latencies, 0.95),
        "busy_share": _delta(before, after, "animator_busy_seconds_total") / wall,
        "mean_batch": _delta(before, after, "animator_batch_size_sum") / batches if batches else 0,
    }


def _percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, int(-(-q * len(sorted_values) // 1)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def service_memory(
    weights: Path,
    batch_size: int,
    source: Path,
    hero: Path,
    clip_seconds: float,
    extra_env: dict[str, str] | None = None,
    device: str = "cpu",
) -> dict:
    """Peak resident memory (VmHWM) of fresh encoder, gateway (job runner), face_detect and
    animator processes after one job of `clip_seconds`."""
    with open_stack(weights, batch_size, extra_env, device) as bs:
        cmd = [
            sys.executable,
            "-m",
            "bench.gateway_job",
            "--targets",
            bs.targets_arg,
            "--source",
            str(source),
            "--hero",
            str(hero),
            "--seconds",
            str(clip_seconds),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"gateway job failed: {proc.stderr[-2000:]}")
        job = _last_json(proc.stdout)
        peaks = {
            name: proc_status_kib("VmHWM", str(bs.pid(name))) / 1024
            for name in ("encoder", "face_detect", "animator")
        }
    return {
        "clip_seconds": clip_seconds,
        "frames": job["frames"],
        "gateway_mib": job["vm_hwm_mib"],
        **{f"{k}_mib": v for k, v in peaks.items()},
    }


def _last_json(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1])
