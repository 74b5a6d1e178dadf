"""`dynamics submit`, `dynamics status`, `dynamics cancel`: the REST client on the command line.

They talk to a running gateway (`dynamics up`, or a deployed one) through `services.client`,
the same module integrators import. The gateway is `--gateway` or `$DYNAMICS_GATEWAY`
(default http://127.0.0.1:8080); the Firebase ID token is `--token` or `$DYNAMICS_TOKEN`
(none for `dynamics up`, whose auth mode is none).

Exit codes of these three commands (the table of `services.common.cli`):
  0    done (submit --wait: the job succeeded and its MP4 was written when -o was given)
  1    the work failed: the job failed or was cancelled, the gateway could not be reached,
       or it answered 5xx / 408 / 429
  2    bad usage: a wrong argument, an unreadable input file, or a request the gateway
       refused (4xx: invalid_request, bad_video, not_found, invalid_token, ...)
  130  interrupted (Ctrl-C); the job keeps running on the gateway
Every refusal prints `dynamics <cmd>: <code>: <message>` on stderr, `code` being the gateway's
stable error code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

from services.client import Client, DynamicsError, Job
from services.common.cli import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    file_problem,
)

DEFAULT_GATEWAY = "http://127.0.0.1:8080"
_EPILOG = "\n".join(__doc__.splitlines()[7:])


def _parser(name: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"dynamics {name}",
        description=description,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--gateway",
        metavar="URL",
        default=None,
        help=f"gateway base URL (default: $DYNAMICS_GATEWAY or {DEFAULT_GATEWAY})",
    )
    p.add_argument(
        "--token",
        metavar="T",
        default=None,
        help="Firebase ID token sent as `Authorization: Bearer T` (default: "
        "$DYNAMICS_TOKEN; none for `dynamics up`)",
    )
    return p


def submit_parser() -> argparse.ArgumentParser:
    p = _parser("submit", "Queue a job on a gateway: photo + hero video -> MP4.")
    p.add_argument("source", help="portrait photo: a file (uploaded) or an https URL")
    p.add_argument("driving", help="hero video: a file (uploaded) or an https URL")
    p.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="length of the result in seconds (gateway default: 10)",
    )
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="an animation option, value in JSON (e.g. driving_multiplier=1.2, "
        "stitching=false, region='\"lip\"'); repeatable",
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help="follow the job's progress until it ends; exit 0 only if it succeeded",
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        metavar="OUT",
        help="write the result MP4 here (implies --wait)",
    )
    p.add_argument(
        "--progress",
        choices=("auto", "bar", "lines"),
        default="auto",
        help="progress display on stderr: a bar (default on a terminal) or one "
        "line per change (default otherwise)",
    )
    return p


def status_parser() -> argparse.ArgumentParser:
    p = _parser(
        "status",
        "Print a job as JSON (status, stage, progress, ETA, timings, error); while it waits "
        "or runs again after a failed attempt, the reason also goes to stderr.",
    )
    p.add_argument("job", help="job id")
    return p


def cancel_parser() -> argparse.ArgumentParser:
    p = _parser("cancel", "Cancel a job; print it as JSON.")
    p.add_argument("job", help="job id")
    p.add_argument(
        "--wait",
        action="store_true",
        help="wait until the job has really stopped (a running job stops within a lease heartbeat)",
    )
    return p


def _client(args: argparse.Namespace, environ: Mapping[str, str]) -> Client:
    base = args.gateway or environ.get("DYNAMICS_GATEWAY") or DEFAULT_GATEWAY
    return Client(base, token=args.token or environ.get("DYNAMICS_TOKEN") or None)


def _fail(name: str, exc: DynamicsError) -> int:
    print(f"dynamics {name}: {exc.code}: {exc.message}", file=sys.stderr)
    return EXIT_USAGE if exc.is_client_error else EXIT_FAILED


def job_json(job: Job) -> str:
    data = dict(job.raw) if job.raw else asdict(job)
    return json.dumps(data, indent=2, default=str)


def describe(job: Job) -> str:
    """One line: `<id> running animate 45% 12/25 frames ETA 3s`."""
    parts = [job.id, job.status]
    if job.stage and job.stage != job.status:
        parts.append(job.stage)
    parts.append(f"{job.progress * 100:3.0f}%")
    if job.frames_total:
        parts.append(f"{job.frames_done}/{job.frames_total} frames")
    if job.queue_position is not None and job.status == "queued":
        parts.append(f"queue position {job.queue_position}")
    if job.eta_seconds is not None and not job.terminal:
        parts.append(f"ETA {job.eta_seconds:.0f}s")
    if job.retrying is not None and not job.terminal:
        parts.append(f"retrying after: {job.retrying.code}: {job.retrying.message}")
    if job.error is not None:
        parts.append(f"{job.error.code}: {job.error.message}")
    return " ".join(parts)


class Progress:
    """Shows job updates on `out`: a redrawn bar on a terminal, else a line per change."""

    WIDTH = 30

    def __init__(self, out: TextIO, bar: bool) -> None:
        self.out, self.bar, self.last = out, bar, ""

    def __call__(self, job: Job) -> None:
        if self.bar:
            filled = round(job.progress * self.WIDTH)
            eta = (
                f" ETA {job.eta_seconds:.0f}s"
                if job.eta_seconds is not None and not job.terminal
                else ""
            )
            line = (
                f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {job.progress * 100:3.0f}%"
                f" {job.stage or job.status}{eta}"
            )
            self.out.write(line.ljust(len(self.last)))
            self.last = line
            if job.terminal:
                self.out.write("\n")
            self.out.flush()
            return
        line = describe(job)
        if line != self.last:
            print(line, file=self.out, flush=True)
            self.last = line


def _options(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs:
        name, eq, value = pair.partition("=")
        if not eq or not name:
            raise ValueError(f"--option {pair!r}: write NAME=VALUE")
        try:
            options[name] = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(
                f"--option {pair!r}: the value is not JSON (strings need quotes: "
                f"{name}='\"{value}\"')"
            ) from None
    return options


def submit_main(argv: list[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    args = submit_parser().parse_args(argv)
    for label, value in (("photo", args.source), ("video", args.driving)):
        if not value.startswith(("https://", "http://")):
            problem = file_problem(Path(value))
            if problem is not None:
                print(f"dynamics submit: {label} {value}: {problem}", file=sys.stderr)
                return EXIT_USAGE
    try:
        options = _options(args.option)
    except ValueError as exc:
        print(f"dynamics submit: {exc}", file=sys.stderr)
        return EXIT_USAGE
    show = Progress(
        sys.stderr, sys.stderr.isatty() if args.progress == "auto" else args.progress == "bar"
    )
    try:
        with _client(args, environ) as client:
            job = client.submit(args.source, args.driving, options, seconds=args.seconds)
            print(job.id, flush=True)
            if not (args.wait or args.output):
                return EXIT_OK
            job = client.wait(job.id, on_update=show)
            if job.status != "succeeded":
                print(
                    f"dynamics submit: job {job.id} {job.status}"
                    + (f": {job.error.code}: {job.error.message}" if job.error else ""),
                    file=sys.stderr,
                )
                return EXIT_FAILED
            if args.output is not None:
                client.download(job, args.output)
                print(f"dynamics submit: wrote {args.output}", file=sys.stderr)
            elif job.result_url:
                print(f"dynamics submit: result at {job.result_url}", file=sys.stderr)
            return EXIT_OK
    except DynamicsError as exc:
        return _fail("submit", exc)
    except OSError as exc:
        print(f"dynamics submit: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(
            "\ndynamics submit: interrupted; the job keeps running on the gateway "
            "(`dynamics cancel JOB` stops it)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED


def status_main(argv: list[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    args = status_parser().parse_args(argv)
    try:
        with _client(args, environ) as client:
            job = client.get(args.job)
    except DynamicsError as exc:
        return _fail("status", exc)
    print(job_json(job))
    if job.retrying is not None and not job.terminal:  # stdout stays one JSON document
        print(
            f"dynamics status: retrying after: {job.retrying.code}: {job.retrying.message}",
            file=sys.stderr,
        )
    return EXIT_OK


def cancel_main(argv: list[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    args = cancel_parser().parse_args(argv)
    try:
        with _client(args, environ) as client:
            job = client.cancel(args.job)
            if args.wait and not job.terminal:
                job = client.wait(job.id)
            print(job_json(job))
    except DynamicsError as exc:
        return _fail("cancel", exc)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return EXIT_OK
