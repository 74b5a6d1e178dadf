"""The encoder over real gRPC on loopback (port 0) with real FFmpeg: happy path, errors, cancel."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from dynamics.v1 import common_pb2, encoder_pb2, encoder_pb2_grpc
from PIL import Image

from services.common.grpc_client import make_channel, wait_for_serving
from services.common.grpc_server import GrpcService
from services.common.media import array_to_raw
from services.encoder.config import EncoderConfig
from services.encoder.pasteback import PasteBack
from services.encoder.servicer import SERVICE_NAME, EncoderServicer
from tests.service_process import start_service
from tests.unit.encoder.media_tools import (
    FFMPEG,
    FFPROBE,
    child_ffmpeg_pids,
    decode_rgb,
    ffprobe,
    make_hero_video,
    needs_ffmpeg,
    psnr,
    sample_frames,
    stream,
)

pytestmark = [pytest.mark.ffmpeg, needs_ffmpeg]

M_C2O = [1.5, 0.1, 30.0, -0.1, 1.5, 20.0, 0.0, 0.0, 1.0]


def _serve(config: EncoderConfig) -> GrpcService:
    servicer = EncoderServicer(config)
    service = GrpcService(
        name="encoder-test",
        service_names=[SERVICE_NAME],
        port=0,
        metrics_port=None,
        register=lambda s: encoder_pb2_grpc.add_EncoderServiceServicer_to_server(servicer, s),
    )
    service.start()
    service.set_serving()
    return service


@pytest.fixture
def work(tmp_path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


@pytest.fixture
def client(work):
    """(stub, config) of an in-process encoder whose temp files go to `work`."""
    config = EncoderConfig(ffmpeg=FFMPEG, ffprobe=FFPROBE, tmp_dir=str(work))
    service = _serve(config)
    channel = make_channel(f"127.0.0.1:{service.port}")
    yield encoder_pb2_grpc.EncoderServiceStub(channel), service
    channel.close()
    service.stop(0)


def _header(**fields) -> encoder_pb2.EncodeRequest:
    return encoder_pb2.EncodeRequest(header=encoder_pb2.EncodeHeader(**fields))


def _frame(i: int, image: np.ndarray) -> encoder_pb2.EncodeRequest:
    return encoder_pb2.EncodeRequest(
        frame=encoder_pb2.AnimatedFrameData(index=i, image=array_to_raw(image))
    )


def _audio(data: bytes, size: int = 65536):
    for start in range(0, len(data), size):
        yield encoder_pb2.EncodeRequest(audio_chunk=data[start : start + size])


def _collect(responses) -> tuple[bytes, list, encoder_pb2.EncodeSummary]:
    chunks, progress, last = [], [], None
    for response in responses:
        kind = response.WhichOneof("item")
        assert last is None, "nothing may follow the summary"
        if kind == "mp4_chunk":
            chunks.append(response.mp4_chunk)
        elif kind == "progress":
            progress.append((response.progress.done, response.progress.total))
        else:
            last = response.summary
    return b"".join(chunks), progress, last


def _settled(check, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def _photo(data: bytes, size: int = 4096):
    for start in range(0, len(data), size):
        yield encoder_pb2.EncodeRequest(photo_chunk=data[start : start + size])


def test_encode_with_pasteback_and_audio(client, work, tmp_path):
    stub, _ = client
    hero = make_hero_video(tmp_path / "hero.mp4", seconds=2.0).read_bytes()
    canvas = sample_frames(1, 120, 90, seed=4)[0]
    png = io.BytesIO()
    Image.fromarray(canvas).save(png, format="PNG")
    crops = [255 - c for c in sample_frames(30, 32, 32, seed=5)]
    requests = [
        _header(
            fps=common_pb2.Rational(num=30000, den=1001),
            photo_bytes=len(png.getvalue()),
            source_max_dim=1280,
            canvas_width=120,
            canvas_height=90,
            crop_to_canvas=common_pb2.Matrix3x3(values=M_C2O),
            audio_bytes=len(hero),
            total_frames=30,
            frame_width=32,
            frame_height=32,
        )
    ]
    requests += list(_photo(png.getvalue())) + list(_audio(hero))
    requests += [_frame(i, c) for i, c in enumerate(crops)]
    mp4, progress, summary = _collect(stub.Encode(iter(requests), timeout=60))

    assert progress[-1] == (30, 30) and (25, 30) in progress
    assert summary.frames == 30 and summary.has_audio and summary.bytes == len(mp4)
    assert summary.duration_seconds == pytest.approx(1.001)
    out = tmp_path / "out.mp4"
    out.write_bytes(mp4)
    info = ffprobe(out)
    video, audio = stream(info, "video"), stream(info, "audio")
    assert (video["codec_name"], video["pix_fmt"]) == ("h264", "yuv420p")
    assert video["r_frame_rate"] == "30000/1001" and int(video["nb_read_frames"]) == 30
    assert (video["width"], video["height"]) == (120, 90)
    assert audio["codec_name"] == "aac"
    assert abs(float(audio["duration"]) - float(video["duration"])) <= 1001 / 30000
    paste = PasteBack(canvas, np.array(M_C2O).reshape(3, 3), (32, 32))
    decoded = decode_rgb(out, 120, 90)
    assert min(psnr(d, paste(c)) for d, c in zip(decoded, crops)) >= 33.0
    assert not any(work.iterdir())


def test_plain_frames_odd_size_without_audio(client, work, tmp_path):
    stub, _ = client
    frames = sample_frames(6, 33, 31)
    requests = [_header(fps=common_pb2.Rational(num=25, den=1))]
    requests += [_frame(i, f) for i, f in enumerate(frames)]
    mp4, progress, summary = _collect(stub.Encode(iter(requests), timeout=60))
    assert summary.frames == 6 and not summary.has_audio and progress[-1] == (6, 6)
    out = tmp_path / "plain.mp4"
    out.write_bytes(mp4)
    info = ffprobe(out)
    assert stream(info, "audio") is None
    assert (stream(info, "video")["width"], stream(info, "video")["height"]) == (34, 32)
    decoded = decode_rgb(out, 34, 32)
    assert min(psnr(d[:31, :33], f) for d, f in zip(decoded, frames)) >= 33.0
    assert not any(work.iterdir())


@pytest.mark.parametrize(
    "requests,reason",
    [
        ([_frame(0, np.zeros((8, 8, 3), np.uint8))], "bad_order"),
        ([_header(fps=common_pb2.Rational(num=0, den=1))], "bad_fps"),
        (
            [
                _header(fps=common_pb2.Rational(num=25, den=1)),
                _frame(1, np.zeros((8, 8, 3), np.uint8)),
            ],
            "bad_order",
        ),
        (
            [
                _header(fps=common_pb2.Rational(num=25, den=1), total_frames=3),
                _frame(0, np.zeros((8, 8, 3), np.uint8)),
            ],
            "missing_frames",
        ),
        (
            [
                _header(
                    fps=common_pb2.Rational(num=25, den=1),
                    photo_bytes=10,
                    canvas_width=20,
                    canvas_height=20,
                )
            ],
            "bad_pasteback",
        ),
        (
            [
                _header(
                    fps=common_pb2.Rational(num=25, den=1),
                    crop_to_canvas=common_pb2.Matrix3x3(values=M_C2O),
                )
            ],
            "bad_pasteback",
        ),
        (
            [
                _header(
                    fps=common_pb2.Rational(num=25, den=1),
                    photo_bytes=4,
                    canvas_width=20,
                    canvas_height=20,
                    crop_to_canvas=common_pb2.Matrix3x3(values=M_C2O),
                ),
                encoder_pb2.EncodeRequest(photo_chunk=b"12345"),
            ],
            "bad_photo",
        ),
        (
            [
                _header(
                    fps=common_pb2.Rational(num=25, den=1),
                    photo_bytes=4,
                    canvas_width=20,
                    canvas_height=20,
                    crop_to_canvas=common_pb2.Matrix3x3(values=M_C2O),
                ),
                encoder_pb2.EncodeRequest(photo_chunk=b"1234"),
            ],
            "bad_image",
        ),
        (
            [
                _header(fps=common_pb2.Rational(num=25, den=1)),
                encoder_pb2.EncodeRequest(audio_chunk=b""),
                encoder_pb2.EncodeRequest(photo_chunk=b"1234"),
            ],
            "bad_order",
        ),
    ],
)
def test_bad_streams_are_invalid_argument(client, work, requests, reason):
    stub, _ = client
    with pytest.raises(grpc.RpcError) as info:
        _collect(stub.Encode(iter(requests), timeout=30))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ("dynamics-reason", reason) in info.value.trailing_metadata()
    assert _settled(lambda: not any(work.iterdir()) and not child_ffmpeg_pids())


def test_ffmpeg_failure_is_internal_with_a_short_message(work, tmp_path, caplog):
    config = EncoderConfig(ffmpeg=FFMPEG, ffprobe=FFPROBE, tmp_dir=str(work), audio_bitrate="lots")
    service = _serve(config)
    hero = make_hero_video(tmp_path / "hero.mp4", seconds=0.5).read_bytes()
    requests = [_header(fps=common_pb2.Rational(num=25, den=1), audio_bytes=len(hero))]
    requests += list(_audio(hero)) + [_frame(0, np.zeros((16, 16, 3), np.uint8))]
    with make_channel(f"127.0.0.1:{service.port}") as channel:
        stub = encoder_pb2_grpc.EncoderServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            _collect(stub.Encode(iter(requests), timeout=30))
    service.stop(0)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "ffmpeg exited with code" in info.value.details()
    # FFmpeg's own words (with the session's temp paths) are logged, not sent.
    assert "lots" not in info.value.details() and str(work) not in info.value.details()
    assert any("lots" in record.getMessage() for record in caplog.records)
    assert ("dynamics-reason", "ffmpeg_failed") in info.value.trailing_metadata()
    assert not any(work.iterdir())


@pytest.mark.parametrize("how", ["cancel", "broken_request_stream"])
def test_cancelled_stream_leaves_no_process_and_no_file(client, work, tmp_path, how):
    stub, _ = client
    hero = make_hero_video(tmp_path / "hero.mp4", seconds=1.0).read_bytes()
    sent_five, release = threading.Event(), threading.Event()

    def requests():
        yield _header(fps=common_pb2.Rational(num=30000, den=1001), audio_bytes=len(hero))
        yield from _audio(hero)
        for i, frame in enumerate(sample_frames(5, 64, 48)):
            yield _frame(i, frame)
        sent_five.set()
        if how == "broken_request_stream":
            _settled(lambda: bool(child_ffmpeg_pids()))
            raise RuntimeError("upstream animator stream broke")
        release.wait(30)  # the animator stalls; the gateway gives up and cancels

    call = stub.Encode(requests(), timeout=60)
    assert sent_five.wait(30)
    if how == "cancel":
        assert _settled(lambda: bool(child_ffmpeg_pids()) and any(work.iterdir()))
        call.cancel()
        release.set()
    with pytest.raises(grpc.RpcError) as info:
        _collect(call)
    # gRPC reports a client-side request exception as UNKNOWN ("Exception iterating requests").
    expected = grpc.StatusCode.CANCELLED if how == "cancel" else grpc.StatusCode.UNKNOWN
    assert info.value.code() == expected
    assert _settled(lambda: not child_ffmpeg_pids()), "FFmpeg still running"
    assert _settled(lambda: not any(work.iterdir())), f"left behind: {list(work.iterdir())}"


def test_entrypoint_serves_after_checking_ffmpeg(work):
    env = {"ENCODER_PORT": "0", "ENCODER_METRICS_PORT": "0", "ENCODER_TMP_DIR": str(work)}
    proc = start_service("encoder", env)
    try:
        with make_channel(proc.target) as channel:
            assert wait_for_serving(channel, SERVICE_NAME, timeout_s=30)
            stub = encoder_pb2_grpc.EncoderServiceStub(channel)
            requests = [_header(fps=common_pb2.Rational(num=25, den=1))]
            requests += [_frame(i, f) for i, f in enumerate(sample_frames(4, 16, 16))]
            _, _, summary = _collect(stub.Encode(iter(requests), timeout=60))
        assert summary.frames == 4
        metrics = proc.metrics()
        assert "encoder_frames_total 4.0" in metrics
        assert "encoder_ffmpeg_seconds_count 1.0" in metrics
    finally:
        assert proc.terminate() == 0


def test_entrypoint_without_ffmpeg_never_serves(work):
    env = {
        "ENCODER_PORT": "0",
        "ENCODER_METRICS_PORT": "0",
        "ENCODER_TMP_DIR": str(work),
        "ENCODER_FFMPEG": str(work / "missing-ffmpeg"),
    }
    proc = start_service("encoder", env)
    try:
        assert proc.proc.wait(30) == 1
        assert any("FFmpeg tools are not usable" in line for line in proc.lines)
    finally:
        proc.kill()
