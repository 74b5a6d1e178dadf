"""Memory of concurrent large image decodes in a real gateway and a real face_detect process.

The photo is the worst case the pixel cap allows: a 6300x6300 RGBA PNG (39.7 Mpx, just under
the 40 Mpx cap), flat but for a face in the middle, that compresses to about 450 KB, so a
handful of small requests ask for gigabytes of decoded pixels. Eight arrive at once; the
process's peak resident set (VmHWM, reset through /proc/<pid>/clear_refs before the burst) and
what stays resident afterwards are compared with its resident set just before the burst.

One decoded copy of this photo is 159 MB (RGBA) and its full-size RGB result 119 MB. Decodes
share a per-process budget (IMAGE_DECODE_BUDGET_MB, 256 MiB by default), so only one such decode
runs at a time. The gateway only checks the upload (decoded into a reduced image): its bound is
that one decoded copy plus the requests' buffers. face_detect (4 request threads, its default)
builds the canvas from a full-size decode: one decode in the budget (278 MB) plus at most three
finished full-size results still being resized (3 x 119 MB), 606 MiB in all, plus the
detector's working set (warmed in every request thread before the burst).

Measured on a 2-core development box (growth over the resident set before the burst, peak / after):
without the budget and banded conversion, gateway +6187 / +3957 MiB and face_detect +2740 /
+1501 MiB; with them, gateway about +190 / +35 MiB and face_detect about +230..290 / <= 0 MiB.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from dynamics.v1 import common_pb2, face_detect_pb2, face_detect_pb2_grpc
from PIL import Image

from services.common.grpc_client import make_channel
from tests.reliability.conftest import SERVICE_ENVS, healthy, needs_ffmpeg, start_gateway
from tests.reliability.image_corpus import face_image
from tests.service_process import ServiceProcess, start_service

SIDE = 6300
BURST = 8
MIB = 1024 * 1024
# Peak growth of the whole process over its resident set before the burst.
GATEWAY_PEAK_BOUND = 300 * MIB
FACE_DETECT_PEAK_BOUND = 640 * MIB
# What may stay resident once the burst is over.
RESIDUAL_BOUND = 100 * MIB


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024
    return values


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _burst(send, count: int) -> list:
    """Run `send()` from `count` threads released together; returns their results in order."""
    results: list = [None] * count
    gate = threading.Barrier(count)

    def one(i: int) -> None:
        gate.wait()
        try:
            results[i] = send()
        except Exception as exc:  # noqa: BLE001 - reported by the assertions
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    return results


def _settled_rss(pid: int) -> int:
    """Resident set once it stops shrinking (freed memory returned after the last reply)."""
    last = _status(pid)["VmRSS"]
    for _ in range(20):
        time.sleep(0.25)
        now = _status(pid)["VmRSS"]
        if now >= last:
            return now
        last = now
    return last


@pytest.fixture(scope="module")
def big_png(tmp_path_factory) -> bytes:
    img = Image.new("RGBA", (SIDE, SIDE), (150, 110, 80, 200))
    face = face_image(112).resize((1200, 1200), Image.Resampling.BICUBIC)
    img.paste(face.convert("RGBA"), (2600, 2600))
    path = tmp_path_factory.mktemp("big") / "big.png"
    img.save(path, format="PNG", compress_level=9)
    del img
    data = path.read_bytes()
    assert len(data) < 1_000_000
    return data


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Iterator[tuple[ServiceProcess, str]]:
    data = tmp_path_factory.mktemp("decode-gateway")
    process, base = start_gateway(
        data,
        {
            "GATEWAY_WORKERS": "0",
            "RATE_LIMIT_JOBS": "100000",
            "MAX_ACTIVE_JOBS": "100000",
            "MAX_SECONDS": "10",
        },
    )
    try:
        yield process, base
    finally:
        try:
            process.terminate(30)
        finally:
            process.kill()


def _report(name: str, before: int, peak: int, after: int) -> str:
    return (
        f"{name}: RSS before {before / MIB:.0f} MiB, peak {peak / MIB:.0f} MiB "
        f"(+{(peak - before) / MIB:.0f}), after {after / MIB:.0f} MiB "
        f"(+{(after - before) / MIB:.0f})"
    )


@needs_ffmpeg
def test_gateway_memory_under_eight_large_uploads(gateway, big_png, hero_bytes) -> None:
    process, base = gateway
    pid = process.proc.pid
    buf = io.BytesIO()
    face_image(320).save(buf, format="PNG")

    def upload(photo: bytes) -> int:
        files = {
            "source": ("photo.png", photo, "image/png"),
            "driving": ("hero.mp4", hero_bytes, "video/mp4"),
        }
        with httpx.Client(base_url=base, timeout=300) as client:
            return client.post("/v1/jobs", files=files).status_code

    assert upload(buf.getvalue()) == 202  # warm: imports, thread pool, ffprobe path
    before = _settled_rss(pid)
    _reset_peak(pid)
    codes = _burst(lambda: upload(big_png), BURST)
    peak = _status(pid)["VmHWM"]
    after = _settled_rss(pid)
    report = _report("gateway", before, peak, after)
    print(report)
    assert codes == [202] * BURST, (codes, "\n".join(process.lines[-20:]))
    assert peak - before < GATEWAY_PEAK_BOUND, report
    assert after - before < RESIDUAL_BOUND, report


@pytest.fixture(scope="module")
def face_detect() -> Iterator[ServiceProcess]:
    env = {**SERVICE_ENVS["face_detect"], "FACE_DETECT_MAX_WORKERS": "4"}
    service = start_service("face_detect", env)
    try:
        deadline = time.monotonic() + 120
        while healthy(service, "face_detect") != "SERVING":
            assert time.monotonic() < deadline, "face_detect never became SERVING"
            time.sleep(0.2)
        yield service
    finally:
        try:
            service.terminate(30)
        finally:
            service.kill()


def test_face_detect_memory_under_eight_large_sources(face_detect, big_png) -> None:
    pid = face_detect.proc.pid
    channel = make_channel(face_detect.target)
    stub = face_detect_pb2_grpc.FaceDetectServiceStub(channel)
    buf = io.BytesIO()
    face_image(112).resize((1400, 1400), Image.Resampling.BICUBIC).save(buf, format="PNG")

    def detect(photo: bytes) -> str:
        request = face_detect_pb2.DetectSourceRequest(
            image=common_pb2.Image(encoded=common_pb2.EncodedImage(data=photo))
        )
        try:
            reply = stub.DetectSource(request, timeout=300)
        except grpc.RpcError as exc:
            return f"{exc.code().name}: {exc.details()}"
        return f"crop {reply.crop.width}x{reply.crop.height}"

    try:
        # Warm: the detector's working set on a full 1280 px canvas in each request thread.
        assert _burst(lambda: detect(buf.getvalue()), 4) == ["crop 256x256"] * 4
        before = _settled_rss(pid)
        _reset_peak(pid)
        answers = _burst(lambda: detect(big_png), BURST)
        peak = _status(pid)["VmHWM"]
        after = _settled_rss(pid)
    finally:
        channel.close()
    report = _report("face_detect", before, peak, after)
    print(report)
    # The photo's face is found and cropped, every time.
    assert answers == ["crop 256x256"] * BURST, answers
    assert peak - before < FACE_DETECT_PEAK_BOUND, report
    assert after - before < RESIDUAL_BOUND, report
