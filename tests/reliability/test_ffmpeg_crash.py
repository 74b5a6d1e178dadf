"""FFmpeg crashing inside the encoder (ENCODER_FFMPEG is a wrapper that SIGKILLs the real FFmpeg
shortly after it starts): the job fails cleanly with a named reason, the encoder stays up, and
nothing is left behind (no temp files, no FFmpeg processes)."""

from __future__ import annotations

import os
import shutil
import stat
import time
from pathlib import Path

import pytest

from tests.reliability.conftest import needs_ffmpeg
from tests.reliability.fault_stack import FaultStack, GatewayRun, gateway_env
from tests.reliability.test_faults import media  # noqa: F401 - shared fixture

pytestmark = [pytest.mark.ffmpeg, needs_ffmpeg]
RUNS = [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)]

WRAPPER = """#!/bin/sh
# Becomes the real FFmpeg, which a helper SIGKILLs after a moment (a crash mid-encode).
( sleep {delay}; kill -9 $$ 2>/dev/null ) &
exec "{ffmpeg}" "$@"
"""


def _ffmpeg_processes(marker: str) -> list[int]:
    """PIDs of processes whose command line mentions `marker` (our temp folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and "ffmpeg" in cmdline:
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def crashing(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ffmpeg-crash")
    wrapper = folder / "ffmpeg-crashing"
    wrapper.write_text(WRAPPER.format(ffmpeg=shutil.which("ffmpeg"), delay="0.6"))
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    encoder_tmp = folder / "encoder-tmp"
    encoder_tmp.mkdir()
    stack = FaultStack(
        extra_env={"encoder": {"ENCODER_FFMPEG": str(wrapper), "ENCODER_TMP_DIR": str(encoder_tmp)}}
    ).start()
    gateway = GatewayRun(
        folder / "gw", gateway_env(stack, JOB_MAX_ATTEMPTS="2", JOB_RETRY_BASE_S="0.2")
    ).start()
    yield stack, gateway, encoder_tmp
    gateway.stop()
    stack.stop()


@pytest.mark.parametrize("run", RUNS)
def test_ffmpeg_crash_fails_cleanly(run: int, crashing, media) -> None:  # noqa: F811
    stack, gateway, encoder_tmp = crashing
    started = time.monotonic()
    view = gateway.wait_final(gateway.submit(*media, seconds="2"), timeout=120)
    assert time.monotonic() - started < 120
    assert view["status"] == "failed", view
    print("ffmpeg crash outcome:", view["error"], "attempts", view["attempts"])
    assert view["error"]["code"] not in ("internal", "failed") and view["error"]["message"], view
    deadline = time.monotonic() + 10
    while (
        list(encoder_tmp.iterdir()) or _ffmpeg_processes(str(encoder_tmp))
    ) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not list(encoder_tmp.iterdir()), list(encoder_tmp.iterdir())
    assert not _ffmpeg_processes(str(encoder_tmp))
    encoder = stack.procs["encoder"][0]
    assert encoder.proc.poll() is None and stack.alive()["encoder"] == ["SERVING"]
    assert os.listdir(encoder_tmp) == []
