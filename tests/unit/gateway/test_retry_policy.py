"""Which failures wait, retry or fail: RESOURCE_EXHAUSTED is a capacity wait only with the
animator's `animator_busy`; a gRPC message over the size limit, a size-limit reason or any other
RESOURCE_EXHAUSTED fails the job at once. Capacity waits grow and end at `max_queue_s` with
`capacity_timeout`. The gRPC errors here come from real servers on loopback."""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
import pytest
from dynamics.v1 import common_pb2, face_detect_pb2, face_detect_pb2_grpc

from services.common.errors import InvalidInputError, ResourceExhaustedError, handle_errors
from services.common.grpc_client import make_channel
from services.gateway.domain import JobFailed
from services.gateway.jobs.retry_policy import (
    CAPACITY_TIMEOUT,
    MAX_DELAY_S,
    RetryPlan,
    final_failure,
    plan_retry,
)
from services.gateway.pipeline.clients import job_failed_from_rpc
from services.gateway.pipeline.orchestrator import Orchestrator

BIG = 64 * 1024  # the test server's send limit; its big reply is twice that


class _Servicer(face_detect_pb2_grpc.FaceDetectServiceServicer):
    """DetectSource answers by the requested face_index: 0 a reply over the server's send limit
    (as a whole canvas was), 1 the animator's capacity signal, 2 a size-limit refusal, 3 a bare
    RESOURCE_EXHAUSTED, 4 a reply under the server's limit."""

    @handle_errors
    def DetectSource(self, request, context):
        if request.face_index in (0, 4):
            size = 2 * BIG if request.face_index == 0 else BIG - 4096
            return face_detect_pb2.DetectSourceResponse(crop=common_pb2.RawImage(data=bytes(size)))
        if request.face_index == 1:
            raise ResourceExhaustedError(
                "the animator is running 8 jobs; retry later", reason="animator_busy"
            )
        if request.face_index == 2:
            raise ResourceExhaustedError("3000 frames; the limit is 1800", reason="too_many_frames")
        raise ResourceExhaustedError("out of something")


