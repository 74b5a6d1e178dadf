"""Typed wrappers over the three service stubs, and gRPC errors mapped to `JobFailed`.

Every call takes a deadline. Unary calls return futures and streaming calls return the call
object, so the orchestrator can cancel either when a job is cancelled or fails elsewhere.
`ServiceClients.animator_fingerprint` is the model fingerprint of the animator behind the
channel (its `GetInfo`), the model part of motion-cache keys; `animator_info` is that whole
answer (backend, device, dtype), which each job's result names.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
from dynamics.v1 import (
    animator_pb2,
    animator_pb2_grpc,
    common_pb2,
    encoder_pb2,
    encoder_pb2_grpc,
    face_detect_pb2,
    face_detect_pb2_grpc,
)

from services.common.errors import REASON_METADATA_KEY
from services.common.grpc_client import check_health, make_channel
from services.gateway.domain import JobFailed

FACE_DETECT_SERVICE = "dynamics.v1.FaceDetectService"
ANIMATOR_SERVICE = "dynamics.v1.AnimatorService"
ENCODER_SERVICE = "dynamics.v1.EncoderService"


@dataclass(frozen=True)
class ServiceTargets:
    """host:port of each service."""

    face_detect: str
    animator: str
    encoder: str


class FaceDetectClient:
    """FaceDetectService: the source face once, the driving face per frame."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._stub = face_detect_pb2_grpc.FaceDetectServiceStub(channel)

    def detect_source(self, image: bytes, *, source_max_dim: int, timeout_s: float) -> grpc.Future:
        """Future of a `DetectSourceResponse` for an encoded photo."""
        request = face_detect_pb2.DetectSourceRequest(
            image=common_pb2.Image(encoded=common_pb2.EncodedImage(data=image)),
            source_max_dim=source_max_dim,
        )
        return self._stub.DetectSource.future(request, timeout=timeout_s, wait_for_ready=False)

    def track_driving(
        self, requests: Iterator[face_detect_pb2.TrackDrivingRequest], *, timeout_s: float
    ):
        """Streaming call: config + frames in, `TrackDrivingResponse`s out (iterate the call)."""
        return self._stub.TrackDriving(requests, timeout=timeout_s, wait_for_ready=False)


class AnimatorClient:
    """AnimatorService: driving motion templates and generated frames."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._stub = animator_pb2_grpc.AnimatorServiceStub(channel)

    def extract_motion(
        self, requests: Iterator[animator_pb2.ExtractMotionRequest], *, timeout_s: float
    ) -> grpc.Future:
        """Future of an `ExtractMotionResponse` (the whole template) for streamed crops."""
        return self._stub.ExtractMotion.future(requests, timeout=timeout_s, wait_for_ready=False)

    def animate(self, requests: Iterator[animator_pb2.AnimateRequest], *, timeout_s: float):
        """Streaming call: setup + motion/crops in, `AnimateResponse`s out in frame order."""
        return self._stub.Animate(requests, timeout=timeout_s, wait_for_ready=False)

    def get_info(self, *, timeout_s: float) -> animator_pb2.AnimatorInfo:
        """The model the animator runs (fingerprint, config, device, dtype, backend)."""
        return self._stub.GetInfo(
            animator_pb2.GetInfoRequest(), timeout=timeout_s, wait_for_ready=False
        )


class EncoderClient:
    """EncoderService: frames (and the hero video for its audio) in, MP4 bytes out."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._stub = encoder_pb2_grpc.EncoderServiceStub(channel)

    def encode(self, requests: Iterator[encoder_pb2.EncodeRequest], *, timeout_s: float):
        """Streaming call: header, audio chunks, frames in; MP4 chunks and a summary out."""
        return self._stub.Encode(requests, timeout=timeout_s, wait_for_ready=False)


