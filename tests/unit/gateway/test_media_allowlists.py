"""Every FFmpeg/ffprobe the services start names its demuxers and protocols before each input,
and is started through services/common/ffmpeg_safety.py (a guarded child).

The dynamic test runs the real media paths of the gateway (probe, trim, audio extraction,
frame decoding) and of the encoder (both audio paths) and records each argv on its way to
`ffmpeg_safety.popen` (the real process still runs). The static test fails when any service
module that mentions FFmpeg starts processes some other way."""

from __future__ import annotations

import os
import re
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from services.common import ffmpeg_safety
from services.encoder.config import EncoderConfig
from services.encoder.encoder import EncodeParams, EncodeSession
from services.gateway.pipeline.media import FrameDecoder, extract_audio, probe_video, trim_video
from tests.unit.encoder.media_tools import FFMPEG, FFPROBE, make_hero_video, needs_ffmpeg

SERVICES = Path(__file__).resolve().parents[3] / "services"
ALLOWED = set(ffmpeg_safety.VIDEO_DEMUXERS) | {"rawvideo"}


def _inputs(argv: list[str]) -> list[tuple[list[str], str]]:
    """(options before it, the input) for every input of an ffmpeg/ffprobe argv."""
    tool = Path(argv[0]).name
    if tool == "ffmpeg":
        found, start = [], 0
        for index, arg in enumerate(argv):
            if arg == "-i":
                found.append((argv[start:index], argv[index + 1]))
                start = index + 2
        return found
    assert tool == "ffprobe", argv
    return [(argv[1:-1], argv[-1])]


def _option(options: list[str], name: str) -> str | None:
    values = [options[i + 1] for i, arg in enumerate(options[:-1]) if arg == name]
    return values[-1] if values else None


@pytest.fixture
def recorded(monkeypatch) -> list[list[str]]:
    seen: list[list[str]] = []
    real = ffmpeg_safety._SPAWNER.popen

    def spy(argv, **kwargs):
        seen.append(list(argv))
        return real(argv, **kwargs)

    monkeypatch.setattr(ffmpeg_safety._SPAWNER, "popen", spy)
    return seen


@pytest.mark.ffmpeg
@needs_ffmpeg
def test_every_media_call_names_demuxers_and_protocols(recorded, tmp_path) -> None:
    hero = make_hero_video(tmp_path / "hero.mp4", seconds=1.0)
    probe_video(hero)
    info = trim_video(hero, tmp_path / "t.mkv", 1.0)
    extract_audio(tmp_path / "t.mkv", tmp_path / "a.mka")
    with FrameDecoder(tmp_path / "t.mkv", info) as decoder:
        frames = list(decoder)
    config = EncoderConfig(ffmpeg=FFMPEG, ffprobe=FFPROBE, tmp_dir=str(tmp_path))
    audio = (tmp_path / "a.mka").read_bytes()
    for expected in (len(frames), 0):  # audio made while frames stream, and after them
        params = EncodeParams(
            fps=Fraction(25),
            crf=23,
            preset="ultrafast",
            audio_bytes=len(audio),
            expected_frames=expected,
        )
        with EncodeSession(config, params) as session:
            session.add_audio(audio)
            for index, frame in enumerate(frames):
                session.add_frame(index, np.ascontiguousarray(frame))
            session.finish()
    media_calls = [argv for argv in recorded if not {"-version", "-encoders"} & set(argv)]
    assert len(media_calls) >= 12, media_calls
    for argv in media_calls:
        inputs = _inputs(argv)
        assert inputs, argv
        for options, source in inputs:
            formats = _option(options, "-format_whitelist")
            protocols = _option(options, "-protocol_whitelist")
            assert formats and set(formats.split(",")) <= ALLOWED, argv
            if source.startswith("pipe:"):
                assert protocols == "pipe" and _option(options, "-f") == "rawvideo", argv
            else:
                assert protocols == "file", argv
                forced = _option(options, "-f")
                if Path(argv[0]).name == "ffmpeg":
                    assert forced in ffmpeg_safety.VIDEO_DEMUXERS, argv
                if forced == "mov" or forced is None:
                    assert _option(options, "-enable_drefs") == "0", argv


def test_no_service_starts_ffmpeg_another_way() -> None:
    starts = re.compile(
        r"subprocess\.(run|Popen|call|check_call|check_output)\(|"
        r"\bffmpeg\.run(_async)?\(|\.run_async\(|os\.(system|popen|exec\w*)\("
    )
    offenders = []
    for path in SERVICES.rglob("*.py"):
        if path.name == "ffmpeg_safety.py":
            continue
        text = path.read_text()
        if re.search(r"ffmpeg|ffprobe", text, re.IGNORECASE) and starts.search(text):
            offenders.append(str(path.relative_to(SERVICES)))
    assert offenders == []


def test_demuxer_names_and_refusals() -> None:
    assert ffmpeg_safety.demuxer_of("mov,mp4,m4a,3gp,3g2,mj2") == "mov"
    assert ffmpeg_safety.demuxer_of("matroska,webm") == "matroska"
    for name in ("hls", "concat", "image2", "sdp", "lavfi", "wav", ""):
        with pytest.raises(ffmpeg_safety.UnsafeMediaError):
            ffmpeg_safety.demuxer_of(name)
    with pytest.raises(ffmpeg_safety.UnsafeMediaError):
        ffmpeg_safety.input_options("hls")
    assert (
        ffmpeg_safety.refused_demuxer(b"[hls @ 0x55] Format not on whitelist 'mov,matroska,avi'\n")
        == "hls"
    )
    assert ffmpeg_safety.refused_demuxer(b"moov atom not found") is None


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"  # a zombie has exited


def test_kill_group_takes_grandchildren_and_missing_tools_raise(tmp_path) -> None:
    marker = tmp_path / "grandchild.pid"
    proc = ffmpeg_safety.popen(["sh", "-c", f"sleep 30 & echo $! > {marker}; wait"])
    deadline = time.monotonic() + 5
    while not marker.exists() or not marker.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    grandchild = int(marker.read_text())
    assert os.getpgid(grandchild) == proc.pid  # the child leads its own group
    ffmpeg_safety.kill_group(proc)
    deadline = time.monotonic() + 5
    while not _gone(grandchild):
        assert time.monotonic() < deadline, "the grandchild outlived its group"
        time.sleep(0.02)
    with pytest.raises(FileNotFoundError):
        ffmpeg_safety.popen([str(tmp_path / "no-such-ffmpeg")])
