"""FFmpeg children die with their service: a SIGKILLed encoder, an encoder whose drain ran out,
and a SIGKILLed gateway-side process leave no FFmpeg behind, even a wedged one (SIGSTOPped
here: it would not even notice its stdin closing). And the guard never kills a child early:
FFmpeg started from a thread that then ends keeps running to the last frame."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from dynamics.v1 import common_pb2, encoder_pb2, encoder_pb2_grpc

from services.cli.demo_media import write_hero_clip, write_source_photo
from services.common import ffmpeg_safety
from services.common.grpc_client import make_channel
from services.common.media import array_to_raw
from services.gateway.pipeline.media import FrameDecoder, trim_video
from tests.reliability.conftest import healthy, needs_ffmpeg, start_gateway
from tests.reliability.indirection_corpus import colour_clip
from tests.service_process import REPO_ROOT, start_service

pytestmark = [pytest.mark.ffmpeg, needs_ffmpeg]


def _stat(pid: int) -> tuple[str, int, str] | None:
    """(comm, ppid, state) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = text[text.rindex(")") + 2 :].split()
    return text[text.index("(") + 1 : text.rindex(")")], int(rest[1]), rest[0]


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[2] != "Z"  # a zombie has exited


def _ffmpeg_children(parent: int, marker: str) -> list[int]:
    """FFmpeg children of `parent` whose command line mentions `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat and stat[1] == parent and stat[0] in ("ffmpeg", "setpriv"):
                try:
                    argv = (entry / "cmdline").read_bytes().decode(errors="replace")
                except OSError:
                    continue
                if marker in argv:
                    found.append(int(entry.name))
    return found


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _wedge(pids: list[int]) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)


def _cleanup(pids: list[int]) -> None:
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def encoder(tmp_path):
    service = start_service(
        "encoder",
        {
            "ENCODER_PORT": "0",
            "ENCODER_METRICS_PORT": "0",
            "ENCODER_GRACE_S": "1",
            "ENCODER_TMP_DIR": str(tmp_path),
        },
    )
    try:
        _wait_for(lambda: healthy(service, "encoder") == "SERVING", 60, "encoder SERVING")
        yield service
    finally:
        service.kill()


def _hold_encode(target: str, release: threading.Event) -> threading.Thread:
    """An Encode call that sends its header and three frames, then holds the stream open."""

    def requests():
        yield encoder_pb2.EncodeRequest(
            header=encoder_pb2.EncodeHeader(fps=common_pb2.Rational(num=25, den=1))
        )
        rng = np.random.default_rng(3)
        for index in range(3):
            yield encoder_pb2.EncodeRequest(
                frame=encoder_pb2.AnimatedFrameData(
                    index=index, image=array_to_raw(rng.integers(0, 256, (64, 64, 3), np.uint8))
                )
            )
        release.wait(60)

    def call():
        channel = make_channel(target)
        try:
            for _ in encoder_pb2_grpc.EncoderServiceStub(channel).Encode(requests(), timeout=60):
                pass
        except grpc.RpcError:
            pass  # the service went away: expected
        finally:
            channel.close()

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("stop", ["SIGKILL", "SIGTERM-drain-runs-out"])
def test_stopped_encoder_leaves_no_ffmpeg(stop: str, encoder, tmp_path) -> None:
    release = threading.Event()
    caller = _hold_encode(encoder.target, release)
    pids: list[int] = []
    try:
        pids = _wait_for(
            lambda: _ffmpeg_children(encoder.proc.pid, str(tmp_path)), 30, "the encoder's FFmpeg"
        )
        _wedge(pids)
        if stop == "SIGKILL":
            encoder.proc.kill()
        else:
            encoder.proc.send_signal(signal.SIGTERM)  # grace 1 s; the stream stays open
        encoder.proc.wait(30)
        _wait_for(lambda: not any(_alive(pid) for pid in pids), 5, f"FFmpeg {pids} to die")
    finally:
        release.set()
        _cleanup(pids)
        caller.join(10)


_HOLDER = """
import sys, time
from pathlib import Path
from services.gateway.pipeline.media import FrameDecoder, trim_video
info = trim_video(Path(sys.argv[1]), Path(sys.argv[2]), 5.0)
decoder = FrameDecoder(Path(sys.argv[2]), info)  # FFmpeg decodes into a pipe nobody reads
print(decoder._proc.pid, flush=True)
time.sleep(120)
"""


def test_killed_gateway_process_leaves_no_ffmpeg(tmp_path) -> None:
    clip = colour_clip(tmp_path / "c.mp4", "gray", seconds=4, rate=25, size="320x240")
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(clip), str(tmp_path / "t.mkv")],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    pid = 0
    try:
        pid = int(holder.stdout.readline())
        _wait_for(lambda: (_stat(pid) or ("",))[0] == "ffmpeg", 10, "FFmpeg to start")
        _wedge([pid])
        holder.kill()
        holder.wait(10)
        _wait_for(lambda: not _alive(pid), 5, f"FFmpeg {pid} to die")
    finally:
        holder.kill()
        if pid:
            _cleanup([pid])


def test_ffmpeg_outlives_the_thread_that_started_it(tmp_path) -> None:
    """The parent-death signal is tied to the spawner thread, not to the caller's thread."""
    clip = colour_clip(tmp_path / "c.mp4", "gray", seconds=4, rate=25, size="320x240")
    info = trim_video(clip, tmp_path / "t.mkv", 5.0)
    made: list[FrameDecoder] = []
    starter = threading.Thread(target=lambda: made.append(FrameDecoder(tmp_path / "t.mkv", info)))
    starter.start()
    starter.join()
    time.sleep(0.5)  # the starting thread is gone; FFmpeg is blocked on the full pipe
    with made[0] as decoder:
        frames = sum(1 for _ in decoder)
    assert frames == info.frames == 100
    assert decoder._proc.returncode == 0


