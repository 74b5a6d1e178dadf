"""`dynamics render SOURCE DRIVING -o OUT.mp4`: one job through the real services on loopback.

Starts face_detect, animator and encoder as local subprocesses, runs the orchestrator (the
same code the gateway's workers run), shows a progress bar with ETA on stderr, and writes the
MP4. With `--json` the last stdout line is a JSON object with per-stage timings and whether the
motion cache was hit. The animation flags are the REST API's `options`, one flag per field of
`AnimationOptions`, and are checked by that model before anything starts.

Exit codes: 0 done; 1 the job failed or the services did not start; 2 bad usage, a source or
hero file that is missing or unreadable, an output that cannot be written, or an unusable
weights folder; 130 interrupted.
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

from pydantic import ValidationError

from services.cli.local_stack import LocalStack, StackConfig, StackError
from services.common.cli import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    exit_codes_text,
    file_problem,
    folder_problem,
    os_reason,
)
from services.encoder.config import X264_PRESETS
from services.gateway.domain import (
    AnimationOptions,
    JobFailed,
    JobSpec,
    MediaInput,
    ProgressUpdate,
    option_fields,
)
from services.gateway.net.fetch import FetchPolicy, MediaFetcher
from services.gateway.pipeline.clients import ServiceClients
from services.gateway.pipeline.motion_cache import FolderMotionCache, NullMotionCache
from services.gateway.pipeline.orchestrator import Orchestrator, OrchestratorConfig

RANDOM_MARKER = "DYNAMICS_RANDOM_WEIGHTS.json"
NOISE_WARNING = (
    "WARNING: the LivePortrait weights are seeded random weights: the output is "
    "noise. Real weights: `dynamics weights fetch DIR` on a machine with internet."
)


def default_weights_dir(environ: Mapping[str, str]) -> Path:
    """--weights default: $DYNAMICS_WEIGHTS_DIR, else .dynamics/weights (made by setup.sh)."""
    return Path(environ.get("DYNAMICS_WEIGHTS_DIR") or ".dynamics/weights")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dynamics render",
        description=__doc__.splitlines()[0],
        epilog=exit_codes_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", help="portrait photo: a file or an https URL")
    p.add_argument("driving", help="hero video: a file or an https URL")
    p.add_argument("-o", "--output", required=True, type=Path, help="the MP4 to write")
    p.add_argument(
        "--weights",
        type=Path,
        help="LivePortrait weights folder (default: $DYNAMICS_WEIGHTS_DIR or .dynamics/weights)",
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=10.0,
        help="trim the hero video to this many seconds (default: 10)",
    )
    p.add_argument(
        "--source-max-dim",
        type=int,
        default=1280,
        metavar="PIXELS",
        help="longest side the photo is scaled to (default: 1280)",
    )
    p.add_argument("--json", action="store_true", help="last stdout line: JSON result")
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(".dynamics/motion-cache"),
        help="motion-template cache folder",
    )
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument("--device", default="auto", help="animator device: auto, cpu, cuda, ...")
    p.add_argument("--batch-size", type=int, default=None, help="animator batch size")
    p.add_argument(
        "--backend",
        choices=("torch", "onnxruntime"),
        default=None,
        help="animator backend (default: ANIMATOR_BACKEND, else torch); onnxruntime "
        "needs `dynamics weights export-onnx WEIGHTS` first",
    )
    add_option_flags(p)
    run = p.add_argument_group("how this run renders (local runs and benchmarks only)")
    run.add_argument(
        "--sequential",
        action="store_true",
        help="run the stages one after another through disk spools (the "
        "benchmark baseline; the default overlaps them)",
    )
    run.add_argument(
        "--crop-driving-video",
        action="store_true",
        help="track and crop the face in a square hero video too (a non-square "
        "one is always cropped)",
    )
    run.add_argument(
        "--crf",
        type=_crf,
        default=0,
        metavar="1-51",
        help="x264 quality, lower is better (default: the encoder's ENCODER_CRF)",
    )
    run.add_argument(
        "--preset",
        choices=X264_PRESETS,
        default="",
        help="x264 speed preset (default: the encoder's ENCODER_PRESET)",
    )
    return p


def add_option_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per `AnimationOptions` field, with the model's choices, bounds and default;
    a flag not given leaves the model's default."""
    group = parser.add_argument_group("animation options (the REST API's `options`)")
    for field in option_fields():
        flag = "--" + field.name.replace("_", "-")
        if field.kind is bool:
            group.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"{field.description} (default: {'on' if field.default else 'off'})",
            )
        elif field.choices:
            group.add_argument(
                flag,
                choices=field.choices,
                default=None,
                help=f"{field.description} (default: {field.default})",
            )
        else:
            group.add_argument(
                flag,
                type=field.kind,
                default=None,
                metavar="NUMBER",
                help=f"{field.description}; in {field.bounds()} (default: {field.default:g})",
            )


def options_from_args(args: argparse.Namespace) -> AnimationOptions:
    """The animation flags given, as the typed options (ValidationError when out of bounds)."""
    given = {field.name: getattr(args, field.name) for field in option_fields()}
    return AnimationOptions(**{name: value for name, value in given.items() if value is not None})


def render_config(args: argparse.Namespace) -> OrchestratorConfig:
    """The orchestrator settings of this run (the run flags)."""
    return OrchestratorConfig(
        sequential=args.sequential,
        crop_driving_video=args.crop_driving_video,
        encoder_crf=args.crf,
        encoder_preset=args.preset,
    )


