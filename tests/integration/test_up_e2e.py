"""`dynamics up` end to end: REST gateway (no auth) + the three services + real FFmpeg, with the
fixture weights. A multipart job comes back as an MP4 with audio; the repeat hits the cache."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from services.gateway.demo_media import write_hero_clip, write_source_photo
from services.gateway.local_stack import free_port

pytestmark = [
    pytest.mark.ffmpeg,
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg"),
]

FIXTURE_WEIGHTS = Path(__file__).resolve().parents[1] / "fixtures" / "liveportrait" / "checkpoints"


def _wait_healthy(base: str, proc: subprocess.Popen, log: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError("dynamics up did not become ready:\n" + log.read_text()[-3000:])


def _submit_and_wait(base: str, source: Path, hero: Path, timeout_s: float = 180) -> dict:
    with open(source, "rb") as photo, open(hero, "rb") as video:
        reply = httpx.post(f"{base}/v1/jobs", timeout=30, data={"seconds": "1"},
                           files={"source": ("source.png", photo, "image/png"),
                                  "driving": ("hero.mp4", video, "video/mp4")})
    assert reply.status_code == 202, reply.text
    job_id = reply.json()["id"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = httpx.get(f"{base}/v1/jobs/{job_id}", timeout=10).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def test_dynamics_up_serves_a_job_end_to_end(tmp_path: Path) -> None:
    source = write_source_photo(tmp_path / "source.png", side=224)
    hero = write_hero_clip(tmp_path / "hero.mp4", seconds=1.0, fps=5, size=192)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "up.log"
    env = {**os.environ, "ANIMATOR_BATCH_SIZE": "2", "OMP_NUM_THREADS": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "up", "--port", str(port), "--weights",
             str(FIXTURE_WEIGHTS), "--data-dir", str(tmp_path / "data"), "--device", "cpu"],
            stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_healthy(base, proc, log)
        job = _submit_and_wait(base, source, hero)
        assert job["status"] == "succeeded", job
        assert job["frames_total"] == job["frames_done"] == 5 and job["cache_hit"] is False
        assert {"fetch_trim", "detect", "animate", "encode", "upload"} <= set(job["timings"])
        mp4 = httpx.get(job["result_url"], timeout=30, follow_redirects=True)
        assert mp4.status_code == 200
        (tmp_path / "result.mp4").write_bytes(mp4.content)
        streams = json.loads(subprocess.run(
            ["ffprobe", "-v", "error", "-of", "json", "-show_streams", str(tmp_path / "result.mp4")],
            check=True, capture_output=True).stdout)["streams"]
        assert sorted(s["codec_type"] for s in streams) == ["audio", "video"]
        again = _submit_and_wait(base, source, hero)
        assert again["status"] == "succeeded" and again["cache_hit"] is True
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(90)
    assert code == 0, log.read_text()[-3000:]
