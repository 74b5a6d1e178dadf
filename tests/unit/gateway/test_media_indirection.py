"""The gateway's media functions against files that name other files or URLs (playlists, lists,
MP4 external references, image patterns, URL schemes in names): each is refused with
`unsupported_container` before anything it names is opened, and no client message carries a
server path or FFmpeg's words. A FIFO sentinel records every open of the secret file; control
tests show that plain FFmpeg does open it for the same inputs, so the sentinel can fail."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from services.gateway.pipeline.media import FrameDecoder, MediaError, probe_video, trim_video
from tests.reliability.indirection_corpus import (
    CASE_IDS,
    INERT_CASE_IDS,
    HostileCase,
    Sentinel,
    colour_clip,
    ffmpeg,
    hostile_cases,
)
from tests.unit.encoder.media_tools import needs_ffmpeg

pytestmark = [pytest.mark.ffmpeg, needs_ffmpeg]


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory):
    watcher = Sentinel(tmp_path_factory.mktemp("indirection"))
    yield watcher
    watcher.close()


@pytest.fixture(scope="module")
def cases(sentinel) -> dict[str, HostileCase]:
    return {case.id: case for case in hostile_cases(sentinel)}


# the refused ones; the inert attachment case is a valid video, tested below
REFUSED_IDS = [c for c in CASE_IDS if c not in INERT_CASE_IDS]


def _assert_clean(error: MediaError, *folders: Path) -> None:
    """A short client message: no server path, no FFmpeg output."""
    for folder in folders:
        assert str(folder) not in error.message, error.message
    for words in ("Invalid data", "whitelist", "@ 0x", "ffprobe", "ffmpeg", "file:"):
        assert words not in error.message, error.message


@pytest.mark.parametrize("make", ["plain", "drefs-on"])
def test_control_plain_ffmpeg_opens_the_secret(make: str, cases, sentinel) -> None:
    """Without the allow-lists FFmpeg follows the playlist, list and reference: the sentinel
    sees it (so the refusals below are meaningful)."""
    for case_id in ("hls-file-url", "hls-master-to-variant", "ffconcat", "mp4-external-reference"):
        if (case_id == "mp4-external-reference") != (make == "drefs-on"):
            continue
        before = len(sentinel.hits)
        extra = ["-enable_drefs", "1"] if make == "drefs-on" else []
        subprocess.run(
            ["ffmpeg", "-v", "error", *extra, "-i", str(cases[case_id].path), "-f", "null", "-"],
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert sentinel.settle()[before:], case_id


@pytest.mark.parametrize("case_id", REFUSED_IDS)
def test_probe_and_trim_refuse_indirection(case_id: str, cases, sentinel, tmp_path) -> None:
    if case_id not in cases:
        pytest.skip(f"this FFmpeg has no demuxer for {case_id}")
    case = cases[case_id]
    before = len(sentinel.hits)
    with pytest.raises(MediaError) as probed:
        probe_video(case.path)
    with pytest.raises(MediaError) as trimmed:
        trim_video(case.path, tmp_path / "out.mkv", 1.0)
    assert probed.value.reason == trimmed.value.reason == case.reason, probed.value.message
    _assert_clean(probed.value, sentinel.folder, tmp_path)
    assert not (tmp_path / "out.mkv").exists()
    assert sentinel.settle()[before:] == []


def test_mkv_with_a_playlist_attachment_is_inert(cases, sentinel, tmp_path) -> None:
    """The attachment is data, never opened; the trim drops it and the frames are the
    video's own (blue), never the secret's."""
    case = cases["mkv-playlist-attachment"]
    before = len(sentinel.hits)
    info = trim_video(case.path, tmp_path / "t.mkv", 1.0)
    streams = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type",
            "-of",
            "csv=p=0",
            str(tmp_path / "t.mkv"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert streams == ["video"]
    with FrameDecoder(tmp_path / "t.mkv", info) as decoder:
        frames = list(decoder)
    assert len(frames) == info.frames == 10
    mean = np.mean([frame.reshape(-1, 3).mean(axis=0) for frame in frames], axis=0)
    assert mean[2] > 200 and mean[0] < 60, mean  # blue, not the secret
    assert sentinel.settle()[before:] == []


def test_image_pattern_name_is_not_expanded(tmp_path) -> None:
    """A file literally named like an image2 pattern: the pattern is not expanded (the
    sequence's first frame is a FIFO sentinel) and the image is refused."""
    watcher = Sentinel(tmp_path, "img001.png")
    try:
        pattern = tmp_path / "img%03d.png"
        ffmpeg(
            "-f",
            "lavfi",
            "-i",
            "color=c=blue:size=32x32",
            "-frames:v",
            "1",
            "-f",
            "image2",
            "-update",
            "1",
            str(pattern),
        )
        subprocess.run(
            ["ffmpeg", "-v", "error", "-i", str(pattern), "-f", "null", "-"],
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert watcher.settle(), "control: plain FFmpeg expands the pattern"
        before = len(watcher.hits)
        with pytest.raises(MediaError) as err:
            probe_video(pattern)
        assert err.value.reason == "unsupported_container"
        _assert_clean(err.value, tmp_path)
        assert watcher.settle()[before:] == []
    finally:
        watcher.close()


def test_concat_protocol_in_a_file_name_is_a_file_name(tmp_path, monkeypatch) -> None:
    """`concat:a|b` as a (relative) file name: read as that file, never as the concat
    protocol over the secret."""
    watcher = Sentinel(tmp_path)
    try:
        monkeypatch.chdir(tmp_path)
        name = "concat:secret.mkv|secret.mkv"
        colour_clip(tmp_path / name, "blue", size="32x32")
        subprocess.run(
            ["ffprobe", "-v", "error", name], capture_output=True, timeout=30, check=False
        )
        assert watcher.settle(), "control: plain ffprobe opens the concat protocol"
        before = len(watcher.hits)
        info = probe_video(Path(name))
        assert (info.width, info.height) == (32, 32)
        assert watcher.settle()[before:] == []
    finally:
        watcher.close()


def test_refusals_carry_no_server_path_or_ffmpeg_output(tmp_path) -> None:
    garbage = tmp_path / "upload-dir" / "driving"
    garbage.parent.mkdir()
    garbage.write_bytes(b"\x00\x01not a video" * 300)
    for path in (garbage, tmp_path / "upload-dir" / "missing"):
        with pytest.raises(MediaError) as err:
            probe_video(path)
        _assert_clean(err.value, tmp_path)
        assert "/" not in err.value.message, err.value.message
