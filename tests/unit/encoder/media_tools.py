"""Test helpers for the encoder: synthetic hero videos, ffprobe, decoding MP4s back, PSNR."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")

needs_ffmpeg = pytest.mark.skipif(
    FFMPEG is None or FFPROBE is None, reason="ffmpeg/ffprobe not installed"
)


def make_hero_video(
    path: Path,
    *,
    seconds: float,
    fps: str = "25",
    size: str = "64x48",
    audio: bool = True,
    audio_delay: float = 0.0,
) -> Path:
    """A small test video from lavfi sources (testsrc picture, 440 Hz sine audio).

    `audio_delay` starts the audio stream that many seconds after the picture.
    """
    argv = [
        FFMPEG,
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"testsrc=size={size}:rate={fps}:duration={seconds}",
    ]
    if audio:
        argv += [
            "-itsoffset",
            str(audio_delay),
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:sample_rate=44100:duration={seconds - audio_delay}",
            "-c:a",
            "aac",
        ]
    argv += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(argv, check=True, timeout=60)
    return path


def ffprobe(path: Path) -> dict:
    """ffprobe's JSON: {'streams': [...], 'format': {...}} with exact frame counts."""
    done = subprocess.run(
        [
            FFPROBE,
            "-v",
            "error",
            "-count_frames",
            "-show_streams",
            "-show_format",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return json.loads(done.stdout)


def stream(info: dict, kind: str) -> dict | None:
    """The first stream of a kind ('video' / 'audio') or None."""
    return next((s for s in info["streams"] if s["codec_type"] == kind), None)


def decode_rgb(path: Path, width: int, height: int) -> np.ndarray:
    """Decode every frame of an MP4 into N x H x W x 3 uint8 RGB."""
    done = subprocess.run(
        [
            FFMPEG,
            "-hide_banner",
            "-loglevel",
            "error",
            "-i",
            str(path),
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "pipe:1",
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    frames = np.frombuffer(done.stdout, dtype=np.uint8)
    return frames.reshape(-1, height, width, 3)


def decode_audio(path: Path, rate: int = 8000) -> np.ndarray:
    """The first audio stream as mono float32 samples at `rate` Hz."""
    done = subprocess.run(
        [
            FFMPEG,
            "-hide_banner",
            "-loglevel",
            "error",
            "-i",
            str(path),
            "-map",
            "0:a:0",
            "-ac",
            "1",
            "-ar",
            str(rate),
            "-f",
            "f32le",
            "pipe:1",
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return np.frombuffer(done.stdout, dtype=np.float32)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 images (inf when equal)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def top_level_atoms(path: Path) -> list[str]:
    """Names of the top-level MP4 boxes in file order (faststart puts moov before mdat)."""
    data = path.read_bytes()
    names, offset = [], 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset : offset + 4], "big")
        names.append(data[offset + 4 : offset + 8].decode("latin-1"))
        if size == 1:
            size = int.from_bytes(data[offset + 8 : offset + 16], "big")
        if size < 8:
            break
        offset += size
    return names


def sample_frames(count: int, width: int, height: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth moving gradients with a little texture: realistic for H.264, easy to compare."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    noise = rng.normal(0, 2, size=(height, width, 1)).astype(np.float32)  # luma-only grain
    frames = []
    for i in range(count):
        # Colour varies slowly (as on a face), so 4:2:0 chroma subsampling costs little.
        r = 128 + 90 * np.sin((xs + 3 * i) / 16.0)
        g = 120 + 80 * np.cos((ys - 2 * i) / 18.0)
        b = 110 + 50 * np.sin((xs + ys + 5 * i) / 24.0)
        frame = np.stack([r, g, b], axis=2) + noise  # H x W x 3
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return frames


def _settled_cmdline(entry: Path) -> list[bytes] | None:
    """The process's argv; a process in the middle of an exec reads as empty for a moment, so
    read again until it has one (None if the process is gone)."""
    deadline = time.monotonic() + 1.0
    while True:
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            return None
        if raw or time.monotonic() > deadline:
            return raw.split(b"\0")
        time.sleep(0.001)


def child_ffmpeg_pids() -> list[int]:
    """FFmpeg processes whose parent is this test process (zombies included); a child that
    is still `setpriv` about to exec FFmpeg counts as FFmpeg."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if comm == "setpriv":
            argv = _settled_cmdline(entry)
            if argv is None:
                continue
            comm = (
                "ffmpeg"
                if any(Path(a.decode(errors="replace")).name.startswith("ffmpeg") for a in argv)
                else comm
            )
        if ppid == me and comm.startswith("ffmpeg"):
            found.append(int(entry.name))
    return found
