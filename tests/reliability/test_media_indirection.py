"""Media indirection and timestamp tricks against the real gateway (subprocess, real FFmpeg):

* every playlist / list / reference "video" uploaded as the hero is answered 422
  `unsupported_container`, and the sentinel (a FIFO the secret's path names, an HTTP server)
  never sees an open; the 422 message names no server path and carries no FFmpeg output;
* a Matroska file whose frames all carry timestamp 0 is answered 422 `bad_timestamps`;
* a hero whose timestamps run 10x faster than its declared 25 fps, with seconds=1, runs on the
  real services as a job of exactly 25 frames (not all 100), and its result has 25 frames.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from services.cli.demo_media import write_hero_clip, write_source_photo
from tests.reliability.conftest import assert_rest_error, needs_ffmpeg, start_gateway
from tests.reliability.indirection_corpus import (
    CASE_IDS,
    HostileCase,
    Sentinel,
    colour_clip,
    ffmpeg,
    hostile_cases,
)

pytestmark = [pytest.mark.ffmpeg, needs_ffmpeg]
FFMPEG_WORDS = ("Invalid data", "whitelist", "@ 0x", "EBML", "moov", "file:", "ffprobe")


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory):
    watcher = Sentinel(tmp_path_factory.mktemp("gateway-indirection"))
    yield watcher
    watcher.close()


@pytest.fixture(scope="module")
def cases(sentinel) -> dict[str, HostileCase]:
    return {case.id: case for case in hostile_cases(sentinel)}


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> bytes:
    return write_source_photo(tmp_path_factory.mktemp("photo") / "me.png", side=256).read_bytes()


def _post(
    client: httpx.Client, photo: bytes, video: Path, seconds: str = "2", name: str = "d.mp4"
) -> httpx.Response:
    files = {
        "source": ("me.png", photo, "image/png"),
        "driving": (name, video.read_bytes(), "video/mp4"),
    }
    return client.post("/v1/jobs", files=files, data={"seconds": seconds})


def _assert_no_leak(error: dict, *folders: Path) -> None:
    text = json.dumps(error)
    for folder in folders:
        assert str(folder) not in text, error
    assert "/tmp" not in text and "/work" not in text, error
    for words in FFMPEG_WORDS:
        assert words not in error["detail"], error


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_indirection_upload_is_refused_unread(
    case_id: str, cases, sentinel, photo, rest, intake_gateway
) -> None:
    if case_id not in cases:
        pytest.skip(f"this FFmpeg has no demuxer for {case_id}")
    case = cases[case_id]
    before = len(sentinel.hits)
    response = _post(rest, photo, case.path)
    if case.reason == "accept":
        assert response.status_code == 202, response.text
    else:
        error = assert_rest_error(response, 422, case.reason)
        _assert_no_leak(error, sentinel.folder)
    assert sentinel.settle()[before:] == []
    assert not any(
        case.path.name in line and "Traceback" in line for line in intake_gateway[0].lines
    )


def test_bad_video_error_names_no_server_path(rest, photo, tmp_path, intake_gateway) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x01not a video" * 300)
    error = assert_rest_error(_post(rest, photo, garbage), 422, "bad_video")
    _assert_no_leak(error, tmp_path)
    # The detail (FFmpeg's words, the server path) is in the gateway's log instead.
    assert any(
        "moov atom not found" in line or "Invalid data" in line for line in intake_gateway[0].lines
    )


@pytest.fixture(scope="module")
def retimed(tmp_path_factory) -> dict[str, Path]:
    """Matroska heroes whose packet timestamps were rewritten (declared rate 25 fps)."""
    folder = tmp_path_factory.mktemp("retimed")
    face = write_hero_clip(folder / "face.mp4", seconds=4, fps=25, size=160)
    plain = colour_clip(folder / "plain.mp4", "gray", seconds=4, rate=25, extra=("-bf", "0"))
    made = {}
    for name, source, expr in (("all-zero", plain, "0"), ("fast-face", face, "N*4")):
        made[name] = folder / f"{name}.mkv"
        ffmpeg(
            "-i",
            str(source),
            "-map",
            "0:v",
            "-c",
            "copy",
            "-bsf:v",
            f"setts=ts={expr}",
            str(made[name]),
        )
    return made


def test_all_zero_timestamps_are_refused_at_intake(rest, photo, retimed) -> None:
    error = assert_rest_error(
        _post(rest, photo, retimed["all-zero"], seconds="1", name="d.mkv"), 422, "bad_timestamps"
    )
    _assert_no_leak(error)


@pytest.fixture(scope="module")
def running_gateway(grpc_services, tmp_path_factory):
    targets = {f"{name.upper()}_ADDR": service.target for name, service in grpc_services.items()}
    gateway, base = start_gateway(
        tmp_path_factory.mktemp("indirection-gateway"),
        {
            **targets,
            "GATEWAY_WORKERS": "1",
            "JOB_POLL_S": "0.1",
            "JOB_MAX_ATTEMPTS": "1",
            "MAX_SECONDS": "10",
            "MAX_ACTIVE_JOBS": "100",
        },
    )
    with httpx.Client(base_url=base, timeout=60) as client:
        yield client
    try:
        gateway.terminate(30)
    finally:
        gateway.kill()


def test_fast_timestamps_plan_and_render_only_seconds_times_fps(
    running_gateway, photo, retimed, tmp_path
) -> None:
    probe = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_packets",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_packets,avg_frame_rate",
            "-of",
            "json",
            str(retimed["fast-face"]),
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    stream = json.loads(probe.stdout)["streams"][0]
    assert stream["avg_frame_rate"] == "25/1" and int(stream["nb_read_packets"]) == 100
    response = _post(running_gateway, photo, retimed["fast-face"], seconds="1", name="d.mkv")
    assert response.status_code == 202, response.text
    job = response.json()["id"]
    deadline = time.monotonic() + 300
    while True:
        view = running_gateway.get(f"/v1/jobs/{job}").json()
        assert view["frames_total"] <= 25, view
        if view["status"] in ("succeeded", "failed", "cancelled"):
            break
        assert time.monotonic() < deadline, view
        time.sleep(0.3)
    assert view["status"] == "succeeded", view
    assert view["frames_total"] == view["frames_done"] == 25, view
    result = running_gateway.get(f"/v1/jobs/{job}/result", follow_redirects=True)
    assert result.status_code == 200, result.text[:300]
    out = tmp_path / "result.mp4"
    out.write_bytes(result.content)
    counted = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert int(counted.stdout.strip()) == 25