def test_shutdown_kills_live_children(tmp_path) -> None:
    proc = ffmpeg_safety.popen(["sleep", "30"])
    assert proc in ffmpeg_safety.live_children()
    ffmpeg_safety.kill_children()
    assert proc.returncode is not None and not _alive(proc.pid)


def test_sigkilled_gateway_leaves_no_ffmpeg(grpc_services, tmp_path) -> None:
    """The real gateway, decoding a job's hero video for tracking (FFmpeg feeds frames as fast
    as face_detect takes them), is SIGKILLed: its FFmpeg dies too."""
    hero = write_hero_clip(tmp_path / "hero.mp4", seconds=8, fps=25, size=320)
    photo = write_source_photo(tmp_path / "me.png", side=256)
    targets = {f"{name.upper()}_ADDR": service.target for name, service in grpc_services.items()}
    gateway, base = start_gateway(
        tmp_path / "gw",
        {**targets, "GATEWAY_WORKERS": "1", "JOB_POLL_S": "0.1", "MAX_SECONDS": "10"},
    )
    pids: list[int] = []
    try:
        files = {
            "source": ("me.png", photo.read_bytes(), "image/png"),
            "driving": ("d.mp4", hero.read_bytes(), "video/mp4"),
        }
        response = httpx.post(f"{base}/v1/jobs", files=files, data={"seconds": "8"}, timeout=60)
        assert response.status_code == 202, response.text
        pids = _wait_for(
            lambda: _ffmpeg_children(gateway.proc.pid, "rawvideo"),
            60,
            "the gateway's decoding FFmpeg",
        )
        _wedge(pids)
        gateway.proc.kill()
        gateway.proc.wait(10)
        _wait_for(lambda: not any(_alive(pid) for pid in pids), 5, f"FFmpeg {pids} to die")
    finally:
        gateway.kill()
        _cleanup(pids)
