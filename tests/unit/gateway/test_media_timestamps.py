"""The `seconds` limit holds whatever the frame timestamps say: a Matroska file whose frames
all carry timestamp 0 is refused (`bad_timestamps`), one whose timestamps run far faster than
its declared rate is cut at seconds x fps frames, and legit files keep every frame."""

from __future__ import annotations

import json
import subprocess
from fractions import Fraction
from pathlib import Path

import pytest

from services.gateway.pipeline.media import (
    FrameDecoder,
    MediaError,
    max_frames,
    probe_video,
    trim_video,
)
from tests.reliability.indirection_corpus import colour_clip, ffmpeg
from tests.unit.encoder.media_tools import needs_ffmpeg

pytestmark = [pytest.mark.ffmpeg, needs_ffmpeg]


def _packets(path: Path) -> list[tuple[str, str]]:
    done = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts,dts",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return [(p.get("pts"), p.get("dts")) for p in json.loads(done.stdout)["packets"]]


def _retimed(tmp_path: Path, name: str, expr: str, frames: int = 100) -> Path:
    """A 25 fps H.264 clip of `frames` frames remuxed into Matroska with its packet
    timestamps rewritten by the `setts` bitstream filter (`expr` in a 1/1000 time base)."""
    src = colour_clip(
        tmp_path / f"{name}-src.mp4", "green", seconds=frames / 25, rate=25, extra=("-bf", "0")
    )
    out = tmp_path / f"{name}.mkv"
    ffmpeg("-i", str(src), "-c", "copy", "-bsf:v", f"setts=ts={expr}", str(out))
    return out


def test_all_zero_timestamps_are_refused(tmp_path: Path) -> None:
    hostile = _retimed(tmp_path, "zero", "0")
    packets = _packets(hostile)
    assert len(packets) == 100 and set(packets) == {(0, 0)}  # really all at 0
    for call in (
        lambda: probe_video(hostile),
        lambda: trim_video(hostile, tmp_path / "t.mkv", 1.0),
    ):
        with pytest.raises(MediaError) as err:
            call()
        assert err.value.reason == "bad_timestamps", err.value.message
        assert str(tmp_path) not in err.value.message


def test_backwards_timestamps_are_refused(tmp_path: Path) -> None:
    """Timestamps that restart every 10 frames (0..360 ms, then 0 again)."""
    hostile = _retimed(tmp_path, "loop", r"mod(N\,10)*40")
    with pytest.raises(MediaError) as err:
        trim_video(hostile, tmp_path / "t.mkv", 1.0)
    assert err.value.reason == "bad_timestamps"


def test_fast_timestamps_are_cut_at_seconds_times_fps(tmp_path: Path) -> None:
    """Rising timestamps 4 ms apart in a file that declares 25 fps: 100 frames within 0.4 s.
    A duration cut alone keeps all 100; the trim keeps 1 s x 25 fps = 25."""
    fast = _retimed(tmp_path, "fast", "N*4")
    info = probe_video(fast)
    assert info.fps == 25
    trimmed = trim_video(fast, tmp_path / "t.mkv", 1.0)
    assert trimmed.frames == 25 == max_frames(1.0, info.fps)
    assert len(_packets(tmp_path / "t.mkv")) == 25
    with FrameDecoder(tmp_path / "t.mkv", trimmed) as decoder:
        assert sum(1 for _ in decoder) == 25


@pytest.mark.parametrize(
    ("seconds", "rate", "expected"), [(1.0, 25, 25), (0.5, 25, 13), (2.0, 30, 60), (0.5, 10, 5)]
)
def test_legit_clips_keep_the_frames_their_length_allows(
    seconds: float, rate: int, expected: int, tmp_path: Path
) -> None:
    clip = colour_clip(tmp_path / "c.mp4", "white", seconds=3, rate=rate)
    info = trim_video(clip, tmp_path / "t.mkv", seconds)
    assert info.frames == expected == max_frames(seconds, Fraction(rate))
    assert info.frames <= seconds * rate + 1


def test_max_frames() -> None:
    assert max_frames(10, Fraction(30000, 1001)) == 300
    assert max_frames(1, Fraction(25)) == 25
    assert max_frames(0.01, Fraction(25)) == 1
