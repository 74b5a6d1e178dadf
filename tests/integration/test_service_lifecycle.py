"""All four services as real subprocesses on loopback: start on port 0, report SERVING, count a
call under its real status code in /metrics, and drain on SIGTERM without cutting a stream."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from dynamics.v1 import (
    animator_pb2,
    animator_pb2_grpc,
    common_pb2,
    encoder_pb2,
    encoder_pb2_grpc,
    face_detect_pb2,
    face_detect_pb2_grpc,
)

from services.common.grpc_client import check_health, make_channel, wait_for_serving
from services.common.media import array_to_raw
from tests.fixture_set import DEFAULT_SET
from tests.service_process import ServiceProcess, start_service

FIXTURE_WEIGHTS = DEFAULT_SET.checkpoints  # the services run on the default fixture set
FULL_NAMES = {
    "face_detect": "dynamics.v1.FaceDetectService",
    "animator": "dynamics.v1.AnimatorService",
    "encoder": "dynamics.v1.EncoderService",
}
ENVS = {
    "face_detect": {
        "FACE_DETECT_PORT": "0",
        "FACE_DETECT_METRICS_PORT": "0",
        "FACE_DETECT_GRACE_S": "30",
    },
    "animator": {
        "ANIMATOR_PORT": "0",
        "ANIMATOR_METRICS_PORT": "0",
        "ANIMATOR_GRACE_S": "30",
        "ANIMATOR_WEIGHTS_DIR": str(FIXTURE_WEIGHTS),
        "ANIMATOR_DEVICE": "cpu",
        "ANIMATOR_BATCH_SIZE": "2",
    },
    "encoder": {"ENCODER_PORT": "0", "ENCODER_METRICS_PORT": "0", "ENCODER_GRACE_S": "30"},
}


def _handled(text: str, method: str, code: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if (
            line.startswith("grpc_server_handled_total{")
            and f'grpc_method="{method}"' in line
            and f'grpc_code="{code}"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _slow(messages, pause_after: int, gate: threading.Event):
    """Yield messages; after `pause_after` of them wait until the test has sent SIGTERM."""
    for i, message in enumerate(messages):
        if i == pause_after:
            gate.wait(30)
            time.sleep(0.5)
        yield message


# -- per-service: a call rejected with a real code, and a stream that spans SIGTERM ------------


def _bad_call(name: str, channel: grpc.Channel) -> str:
    if name == "face_detect":
        stub = face_detect_pb2_grpc.FaceDetectServiceStub(channel)
        req = face_detect_pb2.DetectRequest(
            image=common_pb2.Image(encoded=common_pb2.EncodedImage(data=b"not an image"))
        )
        call = lambda: stub.Detect(req, timeout=30)
        method = "Detect"
    elif name == "animator":
        stub = animator_pb2_grpc.AnimatorServiceStub(channel)
        bad = [
            animator_pb2.ExtractMotionRequest(
                crop=animator_pb2.DrivingCrop(index=0, image=array_to_raw(_noise(8, 8)))
            )
        ]
        call = lambda: stub.ExtractMotion(iter(bad), timeout=30)
        method = "ExtractMotion"
    else:
        stub = encoder_pb2_grpc.EncoderServiceStub(channel)
        bad = [
            encoder_pb2.EncodeRequest(
                frame=encoder_pb2.AnimatedFrameData(index=0, image=array_to_raw(_noise(8, 8)))
            )
        ]
        call = lambda: list(stub.Encode(iter(bad), timeout=30))
        method = "Encode"
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert info.value.details(), "an error must carry a message"
    return method


def _stream(name: str, channel: grpc.Channel, gate: threading.Event) -> tuple[int, int]:
    """Run one streaming call paused mid-way; returns (items expected, items received)."""
    n = 6
    if name == "face_detect":
        stub = face_detect_pb2_grpc.FaceDetectServiceStub(channel)
        frames = [
            face_detect_pb2.TrackDrivingRequest(
                config=face_detect_pb2.TrackDrivingConfig(width=96, height=96, total_frames=n)
            )
        ]
        frames += [
            face_detect_pb2.TrackDrivingRequest(
                frame=face_detect_pb2.DrivingFrame(index=i, image=array_to_raw(_noise(96, 96, i)))
            )
            for i in range(n)
        ]
        try:
            got = list(stub.TrackDriving(_slow(frames, 3, gate), timeout=120))
        except grpc.RpcError as exc:
            # Noise has no face: the service may refuse the clip, but only with a real status
            # after the whole drain, never by being cut (CANCELLED/UNAVAILABLE).
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc
            return n, n
        return n, len(got)
    if name == "animator":
        stub = animator_pb2_grpc.AnimatorServiceStub(channel)
        msgs = [
            animator_pb2.AnimateRequest(
                setup=animator_pb2.AnimateSetup(
                    source_crop=array_to_raw(_noise(256, 256)),
                    total_frames=n,
                    source_ratios=common_pb2.FaceRatios(eye_left=0.3, eye_right=0.3, lip=0.1),
                )
            )
        ]
        msgs += [
            animator_pb2.AnimateRequest(
                crop=animator_pb2.DrivingCrop(
                    index=i,
                    image=array_to_raw(_noise(256, 256, i)),
                    ratios=common_pb2.FaceRatios(eye_left=0.3, eye_right=0.3, lip=0.1),
                )
            )
            for i in range(n)
        ]
        got = [r for r in stub.Animate(_slow(msgs, 3, gate), timeout=300) if r.HasField("frame")]
        assert [r.frame.index for r in got] == list(range(len(got)))
        return n, len(got)
    stub = encoder_pb2_grpc.EncoderServiceStub(channel)
    msgs = [
        encoder_pb2.EncodeRequest(
            header=encoder_pb2.EncodeHeader(
                fps=common_pb2.Rational(num=25, den=1),
                frame_width=64,
                frame_height=64,
                total_frames=n,
            )
        )
    ]
    msgs += [
        encoder_pb2.EncodeRequest(
            frame=encoder_pb2.AnimatedFrameData(index=i, image=array_to_raw(_noise(64, 64, i)))
        )
        for i in range(n)
    ]
    replies = list(stub.Encode(_slow(msgs, 3, gate), timeout=120))
    summary = [r.summary for r in replies if r.HasField("summary")]
    assert summary and summary[-1].frames == n
    assert sum(len(r.mp4_chunk) for r in replies) == summary[-1].bytes > 0
    return n, summary[-1].frames


@pytest.mark.parametrize("name", ["face_detect", "animator", "encoder"])
def test_grpc_service_lifecycle(name: str) -> None:
    svc: ServiceProcess = start_service(name, ENVS[name])
    channel = make_channel(svc.target)
    try:
        assert wait_for_serving(channel, FULL_NAMES[name], timeout_s=180), "\n".join(
            svc.lines[-20:]
        )
        assert check_health(channel, "") == "SERVING"
        method = _bad_call(name, channel)
        assert _handled(svc.metrics(), method, "INVALID_ARGUMENT") == 1

        gate = threading.Event()
        result: dict = {}
        worker = threading.Thread(target=lambda: result.update(r=_stream(name, channel, gate)))
        worker.start()
        time.sleep(1.0)
        svc.proc.send_signal(15)  # SIGTERM while the stream is in flight
        gate.set()
        worker.join(300)
        assert "r" in result, "the in-flight stream failed during draining"
        expected, received = result["r"]
        assert received == expected
        assert svc.proc.wait(60) == 0
    finally:
        channel.close()
        svc.kill()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_gateway_health_readiness_and_metrics(tmp_path: Path) -> None:
    port = _free_port()
    closed = f"127.0.0.1:{_free_port()}"
    env = {
        "GATEWAY_PORT": str(port),
        "GATEWAY_DATA_DIR": str(tmp_path),
        "GATEWAY_AUTH_MODE": "none",
        "FACE_DETECT_ADDR": closed,
        "ANIMATOR_ADDR": closed,
        "ENCODER_ADDR": closed,
    }
    gw = start_service("gateway", env, known_port=port)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                status, _ = _get(f"http://127.0.0.1:{port}/healthz")
                break
            except OSError:
                time.sleep(0.2)
        assert status == 200
        status, body = _get(f"http://127.0.0.1:{port}/readyz")
        # Nothing listens downstream; readiness covers the database and storage only.
        assert status == 200 and "face_detect" not in body
        status, body = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and "dynamics_queue_depth" in body
        # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells why.
        assert gw.terminate(30) in (0, -15)
        assert any("Finished server process" in line for line in gw.lines)
    finally:
        gw.kill()