def _crf(text: str) -> int:
    if not text.isdecimal() or not 1 <= int(text) <= 51:
        raise argparse.ArgumentTypeError(f"{text!r} is not an x264 CRF (1-51)")
    return int(text)


def _media(value: str) -> MediaInput:
    if value.startswith(("https://", "http://")):
        return MediaInput(url=value)
    return MediaInput(path=Path(value))


def output_problem(output: Path) -> str | None:
    """Why the MP4 cannot be written at `output` (its folder is made if missing), or None."""
    if output.is_dir():
        return "is a folder, not a file"
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output.parent, prefix=".dynamics-render-"):
            pass
    except FileExistsError:  # mkdir met a file where the folder should be
        return "not a folder"
    except OSError as exc:
        return os_reason(exc)
    return None


def _input_problem(label: str, media: MediaInput) -> str | None:
    if media.path is None:
        return None
    problem = file_problem(media.path)
    return None if problem is None else f"{label} {media.path}: {problem}"


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
        line = (
            f"{update.stage:<10} [{'#' * filled}{'.' * (self.width - filled)}] "
            f"{update.frames_done}/{update.frames_total} frames  ETA {eta}"
        )
        if self.tty:
            self.stream.write("\r" + line.ljust(len(self._last_line)))
        elif (
            line.split()[0] != self._last_line.split(" ")[0]
            or time.monotonic() - self._last_plain > 2
        ):
            self.stream.write(line + "\n")
            self._last_plain = time.monotonic()
        self._last_line = line
        self.stream.flush()

    def finish(self) -> None:
        if self.tty and self._last_line:
            self.stream.write("\n")
            self.stream.flush()


def main(argv: list[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        options = options_from_args(args)
    except ValidationError as exc:
        first = exc.errors()[0]
        flag = "--" + str(first["loc"][0]).replace("_", "-") if first.get("loc") else "options"
        parser.error(f"{flag}: {first['msg']}")
    source, driving = _media(args.source), _media(args.driving)
    for problem in (_input_problem("source", source), _input_problem("hero video", driving)):
        if problem is not None:
            print(f"dynamics render: {problem}", file=sys.stderr)
            return EXIT_USAGE
    problem = output_problem(args.output)
    if problem is not None:
        print(f"dynamics render: output {args.output}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    weights = args.weights or default_weights_dir(environ)
    problem = folder_problem(weights)
    if problem is not None:
        print(
            f"dynamics render: weights folder {weights}: {problem}; make one with "
            f"`dynamics weights fetch {weights}` (real) or `dynamics weights random --config "
            f"reduced {weights}` (noise), or run `bash setup.sh install`",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if (weights / RANDOM_MARKER).exists():
        print(NOISE_WARNING, file=sys.stderr)
    spec = JobSpec(
        job_id=f"render-{os.getpid()}",
        source=source,
        driving=driving,
        seconds=args.seconds,
        source_max_dim=args.source_max_dim,
        options=options,
    )
    cancel = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: cancel.set())
    try:
        return _render(args, weights, spec, cancel, environ)
    finally:
        signal.signal(signal.SIGINT, previous)


def _backend_env(args) -> dict[str, str]:
    """--backend for the animator process (unset: its environment decides)."""
    return {"ANIMATOR_BACKEND": args.backend} if args.backend else {}


def _render(args, weights: Path, spec: JobSpec, cancel: threading.Event, environ) -> int:
    started = time.monotonic()
    print("starting face_detect, animator and encoder on loopback ...", file=sys.stderr)
    stack = LocalStack(
        StackConfig(
            weights_dir=weights,
            env=dict(environ),
            animator_device=args.device,
            animator_batch_size=args.batch_size,
            extra_env=_backend_env(args),
        )
    )
    try:
        targets = stack.start()
    except StackError as exc:
        print(f"dynamics render: {exc}", file=sys.stderr)
        return EXIT_FAILED
    stack_s = time.monotonic() - started
    cache = NullMotionCache() if args.no_cache else FolderMotionCache(args.cache_dir)
    config = render_config(args)
    bar = ProgressBar()
    try:
        with (
            ServiceClients(targets) as clients,
            tempfile.TemporaryDirectory(prefix="dynamics-render-") as work,
        ):
            orchestrator = Orchestrator(clients, cache, MediaFetcher(FetchPolicy()), config)
            result = orchestrator.run(spec, Path(work), on_progress=bar, cancel=cancel)
            bar.finish()
            try:
                args.output.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(result.mp4_path), args.output)
            except OSError as exc:
                print(f"dynamics render: output {args.output}: {os_reason(exc)}", file=sys.stderr)
                return EXIT_FAILED
    except JobFailed as exc:
        bar.finish()
        print(f"dynamics render: failed ({exc.code}): {exc.message}", file=sys.stderr)
        return EXIT_INTERRUPTED if exc.code == "cancelled" else EXIT_FAILED
    finally:
        stack.stop()
    if result.random_weights:
        print(NOISE_WARNING, file=sys.stderr)
    hit = "hit (motion reused)" if result.cache_hit else "miss"
    print(
        f"wrote {args.output}: {result.frames} frames, motion cache {hit}, "
        f"{result.timings.get('total', 0.0):.1f} s",
        file=sys.stderr,
    )
    if args.json:
        print(
            json.dumps(
                {
                    "output": str(args.output),
                    "frames": result.frames,
                    "cache_hit": result.cache_hit,
                    "random_weights": result.random_weights,
                    "sequential": args.sequential,
                    "timings": {**result.timings, "stack_start": round(stack_s, 3)},
                }
            )
        )
    return EXIT_OK
