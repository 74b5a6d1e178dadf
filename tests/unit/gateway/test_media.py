"""Hero-video probing, trimming, hashing and streamed decoding with the real FFmpeg."""

from __future__ import annotations

import shutil
import signal
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from services.gateway.pipeline.media import (
    FrameDecoder,
    MediaError,
    MediaLimits,
    probe_video,
    read_image_file,
    sha256_file,
    trim_video,
)

pytestmark = [
    pytest.mark.ffmpeg,
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg"),
]


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-nostdin", *args], check=True)


def _make_video(
    path: Path,
    *,
    seconds: float = 2.0,
    size: str = "64x48",
    rate: str = "25",
    audio: bool = True,
    extra: tuple[str, ...] = (),
) -> Path:
    inputs = ["-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}:d={seconds}"]
    if audio:
        inputs += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"]
    codecs = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    codecs += ["-c:a", "aac", "-shortest"] if audio else []
    _ffmpeg(*inputs, *codecs, *extra, str(path))
    return path


def _decode_all(path: Path) -> np.ndarray:
    """Reference decode of the whole file with FFmpeg's own autorotation."""
    out = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            str(path),
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ],
        check=True,
        capture_output=True,
    ).stdout
    return np.frombuffer(out, np.uint8)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return _make_video(tmp_path_factory.mktemp("media") / "clip.mp4")


def test_probe_reports_size_rate_audio(clip: Path) -> None:
    info = probe_video(clip)
    assert (info.width, info.height, info.fps) == (64, 48, Fraction(25))
    assert info.has_audio and info.codec == "h264" and info.rotation == 0
    assert info.duration_s == pytest.approx(2.0, abs=0.1)


def test_trim_is_exact_deterministic_and_keeps_audio(clip: Path, tmp_path: Path) -> None:
    first = trim_video(clip, tmp_path / "a.mkv", 1.0)
    second = trim_video(clip, tmp_path / "b.mkv", 1.0)
    assert first.frames == 25 and first.has_audio
    assert sha256_file(tmp_path / "a.mkv") == sha256_file(tmp_path / "b.mkv")
    other = trim_video(clip, tmp_path / "c.mkv", 0.5)
    assert other.frames < first.frames
    assert sha256_file(tmp_path / "c.mkv") != sha256_file(tmp_path / "a.mkv")
    assert second.frames == first.frames


def test_decoder_streams_every_frame_like_ffmpeg(clip: Path, tmp_path: Path) -> None:
    info = trim_video(clip, tmp_path / "t.mkv", 1.0)
    with FrameDecoder(tmp_path / "t.mkv", info) as decoder:
        frames = list(decoder)
    assert len(frames) == info.frames == 25
    assert frames[0].shape == (48, 64, 3) and frames[0].dtype == np.uint8
    np.testing.assert_array_equal(
        np.concatenate([f.ravel() for f in frames]), _decode_all(tmp_path / "t.mkv")
    )


def test_rotation_metadata_survives_the_trim(clip: Path, tmp_path: Path) -> None:
    rotated = tmp_path / "rot.mp4"
    _ffmpeg("-i", str(clip), "-c", "copy", "-metadata:s:v", "rotate=90", str(rotated))
    info = trim_video(rotated, tmp_path / "rot.mkv", 2.0)
    assert (info.width, info.height) == (48, 64) and info.rotation in (90, 270)
    with FrameDecoder(tmp_path / "rot.mkv", info) as decoder:
        frames = list(decoder)
    assert frames[0].shape == (64, 48, 3)
    np.testing.assert_array_equal(np.concatenate([f.ravel() for f in frames]), _decode_all(rotated))


