"""`dynamics submit / status / cancel` and services.client against `dynamics up` with the fixture
weights: submit --wait -o writes a real MP4 (H.264 + AAC, every frame), progress lines come from
the event stream, a job cancelled while `submit --wait` follows it exits 1, and refusals print
the gateway's stable code with the documented exit codes (2: refused input, unknown job, bad
usage; 1: an unreachable gateway)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.cli.demo_media import write_hero_clip, write_source_photo
from services.cli.local_stack import free_port
from services.client import Client, DynamicsError
from tests.integration.up_process import running_up

pytestmark = [
    pytest.mark.ffmpeg,
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg"),
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """`dynamics up` on a free port with the fixture weights; yields (base URL, media folder)."""
    tmp = tmp_path_factory.mktemp("client-e2e")
    write_source_photo(tmp / "source.png", side=224)
    write_hero_clip(tmp / "hero.mp4", seconds=1.0, fps=5, size=192)
    write_hero_clip(tmp / "long.mp4", seconds=4.0, fps=10, size=192)
    with running_up(tmp, free_port(), "--workers", "1") as base:
        yield base, tmp


def dynamics(*args: str, timeout: float = 480, **popen) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen,
    )


def test_submit_wait_downloads_a_real_mp4(stack, tmp_path: Path) -> None:
    base, media = stack
    out = tmp_path / "result.mp4"
    done = dynamics(
        "submit",
        str(media / "source.png"),
        str(media / "hero.mp4"),
        "--gateway",
        base,
        "--seconds",
        "1",
        "--option",
        "driving_multiplier=1.0",
        "-o",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    assert len(job_id) >= 16 and "\n" not in job_id, done.stdout
    # Not a terminal: one plain line per change, from the event stream, ending at 100 %.
    lines = done.stderr.splitlines()
    assert any(f"{job_id} running animate" in line for line in lines), done.stderr
    assert any(line.startswith(f"{job_id} succeeded") and "100%" in line for line in lines)
    assert "\r" not in done.stderr and f"wrote {out}" in lines[-1]

    probe = json.loads(
        subprocess.run(
            ["ffprobe", "-v", "error", "-count_frames", "-of", "json", "-show_streams", str(out)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )["streams"]
    video = next(s for s in probe if s["codec_type"] == "video")
    assert video["codec_name"] == "h264" and int(video["nb_read_frames"]) == 5
    assert any(s["codec_type"] == "audio" and s["codec_name"] == "aac" for s in probe)

    status = dynamics("status", job_id, "--gateway", base)
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["status"] == "succeeded" and shown["frames_done"] == 5
    with Client(base) as client:  # the module integrators import gives the same file
        again = client.download(job_id, tmp_path / "again.mp4")
    assert again.read_bytes() == out.read_bytes()


def test_cancel_stops_a_job_that_submit_is_following(stack) -> None:
    base, media = stack
    follower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.cli",
            "submit",
            str(media / "source.png"),
            str(media / "long.mp4"),
            "--gateway",
            base,
            "--seconds",
            "4",
            "--wait",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        job_id = follower.stdout.readline().strip()
        assert job_id, follower.stderr.read() if follower.poll() is not None else "no job id"
        with Client(base) as client:  # wait until a worker really runs it
            deadline = time.monotonic() + 180
            while (job := client.get(job_id)).status == "queued":
                assert time.monotonic() < deadline, job
                time.sleep(0.2)
        assert job.status == "running", job
        cancelled = dynamics("cancel", job_id, "--gateway", base, "--wait", timeout=120)
        assert cancelled.returncode == 0, cancelled.stderr
        assert json.loads(cancelled.stdout)["status"] == "cancelled"
        _out, err = follower.communicate(timeout=120)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 1, err
    assert f"job {job_id} cancelled: cancelled" in err.splitlines()[-1], err


def test_refusals_print_the_code_and_exit_as_documented(stack, tmp_path: Path) -> None:
    base, media = stack
    not_an_image = tmp_path / "photo.png"
    not_an_image.write_text("plain text")
    refused = dynamics(
        "submit", str(not_an_image), str(media / "hero.mp4"), "--gateway", base, "--wait"
    )
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.startswith("dynamics submit: bad_image: "), refused.stderr

    bad_option = dynamics(
        "submit",
        str(media / "source.png"),
        str(media / "hero.mp4"),
        "--gateway",
        base,
        "--option",
        "driving_multiplier=99",
    )
    assert bad_option.returncode == 2
    assert bad_option.stderr.startswith("dynamics submit: invalid_request: "), bad_option.stderr

    missing = dynamics(
        "submit", str(tmp_path / "nope.png"), str(media / "hero.mp4"), "--gateway", base
    )
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr

    unknown = dynamics("status", "0" * 32, "--gateway", base)
    assert unknown.returncode == 2 and unknown.stderr.startswith("dynamics status: not_found:")

    gone = dynamics("status", "0" * 32, "--gateway", f"http://127.0.0.1:{free_port()}")
    assert gone.returncode == 1 and gone.stderr.startswith("dynamics status: unreachable:")

    with Client(base) as client, pytest.raises(DynamicsError) as caught:
        client.submit(not_an_image, media / "hero.mp4")
    assert (caught.value.code, caught.value.status) == ("bad_image", 422)
