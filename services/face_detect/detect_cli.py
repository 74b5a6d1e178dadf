"""`dynamics detect IMAGE [--backend mtcnn|insightface] [--json]`: list the faces of an image.

Runs the detector in-process (no server needed). Exit codes: 0 faces listed (possibly none),
2 bad arguments, or an image that is missing, unreadable or not an image, 3 the detector could
not be loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

from services.common.cli import (
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    exit_codes_text,
    file_problem,
    os_reason,
)
from services.common.config import ConfigError
from services.common.errors import InvalidInputError
from services.common.media import decode_image


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dynamics detect",
        description="Detect faces in an image (largest first).",
        epilog=exit_codes_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("image", type=Path, help="image file (PNG, JPEG, WebP, ...)")
    parser.add_argument(
        "--backend",
        choices=("mtcnn", "insightface"),
        help="detector (default: FACE_DETECT_BACKEND or mtcnn)",
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        help="insightface buffalo_l folder (default: FACE_DETECT_MODEL_DIR)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = file_problem(args.image)
    if problem is not None:
        print(f"dynamics detect: {args.image}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    from services.face_detect.config import FaceDetectConfig
    from services.face_detect.detector import FaceDetector
    from services.face_detect.servicer import detect_all

    env = dict(os.environ)
    if args.backend:
        env["FACE_DETECT_BACKEND"] = args.backend
    if args.model_dir:
        env["FACE_DETECT_MODEL_DIR"] = str(args.model_dir)
    try:
        config = FaceDetectConfig.from_env(env)
    except ConfigError as exc:
        print(f"dynamics detect: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        image = decode_image(args.image.read_bytes())
    except (InvalidInputError, OSError) as exc:
        reason = os_reason(exc) if isinstance(exc, OSError) else exc.message
        print(f"dynamics detect: {args.image}: {reason}", file=sys.stderr)
        return EXIT_USAGE
    try:
        detector = FaceDetector.from_config(replace(config, landmark_model=None))
    except (OSError, ValueError, ImportError) as exc:
        print(f"dynamics detect: cannot load the {config.backend} detector: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    faces = detect_all(detector, image, config.source_max_dim)
    h, w = image.shape[:2]
    if args.json:
        print(
            json.dumps(
                {
                    "image": str(args.image),
                    "width": w,
                    "height": h,
                    "backend": detector.name,
                    "faces": [f.to_json() for f in faces],
                }
            )
        )
        return 0
    print(f"{args.image}: {w}x{h}, {len(faces)} face(s) [{detector.name}]")
    for i, face in enumerate(faces):
        x1, y1, x2, y2 = face.box
        print(f"  #{i}: box=({x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}) score={face.score:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
