"""EncodeSession with real FFmpeg: codec, exact rate, frame count, audio, durations, PSNR."""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from services.common.errors import InvalidInputError, ResourceExhaustedError
from services.encoder.config import EncoderConfig
from services.encoder.encoder import EncodeCancelled, EncodeParams, EncodeSession
from services.encoder.pasteback import PasteBack
from tests.unit.encoder.media_tools import (
    FFMPEG,
    FFPROBE,
    child_ffmpeg_pids,
    decode_audio,
    decode_rgb,
    ffprobe,
    make_hero_video,
    needs_ffmpeg,
    psnr,
    sample_frames,
    stream,
    top_level_atoms,
)

pytestmark = [pytest.mark.ffmpeg, needs_ffmpeg]

NTSC = Fraction(30000, 1001)
MIN_PSNR_DB = 33.0  # CRF 18 on these frames: ~36 dB; lossless 4:2:0 alone: ~42 dB


@pytest.fixture(scope="module")
def heroes(tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("heroes")
    return {
        "long": make_hero_video(folder / "long.mp4", seconds=2.0).read_bytes(),
        "short": make_hero_video(folder / "short.mp4", seconds=0.5).read_bytes(),
        "silent": make_hero_video(folder / "silent.mp4", seconds=1.0, audio=False).read_bytes(),
    }


@pytest.fixture
def config(tmp_path) -> EncoderConfig:
    (tmp_path / "work").mkdir()
    return EncoderConfig(ffmpeg=FFMPEG, ffprobe=FFPROBE, tmp_dir=str(tmp_path / "work"))


def _encode(
    config, frames, *, fps=NTSC, audio=b"", chunk=4096, announce=True, **extra
) -> tuple[Path, object]:
    """`announce`: the header gives the frame count (the audio is then encoded while frames
    stream and only copied in at the end); without it the audio is encoded after the frames."""
    params = EncodeParams(
        fps=fps,
        crf=18,
        preset="veryfast",
        audio_bytes=len(audio),
        total_frames=len(frames) if announce else 0,
        **extra,
    )
    out = Path(config.tmp_dir).parent / "out.mp4"
    with EncodeSession(config, params) as session:
        for start in range(0, len(audio), chunk):
            session.add_audio(audio[start : start + chunk])
        for i, frame in enumerate(frames):
            session.add_frame(i, frame)
        result = session.finish()
        out.write_bytes(b"".join(session.read_chunks(1000)))
    assert not any(Path(config.tmp_dir).iterdir()), "temporary files left behind"
    return out, result


def _check_video(info: dict, *, frames: int, rate: str, width: int, height: int) -> dict:
    video = stream(info, "video")
    assert video["codec_name"] == "h264" and video["pix_fmt"] == "yuv420p"
    assert video["r_frame_rate"] == rate and video["avg_frame_rate"] == rate
    assert int(video["nb_read_frames"]) == frames
    assert (video["width"], video["height"]) == (width, height)
    return video


@pytest.mark.parametrize("announce", [True, False], ids=["audio-while-streaming", "audio-after"])
def test_ntsc_with_longer_audio_is_cut_to_video_length(config, heroes, announce):
    frames = sample_frames(30, 64, 48)
    out, result = _encode(config, frames, audio=heroes["long"], announce=announce)
    info = ffprobe(out)
    video = _check_video(info, frames=30, rate="30000/1001", width=64, height=48)
    audio = stream(info, "audio")
    assert audio is not None and audio["codec_name"] == "aac"
    assert float(video["duration"]) == pytest.approx(30 * 1001 / 30000, abs=1e-3)
    assert abs(float(audio["duration"]) - float(video["duration"])) <= 1 / float(NTSC)
    assert (result.frames, result.has_audio, result.duration) == (30, True, Fraction(1001, 1000))
    assert result.bytes == out.stat().st_size
    atoms = top_level_atoms(out)
    assert atoms.index("moov") < atoms.index("mdat")  # +faststart
    decoded = decode_rgb(out, 64, 48)
    assert len(decoded) == 30
    scores = [psnr(a, b) for a, b in zip(decoded, frames)]
    assert min(scores) >= MIN_PSNR_DB, f"PSNR {min(scores):.1f} dB"
    # Each decoded frame matches its own input far better than its neighbour (order kept).
    assert all(psnr(decoded[i], frames[i + 1]) < scores[i] - 5 for i in range(29))


@pytest.mark.parametrize("announce", [True, False], ids=["audio-while-streaming", "audio-after"])
def test_shorter_audio_is_padded_to_video_length(config, heroes, announce):
    out, result = _encode(
        config, sample_frames(45, 64, 48), audio=heroes["short"], announce=announce
    )
    info = ffprobe(out)
    video = _check_video(info, frames=45, rate="30000/1001", width=64, height=48)
    audio = stream(info, "audio")
    assert float(video["duration"]) == pytest.approx(1.5015, abs=1e-3)
    assert abs(float(audio["duration"]) - float(video["duration"])) <= 1 / float(NTSC)
    assert result.has_audio


@pytest.mark.parametrize("expected", [45, 30, 60], ids=["right", "fewer", "more"])
def test_expected_frames_is_a_hint_the_audio_follows_the_real_length(config, heroes, expected):
    """The audio track made early for `expected_frames` is replaced when the count differs."""
    out, result = _encode(
        config,
        sample_frames(45, 64, 48),
        audio=heroes["long"],
        announce=False,
        expected_frames=expected,
    )
    info = ffprobe(out)
    video = _check_video(info, frames=45, rate="30000/1001", width=64, height=48)
    audio = stream(info, "audio")
    assert float(video["duration"]) == pytest.approx(1.5015, abs=1e-3)
    assert abs(float(audio["duration"]) - float(video["duration"])) <= 1 / float(NTSC)
    assert result.frames == 45 and result.has_audio


def test_late_audio_keeps_its_delay_and_the_video_length(config, tmp_path):
    hero = make_hero_video(tmp_path / "late.mp4", seconds=2.0, audio_delay=0.3).read_bytes()
    out, _ = _encode(config, sample_frames(50, 64, 48), fps=Fraction(25), audio=hero)
    info = ffprobe(out)
    video, audio = stream(info, "video"), stream(info, "audio")
    assert float(audio["start_time"]) == pytest.approx(0.0, abs=1e-3)
    assert abs(float(audio["duration"]) - float(video["duration"])) <= 1 / 25
    samples = decode_audio(out)  # 8 kHz mono
    assert len(samples) == pytest.approx(2.0 * 8000, abs=8000 / 25)
    assert np.abs(samples[: int(0.25 * 8000)]).max() < 1e-3  # silence where the hero had none
    assert np.abs(samples[int(0.35 * 8000) : int(0.6 * 8000)]).max() > 0.1  # the tone


def test_hero_without_audio_gives_no_audio_track(config, heroes):
    out, result = _encode(
        config, sample_frames(10, 64, 48), fps=Fraction(25), audio=heroes["silent"]
    )
    info = ffprobe(out)
    _check_video(info, frames=10, rate="25/1", width=64, height=48)
    assert stream(info, "audio") is None and result.has_audio is False
    assert float(info["format"]["duration"]) == pytest.approx(0.4, abs=1e-3)


def test_no_audio_source_and_faststart(config):
    out, result = _encode(config, sample_frames(12, 32, 32), fps=Fraction(24000, 1001))
    info = ffprobe(out)
    _check_video(info, frames=12, rate="24000/1001", width=32, height=32)
    assert stream(info, "audio") is None and not result.has_audio
    atoms = top_level_atoms(out)
    assert atoms.index("moov") < atoms.index("mdat")


def test_odd_sizes_are_padded_to_even(config):
    frames = sample_frames(8, 65, 63)
    out, _ = _encode(config, frames, fps=Fraction(25))
    _check_video(ffprobe(out), frames=8, rate="25/1", width=66, height=64)
    decoded = decode_rgb(out, 66, 64)
    worst = min(psnr(a[:63, :65], b) for a, b in zip(decoded, frames))
    assert worst >= MIN_PSNR_DB, f"PSNR {worst:.1f} dB"


def test_pasteback_output_is_the_canvas(config):
    canvas = sample_frames(1, 120, 90, seed=4)[0]
    m_c2o = np.array([[1.5, 0.1, 30.0], [-0.1, 1.5, 20.0], [0, 0, 1]])
    crops = [255 - c for c in sample_frames(6, 32, 32, seed=5)]
    out, _ = _encode(config, crops, fps=Fraction(25), canvas=canvas, m_c2o=m_c2o)
    _check_video(ffprobe(out), frames=6, rate="25/1", width=120, height=90)
    expected = [PasteBack(canvas, m_c2o, (32, 32))(c) for c in crops]
    decoded = decode_rgb(out, 120, 90)
    worst = min(psnr(a, b) for a, b in zip(decoded, expected))
    assert worst >= MIN_PSNR_DB, f"PSNR {worst:.1f} dB"


def test_encoding_starts_with_the_first_frame(config):
    params = EncodeParams(fps=Fraction(25), crf=18, preset="ultrafast")
    rng = np.random.default_rng(6)
    with EncodeSession(config, params) as session:
        session.add_frame(0, rng.integers(0, 256, (128, 128, 3), dtype=np.uint8))
        assert child_ffmpeg_pids(), "FFmpeg should run after the first frame"
        for i in range(1, 60):
            session.add_frame(i, rng.integers(0, 256, (128, 128, 3), dtype=np.uint8))
        # Noise frames cost ~20 kB each: MP4 data must reach the disk before finish().
        written = session.tmp / "out.mp4"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and written.stat().st_size < 100_000:
            time.sleep(0.05)
        assert written.stat().st_size >= 100_000, "frames were not encoded before the end"
        assert session.finish().frames == 60


def test_abort_kills_ffmpeg_and_removes_files(config, heroes):
    params = EncodeParams(fps=NTSC, crf=18, preset="veryfast", audio_bytes=len(heroes["long"]))
    session = EncodeSession(config, params)
    session.add_audio(heroes["long"])
    for i, frame in enumerate(sample_frames(5, 64, 48)):
        session.add_frame(i, frame)
    assert child_ffmpeg_pids() and session.tmp.exists()
    session.abort()
    assert not child_ffmpeg_pids() and not session.tmp.exists()
    assert not any(Path(config.tmp_dir).iterdir())
    with pytest.raises(EncodeCancelled):
        session.add_frame(5, sample_frames(1, 64, 48)[0])


@pytest.mark.parametrize(
    "action,error,match",
    [
        ("out_of_order", InvalidInputError, "expected frame 1"),
        ("wrong_size", InvalidInputError, "expected 32x32"),
        ("audio_after_frame", InvalidInputError, "before the first frame"),
        ("too_many", ResourceExhaustedError, "more than 2 frames"),
        ("missing", InvalidInputError, "after 1 of 2 frames"),
    ],
)
def test_stream_order_errors(config, action, error, match):
    params = EncodeParams(fps=Fraction(25), crf=18, preset="ultrafast", total_frames=2)
    frame = np.zeros((32, 32, 3), np.uint8)
    with EncodeSession(config, params) as session, pytest.raises(error, match=match):
        session.add_frame(0, frame)
        if action == "out_of_order":
            session.add_frame(2, frame)
        elif action == "wrong_size":
            session.add_frame(1, np.zeros((32, 34, 3), np.uint8))
        elif action == "audio_after_frame":
            session.add_audio(b"x")
        elif action == "too_many":
            session.add_frame(1, frame)
            session.add_frame(2, frame)
        else:
            session.finish()
    assert not any(Path(config.tmp_dir).iterdir())


def test_audio_errors(config):
    frame = np.zeros((16, 16, 3), np.uint8)
    params = EncodeParams(fps=Fraction(25), crf=18, preset="ultrafast", audio_bytes=100)
    with EncodeSession(config, params) as session:
        with pytest.raises(InvalidInputError, match="exceeds the 100 bytes"):
            session.add_audio(bytes(101))
        session.add_audio(bytes(40))
        with pytest.raises(InvalidInputError, match="40 of 100 bytes"):
            session.add_frame(0, frame)
    with EncodeSession(config, params) as session:
        session.add_audio(b"garbage!" * 12 + b"1234")
        with pytest.raises(InvalidInputError, match="not a readable media file"):
            session.add_frame(0, frame)


@pytest.mark.parametrize(
    "changes,error,match",
    [
        ({"fps": Fraction(0)}, InvalidInputError, "fps"),
        ({"crf": 60}, InvalidInputError, "crf"),
        ({"preset": "warp9"}, InvalidInputError, "preset"),
        ({"total_frames": 10_000}, ResourceExhaustedError, "limit"),
        ({"expected_frames": -1}, InvalidInputError, "expected_frames"),
        ({"canvas": np.zeros((8, 8, 3), np.uint8)}, InvalidInputError, "both"),
    ],
)
def test_bad_params(config, changes, error, match):
    params = {"fps": Fraction(25), "crf": 18, "preset": "veryfast"}
    params.update(changes)
    with pytest.raises(error, match=match):
        EncodeSession(config, EncodeParams(**params))
    assert not any(Path(config.tmp_dir).iterdir())


def test_no_frames_is_an_error(config):
    params = EncodeParams(fps=Fraction(25), crf=18, preset="fast")
    with EncodeSession(config, params) as session, pytest.raises(InvalidInputError, match="any"):
        session.finish()


@pytest.mark.parametrize("with_audio", [False, True])
def test_comment_tag_is_written(config, heroes, with_audio):
    note = "Dynamics: rendered with seeded RANDOM LivePortrait weights"
    audio = heroes["long"] if with_audio else b""
    out, _ = _encode(config, sample_frames(5, 32, 32), audio=audio, comment=note)
    assert ffprobe(out)["format"]["tags"]["comment"] == note


def test_comment_must_be_printable_and_short(config):
    for bad in ("line\nbreak", "x" * 501):
        with pytest.raises(InvalidInputError, match="comment must be printable"):
            _encode(config, sample_frames(1, 32, 32), comment=bad)
