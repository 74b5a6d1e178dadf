"""A generated corpus of hostile and unusual driving videos, made with FFmpeg into a folder.

`intake` is what the gateway's intake must answer: "accept" (202) or the 422 reason.
`job` (for accepted clips that are run end to end) is "succeeded" or the failure code expected.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from services.cli.demo_media import write_hero_clip


@dataclass(frozen=True)
class VideoCase:
    """One corpus entry: a test id, the file and the expected intake answer."""

    id: str
    path: Path
    intake: str
    job: str | None = None


def _ffmpeg(*args: str) -> None:
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args],
        check=True,
        timeout=120,
    )


def _src(size: str, rate: float, seconds: float, kind: str = "testsrc") -> list[str]:
    return ["-f", "lavfi", "-i", f"{kind}=size={size}:rate={rate}:d={seconds}"]


H264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
TONE = ["-f", "lavfi", "-i", "sine=frequency=300:duration=1"]


def _bytes_cases(folder: Path, plain: Path, faststart: Path) -> list[VideoCase]:
    data, fast = plain.read_bytes(), faststart.read_bytes()
    blobs: dict[str, tuple] = {
        "empty": (b"", "empty_file"),
        "garbage": (b"\x00\x01not a video" * 300, "bad_video"),
        "text": (b"I am a text file pretending to be a video\n" * 50, "bad_video"),
        "html": (b"<html><body>" + b"x" * 2000 + b"</body></html>", "bad_video"),
        "zip": (b"PK\x03\x04" + b"\x00" * 3000, "bad_video"),
        "mp4-header-only": (data[:64], "bad_video"),
        "mp4-cut-1k": (data[:1024], "bad_video"),
        "mp4-cut-half-moov-at-end": (data[: len(data) // 2], "bad_video"),
        "mp4-cut-90pct-moov-at-end": (data[: len(data) * 9 // 10], "no_video_stream"),
        "mp4-no-ftyp": (data[32:], "accept", "no_frames"),
        "mp4-zeroed-middle": (data[:200] + b"\x00" * (len(data) - 400) + data[-200:], "bad_video"),
        "mp4-trailing-junk": (data + b"<?php system($_GET['c']); ?>" * 20, "accept", "no_face"),
        "faststart-cut-header": (fast[:2048], "accept", "no_frames"),
    }
    cases = []
    for name, (blob, intake, *job) in blobs.items():
        path = folder / f"{name}.mp4"
        path.write_bytes(blob)
        cases.append(VideoCase(f"bytes-{name}", path, intake, *job))
    return cases


def _encoded_cases(folder: Path, face: Path) -> list[VideoCase]:
    """Each entry: id -> (ffmpeg args before the output, suffix, intake answer, job answer)."""
    specs: dict[str, tuple[list[str], str, str, str | None]] = {
        "audio-only-aac": (TONE + ["-c:a", "aac"], "m4a", "no_video_stream", None),
        "audio-only-wav": (TONE, "wav", "unsupported_container", None),
        "audio-only-mp3": (TONE + ["-c:a", "libmp3lame"], "mp3", "unsupported_container", None),
        "gif": (_src("32x32", 5, 1), "gif", "unsupported_container", None),
        "png-as-video": (
            _src("32x32", 1, 1) + ["-frames:v", "1"],
            "png",
            "unsupported_container",
            None,
        ),
        "mjpeg-avi": (_src("32x32", 5, 1) + ["-c:v", "mjpeg"], "avi", "accept", "no_face"),
        "frame-rate-240": (_src("32x32", 240, 0.2) + H264, "mp4", "bad_frame_rate", None),
        "far-too-long-11min": (_src("16x16", 1, 660) + H264, "mp4", "video_too_long", None),
        "8k-one-frame": (
            _src("8192x4320", 1, 1, "color") + H264 + ["-frames:v", "1"],
            "mp4",
            "video_too_large",
            None,
        ),
        "tall-5000": (
            _src("64x5000", 1, 1, "color") + H264 + ["-frames:v", "1"],
            "mp4",
            "video_too_large",
            None,
        ),
        "zero-frames-with-audio": (
            _src("32x32", 25, 1)
            + TONE
            + ["-map", "0:v", "-map", "1:a", "-frames:v", "0", "-t", "1", "-c:a", "aac"]
            + H264,
            "mp4",
            "no_video_stream",
            None,
        ),
        "no-face-testsrc": (_src("64x48", 5, 1) + H264, "mp4", "accept", "no_face"),
        "4k-one-frame-no-face": (
            _src("3840x2160", 1, 1, "color") + H264 + ["-frames:v", "1"],
            "mp4",
            "accept",
            "no_face",
        ),
        "one-frame-face": (
            ["-i", str(face), "-frames:v", "1", *H264],
            "mp4",
            "accept",
            "succeeded",
        ),
        "odd-size-face": (
            ["-i", str(face), "-vf", "scale=191:143", "-c:v", "mpeg4"],
            "mp4",
            "accept",
            "succeeded",
        ),
        "vfr-face": (
            [
                "-i",
                str(face),
                "-vf",
                "setpts='N/5/TB+if(gt(N,2),0.4/TB,0)'",
                "-fps_mode",
                "vfr",
                *H264,
            ],
            "mp4",
            "accept",
            "succeeded",
        ),
        "turned-face": (["-i", str(face), "-vf", "transpose=2", *H264], "mp4", "accept", "no_face"),
        "rotated-90-face": (
            ["-i", str(folder / "turned-face.mp4"), "-c", "copy", "-metadata:s:v:0", "rotate=90"],
            "mp4",
            "accept",
            "succeeded",
        ),
        "4k-face": (
            ["-i", str(face), "-vf", "scale=3840:2160", "-frames:v", "2", *H264],
            "mp4",
            "accept",
            "succeeded",
        ),
    }
    cases = []
    for name, (args, suffix, intake, job) in specs.items():
        path = folder / f"{name}.{suffix}"
        _ffmpeg(*args, str(path))
        cases.append(VideoCase(f"encoded-{name}", path, intake, job))
    return cases


def video_corpus(folder: Path) -> list[VideoCase]:
    """Build every video case under `folder` (about 30 files, a few seconds of FFmpeg)."""
    folder.mkdir(parents=True, exist_ok=True)
    plain = folder / "plain.mp4"
    _ffmpeg(*_src("64x48", 10, 1), *TONE, *H264, "-c:a", "aac", "-shortest", str(plain))
    faststart = folder / "faststart.mp4"
    _ffmpeg("-i", str(plain), "-c", "copy", "-movflags", "+faststart", str(faststart))
    face = write_hero_clip(folder / "face.mp4", seconds=0.6, fps=5, size=160)
    return _bytes_cases(folder, plain, faststart) + _encoded_cases(folder, face)


def video_case_ids() -> list[str]:
    """The ids without building the files (for parametrizing at collection time)."""
    bytes_ids = [
        "empty",
        "garbage",
        "text",
        "html",
        "zip",
        "mp4-header-only",
        "mp4-cut-1k",
        "mp4-cut-half-moov-at-end",
        "mp4-cut-90pct-moov-at-end",
        "mp4-no-ftyp",
        "mp4-zeroed-middle",
        "mp4-trailing-junk",
        "faststart-cut-header",
    ]
    encoded_ids = [
        "audio-only-aac",
        "audio-only-wav",
        "audio-only-mp3",
        "gif",
        "png-as-video",
        "mjpeg-avi",
        "frame-rate-240",
        "far-too-long-11min",
        "8k-one-frame",
        "tall-5000",
        "zero-frames-with-audio",
        "no-face-testsrc",
        "4k-one-frame-no-face",
        "one-frame-face",
        "odd-size-face",
        "vfr-face",
        "turned-face",
        "rotated-90-face",
        "4k-face",
    ]
    return [f"bytes-{i}" for i in bytes_ids] + [f"encoded-{i}" for i in encoded_ids]
