"""face_detect as a real gRPC server on an ephemeral loopback port (services/common/grpc_server):
Detect, DetectSource on Tom Hanks, TrackDriving streaming a real-face clip with a faceless frame,
and INVALID_ARGUMENT with a clear message for bad input."""

from __future__ import annotations

import threading
import urllib.request

import grpc
import numpy as np
import pytest
import torch
from dynamics.v1 import common_pb2, face_detect_pb2, face_detect_pb2_grpc

from services.cli.synthetic_clip import SyntheticClip, astronaut_face
from services.common.canvas import source_canvas
from services.common.errors import REASON_METADATA_KEY
from services.common.grpc_client import check_health, make_channel, wait_for_serving
from services.common.grpc_server import GrpcService
from services.common.media import array_to_raw, raw_to_array
from services.face_detect.config import FaceDetectConfig
from services.face_detect.detector import FaceDetector
from services.face_detect.servicer import SERVICE_NAME, FaceDetectServicer
from tests.unit.face_detect import assets


@pytest.fixture(scope="module")
def server():
    threads = torch.get_num_threads()
    config = FaceDetectConfig(port=0, metrics_port=0, driving_box_frames=4)
    servicer = FaceDetectServicer(config)
    service = GrpcService(
        name="face_detect",
        service_names=[SERVICE_NAME],
        register=lambda s: face_detect_pb2_grpc.add_FaceDetectServiceServicer_to_server(
            servicer, s
        ),
        port=0,
        metrics_port=0,
        grace_s=5.0,
    )
    port = service.start()
    channel = make_channel(f"127.0.0.1:{port}")
    assert check_health(channel, SERVICE_NAME) == "NOT_SERVING", "not ready before the detector"
    # load in the background, as serve_forever does, and poll readiness like a kubelet
    loader = threading.Thread(target=lambda: servicer.attach(FaceDetector.from_config(config)))
    loader.start()
    loader.join(60)
    service.set_serving()
    assert wait_for_serving(channel, SERVICE_NAME, timeout_s=30)
    yield service, face_detect_pb2_grpc.FaceDetectServiceStub(channel)
    channel.close()
    service.stop(0)
    torch.set_num_threads(threads)


def _encoded(path) -> common_pb2.Image:
    return common_pb2.Image(encoded=common_pb2.EncodedImage(data=path.read_bytes()))


def test_detect_group_photo(server):
    _service, stub = server
    reply = stub.Detect(
        face_detect_pb2.DetectRequest(image=_encoded(assets.insightface_image_path("t1.jpg"))),
        timeout=60,
    )
    assert (reply.width, reply.height, reply.backend) == (1280, 886, "mtcnn")
    assert len(reply.faces) == 6
    for face in reply.faces:
        assert face.landmarks.count == 5 and len(face.landmarks.xy) == 10


def test_detect_source_tom_hanks(server):
    _service, stub = server
    reply = stub.DetectSource(
        face_detect_pb2.DetectSourceRequest(
            image=_encoded(assets.insightface_image_path("Tom_Hanks_54745.png"))
        ),
        timeout=60,
    )
    assert reply.faces_found == 1
    crop = raw_to_array(reply.crop)
    assert crop.shape == (256, 256, 3)
    assert (reply.canvas_width, reply.canvas_height, reply.source_max_dim) == (112, 112, 1280)
    m_c2o = np.array(reply.crop_to_canvas.values).reshape(3, 3)
    # the 512-crop centre maps onto the face in the photo
    centre = m_c2o @ np.array([256.0, 256.0, 1.0])
    assert reply.face.x1 <= centre[0] <= reply.face.x2
    assert reply.face.y1 - 20 <= centre[1] <= reply.face.y2
    assert reply.landmarks.count == 5
    assert (reply.ratios.eye_left, reply.ratios.lip) == (0.0, 0.0), "no 203-point model: unknown"


