"""`dynamics weights ...`: fetch real LivePortrait weights, write random ones, verify a folder.

`main(argv)` returns the process exit code (0 ok; 1 the command failed, e.g. weights that do not
load; 2 bad usage, or a folder to verify that is missing or unreadable) and prints one-line
errors (no stack traces) for the failures an operator can fix.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from services.animator.model import ModelConfigError
from services.common.cli import EXIT_FAILED, EXIT_USAGE, exit_codes_text, folder_problem
from services.common.errors import DynamicsError

EPILOG = """examples:
  dynamics weights fetch ./weights            # real weights from KwaiVGI/LivePortrait (internet)
  dynamics weights random --config reduced --seed 0 ./weights-tiny   # tiny random, for tests
  dynamics weights verify ./weights           # strict load + summary
  dynamics weights export-onnx ./weights --out ./weights/onnx   # W+G, F, M for onnxruntime

A weights folder holds the upstream tree (liveportrait/base_models/*.pth,
liveportrait/retargeting_models/stitching_retargeting_module.pth) or the five .pth files flat;
a models.yaml in it overrides the packaged human-model config. Random weights are marked
(DYNAMICS_RANDOM_WEIGHTS.json) and everything rendered from them is noise.

""" + exit_codes_text()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dynamics weights",
        description="Manage LivePortrait weights for the animator.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="{fetch,random,verify,export-onnx}"
    )
    fetch = sub.add_parser(
        "fetch",
        help="download and sha256-verify the real weights from the "
        "Hugging Face hub, write DYNAMICS_WEIGHTS_MANIFEST.json",
    )
    fetch.add_argument("dir", type=Path, help="destination folder (created)")
    fetch.add_argument("--repo-id", default="KwaiVGI/LivePortrait", help="hub repository")
    fetch.add_argument(
        "--revision",
        default="main",
        help="branch, tag or commit (the manifest records the resolved commit)",
    )
    fetch.add_argument(
        "--endpoint",
        default=None,
        help="hub endpoint URL (default: huggingface_hub's, e.g. HF_ENDPOINT)",
    )
    rand = sub.add_parser(
        "random",
        help="write seeded RANDOM weights in the upstream format "
        "(for tests and local runs; output is noise)",
    )
    rand.add_argument("dir", type=Path, help="destination folder (created)")
    rand.add_argument(
        "--config",
        default="real",
        help="'real' (human model size, ~500 MB), 'mid' (CPU benchmark width), 'reduced' "
        "(fixture width, ~4 MB) or a models.yaml path (default: real)",
    )
    rand.add_argument("--seed", type=int, default=0, help="generator seed (default: 0)")
    rand.add_argument("--overwrite", action="store_true", help="replace existing weight files")
    verify = sub.add_parser(
        "verify",
        help="load a weights folder strictly (keys, shapes, "
        "sha256 against the manifest) and print a summary",
    )
    verify.add_argument("dir", type=Path, help="weights folder")
    verify.add_argument(
        "--config",
        default=None,
        help="'real', 'reduced' or a models.yaml to build the networks from "
        "(default: the folder's models.yaml, else the packaged human config)",
    )
    onnx = sub.add_parser(
        "export-onnx",
        help="export W+G (fused), F and M to ONNX with a "
        "manifest tying the export to these weights (ANIMATOR_BACKEND="
        "onnxruntime)",
    )
    onnx.add_argument("dir", type=Path, help="weights folder")
    onnx.add_argument(
        "--out",
        type=Path,
        default=None,
        help="export folder (default: DIR/onnx); refused if it holds other files",
    )
    onnx.add_argument(
        "--opset",
        type=int,
        default=20,
        help="ONNX opset (default 20: the first with a rank-5 GridSample that "
        "ONNX Runtime's CUDA kernel runs; lower needs --gather-sampler)",
    )
    onnx.add_argument(
        "--fp16",
        action="store_true",
        help="half-precision networks (GPU runtimes); grid sampling stays fp32",
    )
    onnx.add_argument(
        "--gather-sampler",
        action="store_true",
        help="write W's 5-D sampling as eight gathers (no GridSample node), for "
        "runtimes without a rank-5 GridSample",
    )
    onnx.add_argument("--config", default=None, help="as for verify")
    onnx.add_argument(
        "--input-size",
        type=int,
        default=None,
        help="network input side (default: the config's image_size, else 256)",
    )
    return parser


def main(
    argv: list[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run one `dynamics weights` command; returns the exit code (0 ok, 1 failed, 2 usage)."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse already printed usage / help
        return int(exc.code or 0)
    if args.command == "verify" and (problem := folder_problem(args.dir)) is not None:
        print(f"error: weights folder {args.dir}: {problem}", file=err)
        return EXIT_USAGE
    try:
        if args.command == "fetch":
            return _fetch(args, out)
        if args.command == "random":
            return _random(args, out)
        if args.command == "export-onnx":
            return _export_onnx(args, out)
        return _verify(args, out)
    except (DynamicsError, ModelConfigError) as exc:
        print(f"error: {getattr(exc, 'message', None) or exc}", file=err)
        return EXIT_FAILED


def _fetch(args: argparse.Namespace, out: TextIO) -> int:
    from services.animator.hub import fetch_weights

    manifest = fetch_weights(args.dir, args.repo_id, args.revision, endpoint=args.endpoint)
    print(f"fetched {args.repo_id}@{args.revision} into {args.dir}; manifest {manifest}", file=out)
    return _verify(argparse.Namespace(dir=args.dir, config=None), out)


def _random(args: argparse.Namespace, out: TextIO) -> int:
    from services.animator.random_weights import write_random_weights

    write_random_weights(args.dir, args.config, args.seed, overwrite=args.overwrite)
    print(
        f"wrote RANDOM weights (config {args.config}, seed {args.seed}) to {args.dir}; "
        "anything rendered from them is noise",
        file=out,
    )
    return 0


def _export_onnx(args: argparse.Namespace, out: TextIO) -> int:
    from services.animator.onnx_export import export_onnx

    target = args.out if args.out is not None else args.dir / "onnx"
    export = export_onnx(
        args.dir,
        target,
        opset=args.opset,
        fp16=args.fp16,
        gather_sampler=args.gather_sampler,
        config=args.config,
        input_size=args.input_size,
    )
    m = export.manifest
    print(
        f"exported model {m['fingerprint']} ({m['precision']}, opset {m['opset']}, "
        f"{m['sampler']} sampler, input {m['input_size']}) to {target} in "
        f"{m['export_seconds']} s",
        file=out,
    )
    for entry in m["files"].values():
        print(f"  {entry['file']:<18} {entry['bytes']:>12,d} bytes", file=out)
    return 0


def _verify(args: argparse.Namespace, out: TextIO) -> int:
    from services.animator.weights import load_models

    models = load_models(args.dir, config=args.config)
    counts = models.param_counts()
    print(f"weights:     {models.weights_dir} ({models.layout} layout)", file=out)
    print(
        f"provenance:  {models.provenance}"
        + ("  (RANDOM: output is noise)" if models.provenance == "random" else ""),
        file=out,
    )
    print(f"config:      {models.config_name} (input size {models.input_size})", file=out)
    print(
        f"fingerprint: {models.fingerprint}  (files, config and input size; the motion-cache "
        "key's model part)",
        file=out,
    )
    for name, count in counts.items():
        print(f"  {name:<10} {count:>12,d} parameters", file=out)
    print(f"  {'total':<10} {sum(counts.values()):>12,d} parameters", file=out)
    print("all keys and shapes match; every tensor is finite", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
