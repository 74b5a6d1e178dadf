"""`dynamics up` end to end: REST gateway (no auth) + the three services + real FFmpeg, with the
fixture weights. A multipart job comes back as an MP4 with audio; the repeat hits the cache.
Every port of the stack listens on 127.0.0.1 only (read from /proc); a SIGKILLed service is
restarted on its port and serves the next job; a service that keeps dying ends `dynamics up`
with exit code 1 and a message naming it, leaving no process behind; a busy port fails at once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from services.animator.weights import load_models
from services.cli.demo_media import write_hero_clip, write_source_photo
from services.cli.local_stack import free_port
from tests.fixture_set import DEFAULT_SET
from tests.integration.up_process import start_up, stop, wait_ready
from tests.unit.common.listening import listening_sockets

pytestmark = [
    pytest.mark.ffmpeg,
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg"),
]

FIXTURE_WEIGHTS = DEFAULT_SET.checkpoints  # the services run on the default fixture set
SERVICES = ("face_detect", "animator", "encoder")
needs_proc = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc (Linux)")


def _children(pid: int) -> dict[int, str]:
    """Live (non-zombie) child processes of `pid`: pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            found[int(entry.name)] = cmdline
    return found


def _service_pids(up_pid: int) -> dict[str, int]:
    pids = {}
    for pid, cmdline in _children(up_pid).items():
        for name in SERVICES:
            if f"-m services.{name} " in cmdline + " ":
                pids[name] = pid
    return pids


def _gone(pid: int) -> bool:
    """Exited and reaped: no /proc entry at all (a zombie still has one)."""
    return not Path(f"/proc/{pid}").exists()


def _wait_for(condition, timeout_s: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}:\n" + log.read_text()[-3000:])


def _submit_and_wait(base: str, source: Path, hero: Path, timeout_s: float = 180) -> dict:
    with open(source, "rb") as photo, open(hero, "rb") as video:
        reply = httpx.post(
            f"{base}/v1/jobs",
            timeout=30,
            data={"seconds": "1"},
            files={
                "source": ("source.png", photo, "image/png"),
                "driving": ("hero.mp4", video, "video/mp4"),
            },
        )
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
    proc, log = start_up(tmp_path, port)
    try:
        wait_ready(proc, log, base)
        job = _submit_and_wait(base, source, hero)
        assert job["status"] == "succeeded", job
        assert job["frames_total"] == job["frames_done"] == 5 and job["cache_hit"] is False
        assert {"fetch_trim", "detect", "animate", "encode", "upload"} <= set(job["timings"])
        # What animated it, as stored with the job: the fixture model on torch fp32, CPU.
        assert job["animator"] == {
            "model": load_models(FIXTURE_WEIGHTS).fingerprint,
            "backend": "torch",
            "device": "cpu",
            "dtype": "float32",
        }
        mp4 = httpx.get(job["result_url"], timeout=30, follow_redirects=True)
        assert mp4.status_code == 200
        (tmp_path / "result.mp4").write_bytes(mp4.content)
        streams = json.loads(
            subprocess.run(
                [
                    "ffprobe",
                    "-v",
                    "error",
                    "-of",
                    "json",
                    "-show_streams",
                    str(tmp_path / "result.mp4"),
                ],
                check=True,
                capture_output=True,
            ).stdout
        )["streams"]
        assert sorted(s["codec_type"] for s in streams) == ["audio", "video"]
        again = _submit_and_wait(base, source, hero)
        assert again["status"] == "succeeded" and again["cache_hit"] is True
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(90)
    assert code == 0, log.read_text()[-3000:]


@needs_proc
def test_up_binds_loopback_restarts_a_killed_service_and_serves_the_next_job(
    tmp_path: Path,
) -> None:
    source = write_source_photo(tmp_path / "source.png", side=224)
    hero = write_hero_clip(tmp_path / "hero.mp4", seconds=1.0, fps=5, size=192)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc, log = start_up(tmp_path, port)
    try:
        wait_ready(proc, log, base)
        pids = _service_pids(proc.pid)
        assert set(pids) == set(SERVICES), _children(proc.pid)
        # every listening socket of the stack: gateway HTTP, each service's gRPC and metrics
        bound = {name: listening_sockets(pid) for name, pid in pids.items()}
        bound["gateway"] = listening_sockets(proc.pid)
        assert ("127.0.0.1", port) in bound["gateway"]
        for name, sockets in bound.items():
            assert len(sockets) >= (1 if name == "gateway" else 2), (name, sockets)
            assert {address for address, _ in sockets} == {"127.0.0.1"}, (name, sockets)
        animator_ports = {p for _, p in bound["animator"]}

        os.kill(pids["animator"], signal.SIGKILL)
        _wait_for(lambda: _gone(pids["animator"]), 30, "the killed animator to be reaped", log)
        _wait_for(
            lambda: _service_pids(proc.pid).get("animator", pids["animator"]) != pids["animator"],
            60,
            "a new animator process",
            log,
        )
        new_pid = _service_pids(proc.pid)["animator"]
        # /readyz covers only the gateway's own dependencies, so wait for the new animator's
        # gRPC and metrics sockets themselves.
        _wait_for(lambda: len(listening_sockets(new_pid)) >= 2, 60, "the new animator", log)
        again = listening_sockets(new_pid)
        assert {address for address, _ in again} == {"127.0.0.1"}, again
        # the gRPC port is the same (the gateway's target); metrics ports are ephemeral
        assert len({p for _, p in again} & animator_ports) == 1, (again, animator_ports)
        text = log.read_text()
        assert "animator was killed by SIGKILL; restarting it on port" in text, text[-3000:]

        job = _submit_and_wait(base, source, hero)
        assert job["status"] == "succeeded", job
        assert proc.poll() is None
    finally:
        code = stop(proc)
    assert code == 0, log.read_text()[-3000:]
    assert all(_gone(pid) for pid in [*pids.values(), new_pid]), _children(proc.pid)


@needs_proc
def test_up_exits_naming_a_service_that_keeps_dying(tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    shutil.copytree(FIXTURE_WEIGHTS, weights)
    port = free_port()
    proc, log = start_up(tmp_path, port, weights, "--max-restarts", "1")
    try:
        wait_ready(proc, log, f"http://127.0.0.1:{port}")
        pids = _service_pids(proc.pid)
        assert set(pids) == set(SERVICES), _children(proc.pid)
        shutil.rmtree(weights)  # every restart of the animator now fails its config check
        os.kill(pids["animator"], signal.SIGKILL)
        code = proc.wait(120)
    finally:
        if proc.poll() is None:
            stop(proc)
    text = log.read_text()
    assert code == 1, text[-3000:]
    last = text.rsplit("dynamics up: giving up: ", 1)
    assert len(last) == 2, text[-3000:]
    assert last[1].startswith("animator exited with code 1; it died 2 times within 300 s"), last[1]
    assert "ANIMATOR_WEIGHTS_DIR" in last[1]  # the tail of its log says why
    _wait_for(lambda: all(_gone(pid) for pid in pids.values()), 30, "no processes left", log)


def test_up_refuses_a_busy_port_before_starting_anything(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc, log = start_up(tmp_path, port)
        code = proc.wait(60)
    text = log.read_text()
    assert code == 2, text
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in text, text
    assert "starting face_detect" not in text
