"""`dynamics render SOURCE DRIVING -o OUT.mp4`: one job through the real services on loopback.

Starts face_detect, animator and encoder as local subprocesses, runs the orchestrator (the
same code the gateway's workers run), shows a progress bar with ETA on stderr, and writes the
MP4. With `--json` the last stdout line is a JSON object with per-stage timings and whether the
motion cache was hit. Exit codes: 0 done, 1 the job failed, 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from services.cli.local_stack import LocalStack, StackConfig, StackError, weights_fingerprint
from services.gateway.domain import JobFailed, JobSpec, MediaInput, ProgressUpdate
from services.gateway.net.fetch import FetchPolicy, MediaFetcher
from services.gateway.pipeline.clients import ServiceClients
from services.gateway.pipeline.motion_cache import FolderMotionCache, NullMotionCache
from services.gateway.pipeline.orchestrator import Orchestrator, OrchestratorConfig

RANDOM_MARKER = "DYNAMICS_RANDOM_WEIGHTS.json"
NOISE_WARNING = ("WARNING: the LivePortrait weights are seeded random weights: the output is "
                 "noise. Real weights: `dynamics weights fetch DIR` on a machine with internet.")


def default_weights_dir(environ: Mapping[str, str]) -> Path:
    """--weights default: $DYNAMICS_WEIGHTS_DIR, else .dynamics/weights (made by setup.sh)."""
    return Path(environ.get("DYNAMICS_WEIGHTS_DIR") or ".dynamics/weights")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dynamics render", description=__doc__.splitlines()[0])
    p.add_argument("source", help="portrait photo: a file or an https URL")
    p.add_argument("driving", help="hero video: a file or an https URL")
    p.add_argument("-o", "--output", required=True, type=Path, help="the MP4 to write")
    p.add_argument("--weights", type=Path, help="LivePortrait weights folder "
                   "(default: $DYNAMICS_WEIGHTS_DIR or .dynamics/weights)")
    p.add_argument("--seconds", type=float, default=10.0, help="trim the hero video to this")
    p.add_argument("--source-max-dim", type=int, default=1280)
    p.add_argument("--sequential", action="store_true",
                   help="run the stages one after another (benchmark baseline)")
    p.add_argument("--json", action="store_true", help="last stdout line: JSON result")
    p.add_argument("--cache-dir", type=Path, default=Path(".dynamics/motion-cache"),
                   help="motion-template cache folder")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument("--device", default="auto", help="animator device: auto, cpu, cuda, ...")
    p.add_argument("--batch-size", type=int, default=None, help="animator batch size")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="animation option, e.g. relative_motion=false, region=lip (repeatable)")
    return p


def _media(value: str) -> MediaInput:
    if value.startswith(("https://", "http://")):
        return MediaInput(url=value)
    return MediaInput(path=Path(value))


def _option_value(text: str) -> object:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


class ProgressBar:
    """One updating line on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, stream=sys.stderr, width: int = 30) -> None:
        self.stream, self.width = stream, width
        self.tty = stream.isatty()
        self._last_line = ""
        self._last_plain = 0.0

    def __call__(self, update: ProgressUpdate) -> None:
        total = max(update.frames_total, 1)
        filled = int(self.width * min(update.frames_done, total) / total)
        eta = "--" if update.eta_seconds is None else f"{update.eta_seconds:5.1f}s"
        line = (f"{update.stage:<10} [{'#' * filled}{'.' * (self.width - filled)}] "
                f"{update.frames_done}/{update.frames_total} frames  ETA {eta}")
        if self.tty:
            self.stream.write("\r" + line.ljust(len(self._last_line)))
        elif line.split()[0] != self._last_line.split(" ")[0] or time.monotonic() - self._last_plain > 2:
            self.stream.write(line + "\n")
            self._last_plain = time.monotonic()
        self._last_line = line
        self.stream.flush()

    def finish(self) -> None:
        if self.tty and self._last_line:
            self.stream.write("\n")
            self.stream.flush()


def main(argv: list[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    args = build_parser().parse_args(argv)
    weights = args.weights or default_weights_dir(environ)
    if not weights.is_dir():
        print(f"dynamics render: no weights at {weights}; run `bash setup.sh install` or "
              f"`dynamics weights random --config reduced {weights}`", file=sys.stderr)
        return 2
    try:
        options = dict(item.split("=", 1) for item in args.option)
    except ValueError:
        print("dynamics render: --option takes KEY=VALUE", file=sys.stderr)
        return 2
    if (weights / RANDOM_MARKER).exists():
        print(NOISE_WARNING, file=sys.stderr)
    spec = JobSpec(
        job_id=f"render-{os.getpid()}", source=_media(args.source), driving=_media(args.driving),
        seconds=args.seconds, source_max_dim=args.source_max_dim,
        options={k: _option_value(v) for k, v in options.items()}, sequential=args.sequential)
    cancel = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: cancel.set())
    try:
        return _render(args, weights, spec, cancel, environ)
    finally:
        signal.signal(signal.SIGINT, previous)


def _render(args, weights: Path, spec: JobSpec, cancel: threading.Event, environ) -> int:
    started = time.monotonic()
    print("starting face_detect, animator and encoder on loopback ...", file=sys.stderr)
    stack = LocalStack(StackConfig(weights_dir=weights, env=dict(environ),
                                   animator_device=args.device,
                                   animator_batch_size=args.batch_size))
    try:
        targets = stack.start()
    except StackError as exc:
        print(f"dynamics render: {exc}", file=sys.stderr)
        return 1
    stack_s = time.monotonic() - started
    cache = NullMotionCache() if args.no_cache else FolderMotionCache(args.cache_dir)
    config = OrchestratorConfig(model_fingerprint=weights_fingerprint(weights))
    bar = ProgressBar()
    try:
        with ServiceClients(targets) as clients, tempfile.TemporaryDirectory(
                prefix="dynamics-render-") as work:
            orchestrator = Orchestrator(clients, cache, MediaFetcher(FetchPolicy()), config)
            result = orchestrator.run(spec, Path(work), on_progress=bar, cancel=cancel)
            bar.finish()
            args.output.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(result.mp4_path), args.output)
    except JobFailed as exc:
        bar.finish()
        print(f"dynamics render: failed ({exc.code}): {exc.message}", file=sys.stderr)
        return 130 if exc.code == "cancelled" else 1
    finally:
        stack.stop()
    if result.random_weights:
        print(NOISE_WARNING, file=sys.stderr)
    hit = "hit (motion reused)" if result.cache_hit else "miss"
    print(f"wrote {args.output}: {result.frames} frames, motion cache {hit}, "
          f"{result.timings.get('total', 0.0):.1f} s", file=sys.stderr)
    if args.json:
        print(json.dumps({
            "output": str(args.output), "frames": result.frames, "cache_hit": result.cache_hit,
            "random_weights": result.random_weights, "sequential": spec.sequential,
            "timings": {**result.timings, "stack_start": round(stack_s, 3)},
        }))
    return 0
