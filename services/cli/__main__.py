"""`dynamics`: the command line for local runs, set-up and benchmarks.

Each subcommand is a module exposing `main(argv) -> int` (`render` and `up` in this package,
`detect` and `weights` in the service they drive); this module only dispatches, so
`dynamics <cmd> --help` is answered by the subcommand itself.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module with main(argv), one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "render": ("services.cli.render",
               "photo + hero video -> MP4 through the real services on loopback (the main job)"),
    "up": ("services.cli.up", "run the whole stack locally (3 services + gateway REST API)"),
    "detect": ("services.face_detect.detect_cli", "list the faces of an image as JSON"),
    "weights": ("services.animator.weights_cli",
                "fetch / verify LivePortrait weights, or write seeded random ones"),
    "bench": ("bench.cli", "benchmarks: stage breakdown, pipelining, batching, cost per video"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dynamics",
        description="Dynamics: animate a portrait photo with the motion of a hero video "
        "(LivePortrait), encode H.264 with the video's audio.",
        epilog="Run `dynamics <command> --help` for the options of a command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, (_module, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        parser.error(f"unknown command {name!r}; choose from {', '.join(SUBCOMMANDS)}")
    module_name, _help = SUBCOMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            print(f"dynamics {name}: not built yet in this version ({module_name} is missing).",
                  file=sys.stderr)
            return 3
        raise
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
