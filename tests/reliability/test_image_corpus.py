"""The image corpus against the real face_detect service (gRPC) and the real gateway (REST).

Every case gets a precise answer: a usable photo is accepted, anything else is refused with
INVALID_ARGUMENT / 422 and the reason the corpus names, never INTERNAL / 5xx or a hang.
"""

from __future__ import annotations

import grpc
import pytest
from dynamics.v1 import common_pb2, face_detect_pb2, face_detect_pb2_grpc

from services.common.errors import REASON_METADATA_KEY
from services.common.grpc_client import make_channel
from tests.reliability.conftest import assert_rest_error, needs_ffmpeg
from tests.reliability.image_corpus import ImageCase, image_corpus

CASES = image_corpus()
IDS = [case.id for case in CASES]


def _reason(exc: grpc.RpcError) -> str | None:
    return dict(exc.trailing_metadata() or ()).get(REASON_METADATA_KEY)


@pytest.fixture(scope="module")
def detect_stub(grpc_services):
    channel = make_channel(grpc_services["face_detect"].target)
    yield face_detect_pb2_grpc.FaceDetectServiceStub(channel)
    channel.close()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_face_detect_answers_precisely(case: ImageCase, detect_stub) -> None:
    request = face_detect_pb2.DetectSourceRequest(
        image=common_pb2.Image(encoded=common_pb2.EncodedImage(data=case.data))
    )
    if case.expect == "face":
        reply = detect_stub.DetectSource(request, timeout=60)
        assert reply.crop.width == 256 and reply.crop.height == 256
        return
    with pytest.raises(grpc.RpcError) as info:
        detect_stub.DetectSource(request, timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert info.value.details() and "Traceback" not in info.value.details()
    assert _reason(info.value) == case.expect, info.value.details()


@needs_ffmpeg
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gateway_upload_answers_precisely(case: ImageCase, rest, hero_bytes) -> None:
    files = {
        "source": ("photo.jpg", case.data, "image/jpeg"),
        "driving": ("hero.mp4", hero_bytes, "video/mp4"),
    }
    response = rest.post("/v1/jobs", files=files)
    if case.expect in ("face", "no_face"):
        # Intake only decodes the photo; finding the face is the job's first stage.
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "queued"
    else:
        assert_rest_error(response, 422, case.expect)
