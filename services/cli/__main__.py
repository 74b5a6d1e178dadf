"""`dynamics`: the command line for local runs, set-up and benchmarks.

Each subcommand is a module exposing `main(argv) -> int` (`render`, `up`, and the gateway
client's `submit`, `status` and `cancel` in this package,
`detect` and `weights` in the service they drive); this module only dispatches, so
`dynamics <cmd> --help` is answered by the subcommand itself. Every command uses the exit codes
of `services.common.cli` (listed by `dynamics --help`).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys

from services.common.cli import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, exit_codes_text

# name -> (module with main(argv), one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "render": (
        "services.cli.render",
        "photo + hero video -> MP4 through the real services on loopback (the main job)",
    ),
    "up": ("services.cli.up", "run the whole stack locally (3 services + gateway REST API)"),
    "detect": ("services.face_detect.detect_cli", "list the faces of an image as JSON"),
    "weights": (
        "services.animator.weights_cli",
        "fetch / verify LivePortrait weights, or write seeded random ones",
    ),
    "bench": ("bench.cli", "benchmarks: stage breakdown, pipelining, batching, cost per video"),
    "submit": (
        "services.cli.submit",
        "queue a job on a gateway (upload or URLs); --wait follows it, -o downloads",
    ),
    "status": ("services.cli.status", "print a gateway job as JSON"),
    "cancel": ("services.cli.cancel", "cancel a gateway job"),
}
# Top-level packages of this project: one of them missing is a broken install, not a user error.
OWN_PACKAGES = ("services", "bench", "dynamics")


def version() -> str:
    """The installed distribution's version (pyproject.toml's `version`)."""
    try:
        return importlib.metadata.version("dynamics")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (the project is not installed; `bash setup.sh install`)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dynamics",
        description="Dynamics: animate a portrait photo with the motion of a hero video\n"
        "(LivePortrait), encode H.264 with the video's audio.",
        epilog="Run `dynamics <command> --help` for the options of a command.\n\n"
        + exit_codes_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"dynamics {version()}",
        help="print the version and exit",
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, (_module, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv:
        parser.print_help()
        return EXIT_USAGE
    if argv[0].startswith("-"):
        parser.parse_args(argv[:1])  # --help and --version print and exit; others are errors
        return EXIT_OK
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        parser.error(f"unknown command {name!r}; choose from {', '.join(SUBCOMMANDS)}")
    module_name, _help = SUBCOMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if not missing or missing in OWN_PACKAGES:
            raise
        print(
            f"dynamics {name}: needs the Python module {missing!r}, which is not installed; "
            "install the project with its extras (`bash setup.sh install`)",
            file=sys.stderr,
        )
        return EXIT_UNAVAILABLE
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
