"""FFmpeg argv building, process handling (stderr tail, kill) and tool checks."""

from __future__ import annotations

import itertools
import stat
from fractions import Fraction

import pytest

from services.common.errors import InvalidInputError, UnavailableError
from services.encoder import ffmpeg as ff
from tests.unit.encoder.media_tools import FFMPEG, FFPROBE, make_hero_video, needs_ffmpeg


def _pairs(argv: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for flag, value in itertools.pairwise(argv):
        if flag.startswith("-"):
            found.setdefault(flag, []).append(value)
    return found


def test_video_argv_exact_rate_and_quality(tmp_path):
    argv = ff.video_encode_argv(
        "ffmpeg",
        width=66,
        height=64,
        fps=Fraction(30000, 1001),
        crf=20,
        preset="fast",
        output=tmp_path / "o.mp4",
        faststart=True,
    )
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    flags = _pairs(argv)
    assert flags["-framerate"] == ["30000/1001"]
    assert flags["-f"] == ["rawvideo"] and flags["-s"] == ["66x64"] and flags["-i"] == ["pipe:0"]
    assert flags["-pix_fmt"] == ["rgb24", "yuv420p"]
    assert flags["-vcodec"] == ["libx264"] and flags["-crf"] == ["20"]
    assert flags["-preset"] == ["fast"]
    assert flags["-movflags"] == ["+faststart"]
    assert "-shortest" not in argv and argv[0] == "ffmpeg" and "-y" in argv
    no_fs = ff.video_encode_argv(
        "ffmpeg",
        width=2,
        height=2,
        fps=Fraction(25),
        crf=18,
        preset="veryfast",
        output=tmp_path / "o.mp4",
        faststart=False,
    )
    assert "-movflags" not in no_fs and _pairs(no_fs)["-framerate"] == ["25/1"]


def test_mux_argv_cuts_and_pads_audio_to_video_length(tmp_path):
    argv = ff.mux_audio_argv(
        "ffmpeg",
        video=tmp_path / "v.mp4",
        audio_source=tmp_path / "a.mp4",
        duration=Fraction(300 * 1001, 30000),
        bitrate="96k",
        output=tmp_path / "o.mp4",
    )
    flags = _pairs(argv)
    assert flags["-t"] == ["10.010000"]  # on the audio input, before its -i
    assert argv.index("-t") < argv.index(str(tmp_path / "a.mp4"))
    graph = flags["-filter_complex"][0]
    assert "aresample=async=1:first_pts=0" in graph
    assert "apad=whole_dur=10.010000" in graph and "atrim=end=10.010000" in graph
    assert flags["-vcodec"] == ["copy"] and flags["-acodec"] == ["aac"] and flags["-b:a"] == ["96k"]
    assert flags["-movflags"] == ["+faststart"] and "-shortest" not in argv


def test_audio_alone_then_copied_in(tmp_path):
    argv = ff.audio_encode_argv(
        "ffmpeg",
        audio_source=tmp_path / "a.mp4",
        duration=Fraction(10),
        bitrate="96k",
        output=tmp_path / "a.m4a",
    )
    flags = _pairs(argv)
    assert flags["-t"] == ["10.000000"] and "atrim=end=10.000000" in flags["-filter_complex"][0]
    assert flags["-acodec"] == ["aac"] and "-vcodec" not in flags
    mux = ff.mux_copy_argv(
        "ffmpeg",
        video=tmp_path / "v.mp4",
        audio=tmp_path / "a.m4a",
        output=tmp_path / "o.mp4",
        comment="random weights",
    )
    flags = _pairs(mux)
    assert flags["-vcodec"] == ["copy"] and flags["-acodec"] == ["copy"]
    assert flags["-movflags"] == ["+faststart"] and flags["-metadata"] == ["comment=random weights"]
    assert "-filter_complex" not in flags


def test_seconds_arg_is_exact_to_the_microsecond():
    assert ff.seconds_arg(Fraction(1001, 30000)) == "0.033367"
    assert ff.seconds_arg(Fraction(10)) == "10.000000"


@pytest.mark.ffmpeg
@needs_ffmpeg
def test_failure_logs_stderr_tail_but_keeps_it_out_of_the_message(tmp_path):
    argv = ff.video_encode_argv(
        FFMPEG,
        width=16,
        height=16,
        fps=Fraction(25),
        crf=18,
        preset="no-such-preset",
        output=tmp_path / "o.mp4",
        faststart=False,
    )
    proc = ff.FFmpegProcess(argv, tmp_path / "err.log", stdin=True)
    with pytest.raises(ff.FFmpegError) as info:
        for _ in range(50):
            proc.write(bytes(16 * 16 * 3))
        proc.finish(30)
    assert info.value.message == "ffmpeg exited with code 1"
    assert "preset" in info.value.detail.lower()
    assert info.value.reason == "ffmpeg_failed"


@pytest.mark.ffmpeg
@needs_ffmpeg
def test_kill_stops_and_reaps(tmp_path):
    argv = ff.video_encode_argv(
        FFMPEG,
        width=16,
        height=16,
        fps=Fraction(25),
        crf=18,
        preset="veryfast",
        output=tmp_path / "o.mp4",
        faststart=False,
    )
    proc = ff.FFmpegProcess(argv, tmp_path / "err.log", stdin=True)
    proc.write(bytes(16 * 16 * 3))
    proc.kill()
    proc.kill()  # idempotent
    assert proc.proc.returncode is not None
    with pytest.raises(ff.FFmpegError, match="stopped"):
        proc.write(bytes(16 * 16 * 3 * 1000))


def test_missing_binary_is_unavailable(tmp_path):
    with pytest.raises(UnavailableError):
        ff.FFmpegProcess([str(tmp_path / "nope")], tmp_path / "e.log", stdin=False)
    with pytest.raises(UnavailableError, match="not usable"):
        ff.check_tools(str(tmp_path / "nope"), "ffprobe")


@pytest.mark.ffmpeg
@needs_ffmpeg
def test_check_tools_finds_libx264_and_aac():
    assert ff.check_tools(FFMPEG, FFPROBE).startswith("ffmpeg version")


def test_check_tools_reports_missing_encoders(tmp_path):
    fake = tmp_path / "fake-ffmpeg"
    fake.write_text("#!/bin/sh\necho 'ffmpeg version 0'\necho ' V..... mpeg4  MPEG-4'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(UnavailableError, match="libx264, aac"):
        ff.check_tools(str(fake), str(fake))


@pytest.mark.ffmpeg
@needs_ffmpeg
def test_probe_has_audio(tmp_path):
    with_audio = make_hero_video(tmp_path / "a.mp4", seconds=0.5, audio=True)
    silent = make_hero_video(tmp_path / "s.mp4", seconds=0.5, audio=False)
    assert ff.probe_has_audio(FFPROBE, with_audio) is True
    assert ff.probe_has_audio(FFPROBE, silent) is False
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 10)
    with pytest.raises(InvalidInputError, match="not a readable media file"):
        ff.probe_has_audio(FFPROBE, junk)
