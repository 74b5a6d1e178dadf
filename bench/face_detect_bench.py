"""Face detection + tracking throughput on this CPU: a synthetic driving clip (10 s at 25 fps by
default) made by moving and turning a real face photo, fed frame by frame through the service's
core (DrivingTracker) exactly as TrackDriving does, plus whole-frame detection for comparison.

    python -m bench.face_detect_bench [--seconds 10 --fps 25 --width 1280 --height 720] [--json]

Frame synthesis is not timed; the tracking numbers include detection, landmarks, the driving box,
the 512 crop and the 256 resize of every frame.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

from bench.report import format_table, machine_description


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="face_detect_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--face", type=int, default=320, help="side of the face patch in px")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument(
        "--detect-frames",
        type=int,
        default=25,
        help="frames for the whole-frame detection comparison",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _track(detector, clip, box_mode: str) -> dict:
    from services.face_detect.tracker import DrivingTracker

    tracker = DrivingTracker(detector, clip.width, clip.height, box_mode=box_mode)
    per_frame, out = [], []
    for i in range(clip.n_frames):
        frame = clip.frame(i)
        start = time.perf_counter()
        out += tracker.push(i, frame)
        per_frame.append(time.perf_counter() - start)
    start = time.perf_counter()
    out += tracker.finish()
    per_frame[-1] += time.perf_counter() - start
    first = next(t for t in out if t.box is not None)
    origin = _centre(first.box)
    errors = [
        float(np.linalg.norm(_centre(t.box) - clip.follow(origin, first.index, t.index)))
        for t in out
        if t.box is not None
    ]
    return _row(f"track ({box_mode})", per_frame, len(out), errors, sum(t.face_found for t in out))


def _centre(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0])


def _detect_only(detector, clip, n: int) -> dict:
    per_frame = []
    found = 0
    for i in range(min(n, clip.n_frames)):
        frame = clip.frame(i)
        start = time.perf_counter()
        found += bool(detector.detect(frame))
        per_frame.append(time.perf_counter() - start)
    return _row("whole-frame detection", per_frame, len(per_frame), [], found)


def _row(mode: str, per_frame: list[float], frames: int, errors: list[float], found: int) -> dict:
    total = sum(per_frame)
    return {
        "mode": mode,
        "frames": frames,
        "seconds": total,
        "fps": frames / total,
        "ms_p50": 1000 * statistics.median(per_frame),
        "ms_max": 1000 * max(per_frame),
        "faces_found": found,
        "centre_err_px_mean": statistics.fmean(errors) if errors else None,
        "centre_err_px_max": max(errors) if errors else None,
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from services.cli.synthetic_clip import SyntheticClip, astronaut_face
    from services.face_detect.detector import FaceDetector
    from services.face_detect.mtcnn import MtcnnDetector

    torch.set_num_threads(args.threads)
    n_frames = round(args.seconds * args.fps)
    clip = SyntheticClip(
        astronaut_face(args.face),
        width=args.width,
        height=args.height,
        n_frames=n_frames,
        amplitude=(args.width * 0.15, args.height * 0.08),
        max_angle=10.0,
    )
    detector = FaceDetector(MtcnnDetector())
    detector.detect(clip.frame(0))  # warm-up
    rows = [
        _track(detector, clip, "first_k"),
        _track(detector, clip, "per_frame"),
        _detect_only(detector, clip, args.detect_frames),
    ]
    meta = {
        "machine": machine_description(),
        "backend": "mtcnn",
        "torch_threads": args.threads,
        "clip": f"{args.width}x{args.height}, {n_frames} frames ({args.seconds:g} s at "
        f"{args.fps} fps), face {args.face} px",
    }
    if args.json:
        print(json.dumps({**meta, "results": rows}))
        return 0
    table = [
        [
            r["mode"],
            r["frames"],
            r["seconds"],
            r["fps"],
            r["ms_p50"],
            r["ms_max"],
            r["faces_found"],
            "-" if r["centre_err_px_max"] is None else r["centre_err_px_max"],
        ]
        for r in rows
    ]
    print(
        format_table(
            f"Face detection + tracking, {meta['clip']}",
            ["mode", "frames", "seconds", "frames/s", "ms p50", "ms max", "faces", "max err px"],
            table,
            note=f"{meta['machine']}; backend mtcnn, torch threads {args.threads}",
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