@pytest.fixture(scope="module")
def target():
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2), options=[("grpc.max_send_message_length", BIG)]
    )
    face_detect_pb2_grpc.add_FaceDetectServiceServicer_to_server(_Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(0)


def _failure(
    target: str, face_index: int, *, max_message_bytes: int | None = None, photo_bytes: int = 100
) -> JobFailed:
    kwargs = {} if max_message_bytes is None else {"max_message_bytes": max_message_bytes}
    with make_channel(target, **kwargs) as channel:
        stub = face_detect_pb2_grpc.FaceDetectServiceStub(channel)
        request = face_detect_pb2.DetectSourceRequest(
            image=common_pb2.Image(encoded=common_pb2.EncodedImage(data=b"x" * photo_bytes)),
            face_index=face_index,
        )
        with pytest.raises(grpc.RpcError) as err:
            stub.DetectSource(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    return job_failed_from_rpc(err.value, "face detection")


def _plan(failed: JobFailed, attempts: int = 1, age_s: float = 10.0) -> RetryPlan | None:
    return plan_retry(
        failed.code,
        failed.retryable,
        attempts=attempts,
        max_attempts=3,
        age_s=age_s,
        base_delay_s=5.0,
        max_queue_s=1800.0,
    )


def test_reply_over_the_servers_send_limit_fails_the_job(target):
    failed = _failure(target, 0)
    assert "Sent message larger than max" in failed.message
    assert failed.code == "message_too_large" and not failed.retryable
    assert _plan(failed) is None
    assert final_failure(failed.code, failed.message, failed.retryable, max_queue_s=1800.0) == (
        failed.code,
        failed.message,
    )


def test_reply_over_the_clients_receive_limit_fails_the_job(target):
    failed = _failure(target, 4, max_message_bytes=BIG // 2)
    assert "Received message larger than max" in failed.message
    assert failed.code == "message_too_large" and not failed.retryable


def test_request_over_the_clients_send_limit_fails_the_job(target):
    failed = _failure(target, 4, max_message_bytes=BIG // 2, photo_bytes=BIG)
    assert "Sent message larger than max" in failed.message
    assert failed.code == "message_too_large" and not failed.retryable


def test_animator_busy_is_a_capacity_wait(target):
    failed = _failure(target, 1)
    assert failed.code == "animator_busy" and failed.retryable
    assert _plan(failed, attempts=3) == RetryPlan(5.0, count_attempt=False)


@pytest.mark.parametrize(("index", "code"), [(2, "too_many_frames"), (3, "resource_exhausted")])
def test_other_resource_exhausted_fails_with_its_reason(target, index, code):
    failed = _failure(target, index)
    assert failed.code == code and not failed.retryable
    assert "refused the job" in failed.message
    assert _plan(failed) is None


def test_gateway_side_errors_follow_the_same_rule():
    translate = Orchestrator._translate
    cancel = threading.Event()
    busy = translate(ResourceExhaustedError("full", reason="animator_busy"), cancel)
    other = translate(ResourceExhaustedError("too big", reason="photo_too_large"), cancel)
    bad = translate(InvalidInputError("bad", reason="bad_image"), cancel)
    assert (busy.code, busy.retryable) == ("animator_busy", True)
    assert (other.code, other.retryable) == ("photo_too_large", False)
    assert (bad.code, bad.retryable) == ("bad_image", False)


@pytest.mark.parametrize(
    ("code", "attempts", "age", "expected"),
    [
        ("no_face", 1, 0, None),
        ("service_unavailable", 1, 0, RetryPlan(5.0, True)),
        ("service_unavailable", 2, 0, RetryPlan(10.0, True)),
        ("service_unavailable", 3, 0, None),
        ("animator_busy", 7, 4, RetryPlan(5.0, False)),  # young: the base delay
        ("animator_busy", 1, 100, RetryPlan(50.0, False)),  # half the time waited so far
        ("animator_busy", 1, 1000, RetryPlan(MAX_DELAY_S, False)),
        ("animator_busy", 1, 1799, None),  # the next try would start past max_queue_s
        # not capacity codes: a retryable failure with these codes uses up attempts
        ("busy", 1, 10, RetryPlan(5.0, True)),
        ("resource_exhausted", 3, 10, None),
    ],
)
def test_retry_plan(code, attempts, age, expected):
    plan = plan_retry(
        code,
        code != "no_face",
        attempts=attempts,
        max_attempts=3,
        age_s=age,
        base_delay_s=5.0,
        max_queue_s=1800.0,
    )
    assert plan == expected


def test_capacity_backoff_grows_from_the_first_try_not_from_creation():
    # queued 600 s before its first try, busy 2 s later: the wait starts at the base delay
    plan = plan_retry(
        "animator_busy",
        True,
        attempts=1,
        max_attempts=3,
        age_s=602.0,
        base_delay_s=5.0,
        max_queue_s=1800.0,
        waited_s=2.0,
    )
    assert plan == RetryPlan(5.0, count_attempt=False)


def test_a_job_busy_for_its_whole_queue_time_is_tried_a_few_times_then_failed():
    """Each try takes 3 s (fetch, detect) and meets a full animator. The old policy retried
    every 5 s (about 225 tries in 30 min); delays now grow about 1.5x up to MAX_DELAY_S."""
    age, delays = 0.0, []
    while True:
        age += 3.0
        plan = plan_retry(
            "animator_busy",
            True,
            attempts=1,
            max_attempts=3,
            age_s=age,
            base_delay_s=5.0,
            max_queue_s=1800.0,
            waited_s=age,
        )
        if plan is None:
            break
        assert not plan.count_attempt
        delays.append(plan.delay_s)
        age += plan.delay_s
    assert delays == sorted(delays) and delays[-1] == MAX_DELAY_S
    assert 10 <= len(delays) <= 30, delays
    assert 1800.0 - MAX_DELAY_S - 3.0 <= age < 1800.0 + 3.0
    code, message = final_failure(
        "animator_busy", "the animator service is at capacity", True, max_queue_s=1800.0
    )
    assert code == CAPACITY_TIMEOUT
    assert message.startswith("No capacity became free within 1800 s")
    assert message.endswith("(last answer: the animator service is at capacity)")
