"""Service clients against a real in-process gRPC server: errors map to JobFailed codes."""

from __future__ import annotations

from concurrent import futures

import grpc
import pytest
from dynamics.v1 import animator_pb2, animator_pb2_grpc, face_detect_pb2, face_detect_pb2_grpc

from services.common.errors import (
    FaceNotFoundError,
    FailedPreconditionError,
    ResourceExhaustedError,
    handle_errors,
)
from services.gateway.pipeline.clients import ServiceClients, ServiceTargets, job_failed_from_rpc


class _Refusing(face_detect_pb2_grpc.FaceDetectServiceServicer):
    @handle_errors
    def DetectSource(self, request, context):
        raise FaceNotFoundError("no face in the source photo", reason="no_face")

    @handle_errors
    def TrackDriving(self, request_iterator, context):
        config = next(request_iterator).config
        if config.total_frames > 100:
            raise ResourceExhaustedError(
                "3000 frames announced; the limit is 100", reason="too_many_frames"
            )
        raise ResourceExhaustedError("too many streams")
        yield  # a generator, like the real servicer

    @handle_errors
    def Detect(self, request, context):
        raise RuntimeError("bug")


@pytest.fixture(scope="module")
def clients():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    face_detect_pb2_grpc.add_FaceDetectServiceServicer_to_server(_Refusing(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    target = f"127.0.0.1:{port}"
    with ServiceClients(ServiceTargets(target, target, target)) as clients:
        yield clients
    server.stop(0)


def test_invalid_argument_carries_the_service_reason(clients) -> None:
    future = clients.face_detect.detect_source(b"png", source_max_dim=1280, timeout_s=10)
    with pytest.raises(grpc.RpcError) as err:
        future.result()
    failed = job_failed_from_rpc(err.value, "face detection")
    assert failed.code == "no_face" and failed.message == "no face in the source photo"
    assert not failed.retryable


def test_resource_exhausted_without_the_capacity_reason_is_not_retried(clients) -> None:
    requests = iter(
        [
            face_detect_pb2.TrackDrivingRequest(
                config=face_detect_pb2.TrackDrivingConfig(width=8, height=8)
            )
        ]
    )
    with pytest.raises(grpc.RpcError) as err:
        list(clients.face_detect.track_driving(requests, timeout_s=10))
    failed = job_failed_from_rpc(err.value, "face detection")
    assert not failed.retryable and failed.code == "resource_exhausted"
    assert "too many streams" in failed.message


def test_a_job_over_a_size_limit_is_not_retried(clients) -> None:
    requests = iter(
        [
            face_detect_pb2.TrackDrivingRequest(
                config=face_detect_pb2.TrackDrivingConfig(width=8, height=8, total_frames=3000)
            )
        ]
    )
    with pytest.raises(grpc.RpcError) as err:
        list(clients.face_detect.track_driving(requests, timeout_s=10))
    failed = job_failed_from_rpc(err.value, "face detection")
    assert failed.code == "too_many_frames" and not failed.retryable
    assert "the limit is 100" in failed.message


def test_internal_errors_and_health(clients) -> None:
    stub = face_detect_pb2_grpc.FaceDetectServiceStub(clients._channels["face_detect"])
    with pytest.raises(grpc.RpcError) as err:
        stub.Detect(face_detect_pb2.DetectRequest(), timeout=10)
    failed = job_failed_from_rpc(err.value, "face detection")
    assert failed.code == "internal" and not failed.retryable
    assert clients.health()["face_detect"] in ("UNKNOWN", "UNREACHABLE")


def test_unreachable_service_is_retryable() -> None:
    closed = ServiceTargets("127.0.0.1:9", "127.0.0.1:9", "127.0.0.1:9")
    with ServiceClients(closed, max_attempts=2) as clients:
        future = clients.face_detect.detect_source(b"x", source_max_dim=64, timeout_s=5)
        with pytest.raises(grpc.RpcError) as err:
            future.result()
        failed = job_failed_from_rpc(err.value, "face detection")
        assert failed.code == "service_unavailable" and failed.retryable
        assert clients.health(timeout_s=1) == {
            "face_detect": "UNREACHABLE",
            "animator": "UNREACHABLE",
            "encoder": "UNREACHABLE",
        }


class _Animator(animator_pb2_grpc.AnimatorServiceServicer):
    """GetInfo answers the current model (and counts the calls); Animate refuses all motion as
    another model's, as a real animator does for a foreign motion_fingerprint."""

    def __init__(self) -> None:
        self.model, self.info_calls = "a" * 32, 0

    @handle_errors
    def GetInfo(self, request, context):
        self.info_calls += 1
        return animator_pb2.AnimatorInfo(
            model_fingerprint=self.model, backend="torch", device="cpu", dtype="float32"
        )

    @handle_errors
    def Animate(self, request_iterator, context):
        setup = next(request_iterator).setup
        raise FailedPreconditionError(
            f"motion by {setup.motion_fingerprint}", reason="model_mismatch"
        )
        yield  # a generator, like the real servicer


def test_the_animator_fingerprint_is_asked_once_per_channel_until_dropped() -> None:
    animator = _Animator()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    animator_pb2_grpc.add_AnimatorServiceServicer_to_server(animator, server)
    target = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    try:
        with ServiceClients(ServiceTargets(target, target, target)) as clients:
            assert clients.animator_fingerprint() == clients.animator_fingerprint() == "a" * 32
            assert animator.info_calls == 1
            # The whole kept answer (what a job's result names): no second GetInfo.
            info = clients.animator_info()
            assert (info.model_fingerprint, info.backend, info.device, info.dtype) == (
                "a" * 32,
                "torch",
                "cpu",
                "float32",
            )
            assert animator.info_calls == 1
            animator.model = "b" * 32
            clients.saw_animator_model("a" * 32)  # the kept answer's model: kept
            assert clients.animator_fingerprint() == "a" * 32 and animator.info_calls == 1
            clients.saw_animator_model("b" * 32)  # frames by another model: asked again
            assert clients.animator_fingerprint() == "b" * 32 and animator.info_calls == 2
            clients.forget_animator_info()
            assert clients.animator_fingerprint() == "b" * 32 and animator.info_calls == 3
            setup = animator_pb2.AnimateSetup(motion_fingerprint="a" * 32)
            call = clients.animator.animate(
                iter([animator_pb2.AnimateRequest(setup=setup)]), timeout_s=10
            )
            with pytest.raises(grpc.RpcError) as err:
                list(call)
    finally:
        server.stop(0)
    failed = job_failed_from_rpc(err.value, "animator")
    assert failed.code == "model_mismatch" and failed.retryable
    assert "motion by " + "a" * 32 in failed.message