class ServiceClients:
    """Channels and typed clients for the three services."""

    def __init__(self, targets: ServiceTargets, *, max_attempts: int = 4) -> None:
        self.targets = targets
        self._channels = {
            "face_detect": make_channel(
                targets.face_detect, service_names=[FACE_DETECT_SERVICE], max_attempts=max_attempts
            ),
            "animator": make_channel(
                targets.animator, service_names=[ANIMATOR_SERVICE], max_attempts=max_attempts
            ),
            "encoder": make_channel(
                targets.encoder, service_names=[ENCODER_SERVICE], max_attempts=max_attempts
            ),
        }
        self.face_detect = FaceDetectClient(self._channels["face_detect"])
        self.animator = AnimatorClient(self._channels["animator"])
        self.encoder = EncoderClient(self._channels["encoder"])
        self._animator_info: animator_pb2.AnimatorInfo | None = None
        self._info_lock = threading.Lock()

    def animator_fingerprint(self, timeout_s: float = 10.0) -> str:
        """The model fingerprint of the animator this channel reaches: asked with `GetInfo`
        once, then kept until `forget_animator_info`. Behind a balanced channel the replicas
        may run different models for a while (a rollout); whatever this says, the animator
        refuses motion made by another model and every Animate reply names its own model.

        Raises:
            grpc.RpcError: GetInfo failed (UNAVAILABLE while the animator loads its weights).
        """
        return self.animator_info(timeout_s).model_fingerprint

    def animator_info(self, timeout_s: float = 10.0) -> animator_pb2.AnimatorInfo:
        """The whole `GetInfo` answer that `animator_fingerprint` keeps (model, backend,
        device, dtype, ...): asked once per channel, then kept until dropped.

        Raises:
            grpc.RpcError: GetInfo failed.
        """
        with self._info_lock:
            if self._animator_info is None:
                self._animator_info = self.animator.get_info(timeout_s=timeout_s)
            return self._animator_info

    def forget_animator_info(self) -> None:
        """Ask `GetInfo` again next time (an animator refused motion as another model's)."""
        with self._info_lock:
            self._animator_info = None

    def saw_animator_model(self, fingerprint: str) -> None:
        """An animator on this channel made frames with `fingerprint`: a kept GetInfo answer
        naming another model is dropped, so the next lookup asks again."""
        with self._info_lock:
            info = self._animator_info
            if fingerprint and info is not None and info.model_fingerprint != fingerprint:
                self._animator_info = None

    def health(self, timeout_s: float = 2.0) -> dict[str, str]:
        """Health status of each service: SERVING, NOT_SERVING, UNKNOWN or UNREACHABLE."""
        names = {
            "face_detect": FACE_DETECT_SERVICE,
            "animator": ANIMATOR_SERVICE,
            "encoder": ENCODER_SERVICE,
        }
        return {
            key: check_health(channel, names[key], timeout_s=timeout_s)
            for key, channel in self._channels.items()
        }

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()

    def __enter__(self) -> ServiceClients:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# The one RESOURCE_EXHAUSTED that means "the fleet is full, wait": the animator's job slots or
# frame queue are full. Every other RESOURCE_EXHAUSTED describes the job (too many frames, audio
# or photo too large, a message over gRPC's size limit) and running it again cannot help.
CAPACITY_REASONS = frozenset({"animator_busy"})
# The animator refused motion made by another model (FAILED_PRECONDITION): the job can run from
# the driving video instead, or again once the gateway has asked the animator for its model.
MODEL_MISMATCH = "model_mismatch"
# gRPC's own size check ("Sent message larger than max (N vs. M)" / "Received message ...")
# carries no dynamics-reason; its details are how it is recognised.
_MESSAGE_SIZE_DETAIL = "message larger than max"


def _reason(exc: grpc.RpcError) -> str | None:
    try:
        metadata = exc.trailing_metadata() or ()
    except Exception:  # noqa: BLE001 - some RpcError kinds carry no metadata at all
        return None
    for key, value in metadata:
        if key == REASON_METADATA_KEY:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def job_failed_from_rpc(exc: grpc.RpcError, service: str) -> JobFailed:
    """Translate a failed call of `service` into the job's failure (code, message, retryable)."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
    reason = _reason(exc)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return JobFailed(reason or "invalid_input", details, retryable=False)
    if code == grpc.StatusCode.UNAVAILABLE:
        return JobFailed(
            "service_unavailable",
            f"the {service} service is unavailable: {details}",
            retryable=True,
        )
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        if reason in CAPACITY_REASONS:
            return JobFailed(
                reason, f"the {service} service is at capacity: {details}", retryable=True
            )
        if reason is None and _MESSAGE_SIZE_DETAIL in details.lower():
            return JobFailed(
                "message_too_large",
                f"a message to or from the {service} service "
                f"is over the gRPC size limit: {details}",
                retryable=False,
            )
        return JobFailed(
            reason or "resource_exhausted",
            f"the {service} service refused the job: {details}",
            retryable=False,
        )
    if code == grpc.StatusCode.FAILED_PRECONDITION and reason == MODEL_MISMATCH:
        return JobFailed(
            MODEL_MISMATCH,
            f"the {service} service runs another model than the cached motion's: {details}",
            retryable=True,
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return JobFailed("timeout", f"the {service} service did not finish in time", retryable=True)
    if code == grpc.StatusCode.CANCELLED:
        return JobFailed("cancelled", f"the {service} call was cancelled", retryable=False)
    return JobFailed(
        reason or "internal", f"the {service} service failed: {details}", retryable=False
    )
