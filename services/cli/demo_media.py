"""Demo inputs made offline: a packaged portrait as the source photo and a generated hero clip.

The source photo is `Tom_Hanks_54745.png` from the insightface wheel (scikit-image's astronaut
when insightface is absent), enlarged so the result is not a thumbnail. The hero clip is a
face (the astronaut, or the same portrait) moved, turned and scaled smoothly over a plain
background, with a sine-tone audio track, encoded by FFmpeg (H.264 + AAC).

    python -m services.cli.demo_media OUT_DIR [--seconds S] [--fps N] [--size PX]
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import cv2
import ffmpeg
import numpy as np

from services.common import ffmpeg_safety as safety


def portrait() -> np.ndarray:
    """H x W x 3 uint8 RGB packaged portrait."""
    spec = importlib.util.find_spec("insightface")
    if spec and spec.origin:
        path = Path(spec.origin).parent / "data" / "images" / "Tom_Hanks_54745.png"
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is not None:
            return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return hero_face()


def hero_face() -> np.ndarray:
    """RGB face patch for the hero clip (astronaut's face; the portrait without scikit-image)."""
    try:
        from skimage import data
    except ImportError:
        return portrait()
    return np.ascontiguousarray(data.astronaut()[18:238, 114:334])  # 220 x 220 around the face


def write_source_photo(dest: Path, side: int = 448) -> Path:
    """The portrait enlarged to `side` px, as PNG."""
    image = portrait()
    scale = side / max(image.shape[:2])
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    big = cv2.resize(image, size, interpolation=cv2.INTER_CUBIC)  # H x W x 3
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(dest), cv2.cvtColor(big, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {dest}")
    return dest


def hero_frame(face: np.ndarray, t: float, size: int) -> np.ndarray:
    """The clip at time `t` s: `face` turned (+-8 deg), scaled (+-6 %) and shifted on grey."""
    angle = 8.0 * math.sin(2 * math.pi * t / 2.0)
    scale = 0.8 * size / face.shape[0] * (1.0 + 0.06 * math.sin(2 * math.pi * t / 1.5))
    shift = (
        0.06 * size * math.sin(2 * math.pi * t / 2.5),
        0.04 * size * math.cos(2 * math.pi * t / 3.0),
    )
    centre = (face.shape[1] / 2.0, face.shape[0] / 2.0)
    matrix = cv2.getRotationMatrix2D(centre, angle, scale)  # 2 x 3, face -> frame
    matrix[:, 2] += np.array([size / 2.0 + shift[0], size / 2.0 + shift[1]]) - np.array(centre)
    return cv2.warpAffine(
        face,
        matrix,
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(96, 96, 96),
    )  # S x S x 3


def write_hero_clip(
    dest: Path,
    *,
    seconds: float = 3.0,
    fps: int = 25,
    size: int = 256,
    tone_hz: float = 440.0,
    face: np.ndarray | None = None,
) -> Path:
    """Encode the moving-face clip with a sine tone to `dest` (MP4, H.264 + AAC).

    Both inputs are ours and named exactly: raw frames over a pipe, and a lavfi tone built
    from numbers (never from user data)."""
    face = hero_face() if face is None else face
    frames = max(1, round(seconds * fps))
    video = ffmpeg.input(
        "pipe:",
        **safety.pipe_input_options("rawvideo"),
        pix_fmt="rgb24",
        s=f"{size}x{size}",
        framerate=fps,
    )
    audio = ffmpeg.input(
        f"sine=frequency={float(tone_hz)}:sample_rate=44100:duration={frames / fps}",
        format="lavfi",
        format_whitelist="lavfi",
    )
    args = (
        ffmpeg.output(
            video,
            audio,
            str(dest),
            vcodec="libx264",
            pix_fmt="yuv420p",
            preset="veryfast",
            crf=20,
            acodec="aac",
            movflags="+faststart",
        )
        .global_args("-nostdin", "-v", "error")
        .overwrite_output()
        .get_args()
    )
    dest.parent.mkdir(parents=True, exist_ok=True)
    proc = safety.popen(["ffmpeg", *args], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    try:
        for index in range(frames):
            proc.stdin.write(hero_frame(face, index / fps, size).tobytes())
    finally:
        proc.stdin.close()
        stderr = proc.stderr.read() if proc.stderr else b""
        proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed writing {dest}: {stderr.decode(errors='replace')}")
    return dest


def build_demo_inputs(
    out_dir: Path, *, seconds: float = 3.0, fps: int = 25, size: int = 256, photo_side: int = 448
) -> tuple[Path, Path]:
    """Write `source.png` and `hero.mp4` into `out_dir`; returns their paths."""
    source = write_source_photo(out_dir / "source.png", photo_side)
    hero = write_hero_clip(out_dir / "hero.mp4", seconds=seconds, fps=fps, size=size)
    return source, hero


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.cli.demo_media",
        description="Write the demo source photo and hero clip.",
    )
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--size", type=int, default=256, help="hero clip side in pixels")
    args = parser.parse_args(argv)
    source, hero = build_demo_inputs(
        args.out_dir, seconds=args.seconds, fps=args.fps, size=args.size
    )
    print(f"source photo: {source}\nhero clip:    {hero}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
