"""The encoder's audio source is untrusted bytes: a playlist, list or MP4 external reference
sent as the audio source is refused (`unsupported_container`) before anything it names is
opened, and FFmpeg runs that force a demuxer never follow one either. A FIFO sentinel records
every open of the secret file (see tests/reliability/indirection_corpus.py)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from services.common.errors import InvalidInputError
from services.encoder import ffmpeg as ff
from services.encoder.config import EncoderConfig
from services.encoder.encoder import EncodeParams, EncodeSession
from tests.reliability.indirection_corpus import HostileCase, Sentinel, hostile_cases
from tests.unit.encoder.media_tools import FFMPEG, FFPROBE, needs_ffmpeg

pytestmark = [pytest.mark.ffmpeg, needs_ffmpeg]
REFUSED = [
    "hls-file-url",
    "hls-absolute-path",
    "hls-http",
    "hls-aes-key-from-file",
    "hls-master-to-variant",
    "ffconcat",
    "ffconcat-file-url",
    "sdp-rtp",
    "dash-mpd",
    "mp4-external-reference",
    "png-image-as-video",
]


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory):
    watcher = Sentinel(tmp_path_factory.mktemp("encoder-indirection"))
    yield watcher
    watcher.close()


@pytest.fixture(scope="module")
def cases(sentinel) -> dict[str, HostileCase]:
    return {case.id: case for case in hostile_cases(sentinel)}


@pytest.mark.parametrize("case_id", REFUSED)
def test_probe_refuses_indirect_audio_sources(case_id: str, cases, sentinel) -> None:
    if case_id not in cases:
        pytest.skip(f"this FFmpeg has no demuxer for {case_id}")
    before = len(sentinel.hits)
    with pytest.raises(InvalidInputError) as err:
        ff.probe_audio_source(FFPROBE, cases[case_id].path)
    assert err.value.reason == "unsupported_container", err.value.message
    assert str(sentinel.folder) not in err.value.message
    assert sentinel.settle()[before:] == []


@pytest.mark.parametrize(
    "case_id",
    ["hls-file-url", "hls-master-to-variant", "ffconcat-file-url", "mp4-external-reference"],
)
def test_encode_session_refuses_them_as_audio(case_id: str, cases, sentinel, tmp_path) -> None:
    audio = cases[case_id].path.read_bytes()
    config = EncoderConfig(ffmpeg=FFMPEG, ffprobe=FFPROBE, tmp_dir=str(tmp_path))
    params = EncodeParams(fps=Fraction(25), crf=18, preset="ultrafast", audio_bytes=len(audio))
    before = len(sentinel.hits)
    with EncodeSession(config, params) as session:
        session.add_audio(audio)
        with pytest.raises(InvalidInputError) as err:
            session.add_frame(0, np.zeros((16, 16, 3), np.uint8))
    assert err.value.reason == "unsupported_container"
    assert sentinel.settle()[before:] == []


@pytest.mark.parametrize("audio_format", ["matroska", "mov"])
def test_forced_demuxer_never_opens_a_playlist(
    audio_format: str, cases, sentinel, tmp_path
) -> None:
    """Even past the probe, FFmpeg reads the audio source only with the named demuxer."""
    argv = ff.audio_encode_argv(
        FFMPEG,
        audio_source=cases["hls-file-url"].path,
        duration=Fraction(1),
        bitrate="64k",
        output=tmp_path / "a.m4a",
        audio_format=audio_format,
    )
    before = len(sentinel.hits)
    with pytest.raises(ff.FFmpegError) as err:
        ff.run_ffmpeg(argv, tmp_path / "err.log", 30)
    assert str(sentinel.folder) not in err.value.message
    assert sentinel.settle()[before:] == []


def test_video_pipe_input_names_format_and_protocol(tmp_path) -> None:
    argv = ff.video_encode_argv(
        "ffmpeg",
        width=16,
        height=16,
        fps=Fraction(25),
        crf=18,
        preset="veryfast",
        output=tmp_path / "o.mp4",
        faststart=True,
    )
    before_input = argv[: argv.index("-i")]
    for flag, value in (
        ("-f", "rawvideo"),
        ("-format_whitelist", "rawvideo"),
        ("-protocol_whitelist", "pipe"),
    ):
        assert before_input[before_input.index(flag) + 1] == value
    for build in (
        ff.mux_copy_argv(
            "ffmpeg", video=tmp_path / "v.mp4", audio=tmp_path / "a.m4a", output=tmp_path / "o.mp4"
        ),
        ff.mux_audio_argv(
            "ffmpeg",
            video=tmp_path / "v.mp4",
            audio_source=tmp_path / "s",
            duration=Fraction(1),
            bitrate="64k",
            output=tmp_path / "o.mp4",
            audio_format="avi",
        ),
    ):
        inputs = [i for i, arg in enumerate(build) if arg == "-i"]
        assert len(inputs) == 2
        for start, end in ((0, inputs[0]), (inputs[0], inputs[1])):
            chunk = build[start:end]
            assert "-format_whitelist" in chunk and "-protocol_whitelist" in chunk, build
            assert chunk[chunk.index("-protocol_whitelist") + 1] == "file"