def test_decoder_shrinks_large_frames_and_stops_early(tmp_path: Path) -> None:
    video = _make_video(tmp_path / "big.mp4", size="320x180", seconds=1.0, audio=False)
    info = trim_video(video, tmp_path / "big.mkv", 1.0)
    assert not info.has_audio
    decoder = FrameDecoder(tmp_path / "big.mkv", info, max_side=160)
    first = next(iter(decoder))
    assert first.shape == (90, 160, 3)
    decoder.close()
    assert decoder._proc.returncode is not None


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        ("empty", "empty_file"),
        ("garbage", "bad_video"),
        ("audio_only", "no_video_stream"),
        ("truncated", "bad_video"),
        ("gif", "unsupported_container"),
    ],
)
def test_bad_videos_fail_with_a_reason(make: str, reason: str, clip: Path, tmp_path: Path) -> None:
    path = tmp_path / f"{make}.bin"
    if make == "empty":
        path.write_bytes(b"")
    elif make == "garbage":
        path.write_bytes(b"\x00\x01not a video" * 100)
    elif make == "audio_only":
        path = tmp_path / "a.m4a"
        _ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", str(path))
    elif make == "truncated":
        data = clip.read_bytes()  # moov at the end: a cut file has no index at all
        path.write_bytes(data[: len(data) // 2])
    elif make == "gif":
        path = tmp_path / "a.gif"
        _ffmpeg("-f", "lavfi", "-i", "testsrc=size=32x32:rate=5:d=1", str(path))
    with pytest.raises(MediaError) as err:
        trim_video(path, tmp_path / "out.mkv", 1.0)
    assert err.value.reason == reason
    assert err.value.message


def test_limits_on_duration_size_and_bytes(clip: Path, tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="over the 1 s limit") as err:
        probe_video(clip, MediaLimits(max_duration_s=1.0))
    assert err.value.reason == "video_too_long"
    with pytest.raises(MediaError) as err:
        probe_video(clip, MediaLimits(max_side=32))
    assert err.value.reason == "video_too_large"
    with pytest.raises(MediaError) as err:
        probe_video(clip, MediaLimits(max_bytes=100))
    assert err.value.reason == "too_large"
    with pytest.raises(MediaError) as err:
        trim_video(clip, tmp_path / "x.mkv", 0.0)
    assert err.value.reason == "bad_option"


def test_zero_frame_video_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "zero.mp4"
    _ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=32x32:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=duration=1",
        "-map",
        "0:v",
        "-map",
        "1:a",
        "-frames:v",
        "0",
        "-t",
        "1",
        "-c:v",
        "libx264",
        "-c:a",
        "aac",
        str(path),
    )
    with pytest.raises(MediaError) as err:
        trim_video(path, tmp_path / "z.mkv", 1.0)
    assert err.value.reason in ("no_frames", "no_video_stream", "bad_video")


def test_read_image_file_checks_size(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"\x89PNG" + b"0" * 100)
    assert read_image_file(tmp_path / "a.png").startswith(b"\x89PNG")
    with pytest.raises(MediaError):
        read_image_file(tmp_path / "a.png", max_bytes=10)
    with pytest.raises(MediaError) as err:
        read_image_file(tmp_path / "missing.png")
    assert err.value.reason == "not_found"
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(MediaError) as err:
        read_image_file(tmp_path / "empty.png")
    assert err.value.reason == "empty_file"
    with pytest.raises(MediaError) as err:
        probe_video(tmp_path / "missing.mp4")
    assert err.value.reason == "not_found"


@pytest.mark.parametrize(
    ("name", "build", "frames"),
    [
        ("odd", ("-f", "lavfi", "-i", "testsrc=size=65x47:rate=10:d=1", "-c:v", "mpeg4"), 10),
        (
            "one",
            (
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=32x32:rate=25",
                "-frames:v",
                "1",
                "-c:v",
                "libx264",
            ),
            1,
        ),
        (
            "vfr",
            (
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=32x32:rate=20:d=1",
                "-vf",
                "setpts='N/20/TB+if(gt(N,9),0.3/TB,0)'",
                "-fps_mode",
                "vfr",
                "-c:v",
                "libx264",
            ),
            20,
        ),
    ],
)
def test_odd_single_frame_and_variable_rate_videos_decode(
    name: str, build: tuple[str, ...], frames: int, tmp_path: Path
) -> None:
    path = tmp_path / f"{name}.mp4"
    _ffmpeg(*build, str(path))
    info = trim_video(path, tmp_path / f"{name}.mkv", 5.0)
    assert info.frames == frames and info.fps > 0
    with FrameDecoder(tmp_path / f"{name}.mkv", info) as decoder:
        decoded = list(decoder)
    assert len(decoded) == frames
    assert decoded[0].shape == (info.height, info.width, 3)


def test_ffmpeg_dying_mid_video_is_an_error_not_a_short_video(
    clip: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    info = trim_video(clip, tmp_path / "t.mkv", 2.0)
    decoder = FrameDecoder(tmp_path / "t.mkv", info)
    frames = iter(decoder)
    next(frames)
    decoder._proc.send_signal(signal.SIGKILL)  # a crash, not our own close()
    with pytest.raises(MediaError) as err:
        list(frames)
    assert err.value.reason == "decode_failed"
    assert err.value.message == "decoding the video stopped part way"
    assert any("exit -9" in record.getMessage() for record in caplog.records)
    decoder.close()
