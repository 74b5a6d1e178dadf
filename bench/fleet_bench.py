"""Table 8: jobs/minute with 1 vs 2 animators behind one target, in the same run.

One local stack with two animators (`LocalStack(animators=2)`). The 1-animator row sends every
job to the first animator's address; the 2-animator row to the `ipv4:` target of both, which the
gateway's channel balances round_robin. Each row runs the same jobs with 3 job slots per
animator (docs/gateway.md, "Job slots"), motion from the cache, and counts each animator's
Animate calls from its /metrics. On a CPU the two animators share the same cores, so the ratio
says how much of the device the second one finds idle, not what a second GPU adds.
"""

from __future__ import annotations

import queue
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from bench.gateway_job import run_job
from bench.job_bench import bench_stack
from services.cli.local_stack import LocalService
from services.gateway.pipeline.clients import ServiceClients, ServiceTargets
from services.gateway.pipeline.motion_cache import FolderMotionCache

SLOTS_PER_ANIMATOR = 3


def _animate_calls(service: LocalService) -> float:
    port = service.find_metrics_port()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("grpc_server_handled_total{")
        and 'grpc_method="Animate"' in line
        and 'grpc_code="OK"' in line
    )


def _run_jobs(
    clients: ServiceClients,
    cache,
    source: Path,
    hero: Path,
    seconds: float,
    jobs: int,
    slots: int,
    label: str,
) -> float:
    """Run `jobs` jobs on `slots` threads; returns the wall time."""
    todo: queue.Queue[int] = queue.Queue()
    for index in range(jobs):
        todo.put(index)
    errors: list[BaseException] = []

    def worker() -> None:
        while True:
            try:
                index = todo.get_nowait()
            except queue.Empty:
                return
            try:
                run_job(clients, cache, source, hero, seconds=seconds, job_id=f"{label}-{index}")
            except BaseException as exc:  # noqa: BLE001 - reported after the join
                errors.append(exc)

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(min(slots, jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.monotonic() - started


def animator_scaling(
    weights: Path,
    batch_size: int,
    source: Path,
    hero: Path,
    seconds: float,
    jobs: int,
    extra_env: dict[str, str] | None = None,
    device: str = "cpu",
) -> list[dict]:
    """One row per animator count (1, 2): jobs, wall, jobs/min, Animate calls per animator."""
    stack = bench_stack(weights, batch_size, extra_env, device, animators=2)
    targets = stack.start()
    rows = []
    try:
        animators = [s for s in stack.services.values() if s.service_kind == "animator"]
        with tempfile.TemporaryDirectory(prefix="dynamics-bench-cache-") as cache_dir:
            cache = FolderMotionCache(Path(cache_dir))
            for count in (1, 2):
                animator = animators[0].target if count == 1 else targets.animator
                with ServiceClients(
                    ServiceTargets(
                        face_detect=targets.face_detect, animator=animator, encoder=targets.encoder
                    )
                ) as clients:
                    run_job(clients, cache, source, hero, seconds=seconds, job_id=f"fill{count}")
                    before = [_animate_calls(s) for s in animators]
                    wall = _run_jobs(
                        clients,
                        cache,
                        source,
                        hero,
                        seconds,
                        jobs,
                        SLOTS_PER_ANIMATOR * count,
                        f"a{count}",
                    )
                    calls = [_animate_calls(s) - b for s, b in zip(animators, before)]
                rows.append(
                    {
                        "animators": count,
                        "jobs": jobs,
                        "slots": SLOTS_PER_ANIMATOR * count,
                        "wall": wall,
                        "jobs_per_min": 60 * jobs / wall,
                        "animate_calls": calls,
                    }
                )
    finally:
        stack.stop()
    return rows