def test_detect_source_crop_comes_from_the_shared_canvas(server):
    """The reply names the canvas (size, max-dim) instead of carrying it; the crop is the one
    a FaceDetector cuts from `source_canvas(photo, max_dim)`, the function the encoder uses."""
    _service, stub = server
    data = assets.insightface_image_path("t1.jpg").read_bytes()
    reply = stub.DetectSource(
        face_detect_pb2.DetectSourceRequest(
            image=common_pb2.Image(encoded=common_pb2.EncodedImage(data=data)), source_max_dim=641
        ),
        timeout=60,
    )
    canvas = source_canvas(data, 641)
    assert canvas.shape == (442, 640, 3)  # 641 x 443 resized, then cropped to even sides
    assert (reply.canvas_width, reply.canvas_height, reply.source_max_dim) == (640, 442, 641)
    local = FaceDetector.from_config(FaceDetectConfig()).analyse_canvas(canvas)
    assert np.array_equal(raw_to_array(reply.crop), local.crop)
    assert np.array_equal(np.array(reply.crop_to_canvas.values).reshape(3, 3), local.m_c2o)
    assert reply.ByteSize() < 300_000  # the crop and a few numbers, whatever the photo's size


def test_corrupt_image_is_invalid_argument(server):
    _service, stub = server
    bad = common_pb2.Image(encoded=common_pb2.EncodedImage(data=b"\x89PNG\r\n\x1a\n broken"))
    with pytest.raises(grpc.RpcError) as info:
        stub.DetectSource(face_detect_pb2.DetectSourceRequest(image=bad), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "image" in info.value.details() and "Traceback" not in info.value.details()
    assert dict(info.value.trailing_metadata())[REASON_METADATA_KEY] == "bad_image"


def test_no_face_in_source_is_invalid_argument(server):
    _service, stub = server
    blank = common_pb2.Image(raw=array_to_raw(np.full((200, 300, 3), 128, np.uint8)))
    with pytest.raises(grpc.RpcError) as info:
        stub.DetectSource(face_detect_pb2.DetectSourceRequest(image=blank), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no face" in info.value.details()
    assert dict(info.value.trailing_metadata())[REASON_METADATA_KEY] == "no_face"


def _requests(clip: SyntheticClip):
    yield face_detect_pb2.TrackDrivingRequest(
        config=face_detect_pb2.TrackDrivingConfig(
            width=clip.width, height=clip.height, total_frames=clip.n_frames
        )
    )
    for i in range(clip.n_frames):
        yield face_detect_pb2.TrackDrivingRequest(
            frame=face_detect_pb2.DrivingFrame(index=i, image=array_to_raw(clip.frame(i)))
        )


def test_track_driving_streams_crops_in_order(server):
    service, stub = server
    clip = SyntheticClip(
        astronaut_face(120), width=400, height=240, n_frames=12, amplitude=(60.0, 25.0), gap=(7,)
    )
    replies = list(stub.TrackDriving(_requests(clip), timeout=120))
    assert [r.index for r in replies] == list(range(clip.n_frames))
    assert [r.face_found for r in replies] == [i != 7 for i in range(clip.n_frames)]
    for reply in replies:
        assert raw_to_array(reply.crop).shape == (256, 256, 3)
        assert reply.landmarks.count == 5
    metrics = (
        urllib.request.urlopen(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=5)
        .read()
        .decode()
    )
    assert (
        "face_detect_frames_total" in metrics
        and 'face_detect_seconds_count{kind="driving"}' in metrics
    )


def test_track_driving_without_config_first(server):
    _service, stub = server
    frame = face_detect_pb2.TrackDrivingRequest(
        frame=face_detect_pb2.DrivingFrame(
            index=0, image=array_to_raw(np.zeros((32, 32, 3), np.uint8))
        )
    )
    with pytest.raises(grpc.RpcError) as info:
        list(stub.TrackDriving(iter([frame]), timeout=30))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "TrackDrivingConfig" in info.value.details()


def test_calls_before_the_detector_is_loaded_are_unavailable():
    servicer = FaceDetectServicer(FaceDetectConfig())
    service = GrpcService(
        name="face_detect_loading",
        service_names=[SERVICE_NAME],
        register=lambda s: face_detect_pb2_grpc.add_FaceDetectServiceServicer_to_server(
            servicer, s
        ),
        port=0,
        metrics_port=None,
        grace_s=1.0,
    )
    port = service.start()
    try:
        with make_channel(f"127.0.0.1:{port}") as channel:
            assert check_health(channel, SERVICE_NAME) == "NOT_SERVING"
            stub = face_detect_pb2_grpc.FaceDetectServiceStub(channel)
            image = common_pb2.Image(raw=array_to_raw(np.zeros((32, 32, 3), np.uint8)))
            with pytest.raises(grpc.RpcError) as info:
                stub.Detect(face_detect_pb2.DetectRequest(image=image), timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert dict(info.value.trailing_metadata())[REASON_METADATA_KEY] == "loading"
    finally:
        service.stop(0)
