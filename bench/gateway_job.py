"""One job through the gateway's orchestrator against running services, timed by stage.

`run_job` is what the benchmark calls in-process; `python -m bench.gateway_job` runs one job in
a fresh process (the "gateway" whose peak resident memory the memory table reports):

    python -m bench.gateway_job --targets FD,ANIM,ENC --source S.png --hero H.mp4
                                [--seconds 10] [--sequential] [--cache-dir DIR]

The "upload" stage is the copy of the MP4 into the gateway's local result storage (the
production bucket upload is not measured here). Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.animator_worker import proc_status_kib
from services.gateway.delivery.storage import LocalStorage, result_key
from services.gateway.domain import JobSpec, MediaInput
from services.gateway.net.fetch import FetchPolicy, MediaFetcher
from services.gateway.pipeline.clients import ServiceClients, ServiceTargets
from services.gateway.pipeline.motion_cache import FolderMotionCache, MotionCache, NullMotionCache
from services.gateway.pipeline.orchestrator import Orchestrator, OrchestratorConfig


def run_job(
    clients: ServiceClients,
    cache: MotionCache,
    source: Path,
    hero: Path,
    *,
    seconds: float,
    sequential: bool = False,
    job_id: str = "bench",
) -> dict:
    """Run one job; returns its stage timings (s), wall time, frames and cache hit."""
    config = OrchestratorConfig(sequential=sequential)
    orchestrator = Orchestrator(clients, cache, MediaFetcher(FetchPolicy()), config)
    spec = JobSpec(
        job_id=job_id,
        source=MediaInput(path=source),
        driving=MediaInput(path=hero),
        seconds=seconds,
    )
    with tempfile.TemporaryDirectory(prefix="dynamics-bench-") as work:
        t0 = time.monotonic()
        result = orchestrator.run(
            spec, Path(work) / "job", on_progress=lambda _u: None, cancel=threading.Event()
        )
        t1 = time.monotonic()
        LocalStorage(Path(work) / "storage").put(result_key(job_id), result.mp4_path)
        upload = time.monotonic() - t1
    timings = dict(result.timings)
    timings["upload"] = upload
    timings["total"] = timings.get("total", t1 - t0) + upload
    return {
        "timings": timings,
        "wall": time.monotonic() - t0,
        "frames": result.frames,
        "cache_hit": result.cache_hit,
        "sequential": sequential,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gateway_job", description=__doc__.splitlines()[0])
    p.add_argument("--targets", required=True, help="face_detect,animator,encoder host:port")
    p.add_argument("--source", type=Path, required=True)
    p.add_argument("--hero", type=Path, required=True)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--sequential", action="store_true")
    p.add_argument("--cache-dir", type=Path, default=None)
    args = p.parse_args(argv)
    fd, anim, enc = args.targets.split(",")
    cache = FolderMotionCache(args.cache_dir) if args.cache_dir else NullMotionCache()
    with ServiceClients(ServiceTargets(face_detect=fd, animator=anim, encoder=enc)) as clients:
        out = run_job(
            clients, cache, args.source, args.hero, seconds=args.seconds, sequential=args.sequential
        )
    out["vm_hwm_mib"] = proc_status_kib("VmHWM") / 1024
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
