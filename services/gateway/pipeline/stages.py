"""The four service stages of a job as functions over streams (the orchestrator wires them
either concurrently through pipes or one after another through spools).

Each stage takes the job's `StageContext`: the job's spec, the orchestrator's settings
(deadlines, limits), clients, the run guard (cancel/abort), progress, and the prepared inputs. Every call's `cancel` is registered with the guard, and any
error raised inside a request iterator is handed to the guard before gRPC turns it into a
bare CANCELLED, so the job reports the real cause.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from dynamics.v1 import animator_pb2, common_pb2, encoder_pb2, face_detect_pb2

from services.common.media import array_to_raw
from services.gateway.domain import JobFailed, JobSpec
from services.gateway.pipeline.clients import ServiceClients, job_failed_from_rpc
from services.gateway.pipeline.media import FrameDecoder, MediaError, VideoInfo, extract_audio
from services.gateway.pipeline.options import animation_proto
from services.gateway.pipeline.progress import ProgressTracker
from services.gateway.pipeline.streams import Aborted, RunGuard

if TYPE_CHECKING:
    from services.gateway.pipeline.orchestrator import OrchestratorConfig

logger = logging.getLogger(__name__)

# Written into the MP4 when the animator ran on seeded random weights: the video is noise.
RANDOM_WEIGHTS_COMMENT = (
    "Dynamics: rendered with seeded RANDOM LivePortrait weights; "
    "this video is noise, not an animation"
)


@dataclass
class PreparedInputs:
    """Everything fetch/trim produced, and the cache lookup's outcome."""

    image: bytes
    trimmed: Path
    info: VideoInfo
    video_sha256: str  # of the trimmed video
    cache_settings: dict[str, object]  # crop/motion settings of the motion-cache key
    template: common_pb2.MotionTemplate | None  # a cache hit (made by template.model_version)


@dataclass
class StageContext:
    """One job's shared state across its stage threads: what was asked (`spec`), how the
    orchestrator runs jobs (`config`), and what the stages found so far."""

    spec: JobSpec
    config: OrchestratorConfig
    clients: ServiceClients
    guard: RunGuard
    progress: ProgressTracker
    inputs: PreparedInputs
    work_dir: Path
    random_weights: bool = False
    device_seconds: float = 0.0  # the animator's device time for this job (cumulative)
    model_fingerprint: str = ""  # the model that made this job's frames (Animate replies)
    encode_summary: encoder_pb2.EncodeSummary | None = None
    spans: dict[str, list[float]] = field(default_factory=dict)

    def span(self, stage: str, start: float, end: float | None = None) -> None:
        """Widen `stage`'s wall-clock interval to cover [start, end]."""
        end = time.monotonic() if end is None else end
        lo, hi = self.spans.get(stage, (start, end))
        self.spans[stage] = [min(lo, start), max(hi, end)]
        self.progress.timing(stage, self.spans[stage][1] - self.spans[stage][0])

    def stream_deadline(self) -> float:
        per_frame = self.config.per_frame_timeout_s * max(1, self.progress.frames_total)
        return self.config.stream_timeout_s + per_frame

    def feed(self, requests: Iterable) -> Iterator:
        """Wrap a request iterator so its errors reach the guard (not only gRPC's log)."""
        try:
            yield from requests
        except GeneratorExit:
            raise  # gRPC closed the stream (the call ended): not an error of ours
        except Aborted:
            return
        except BaseException as exc:  # noqa: BLE001 - handed to the job
            self.guard.fail(exc)
            return


@contextmanager
def rpc_errors(service: str) -> Iterator[None]:
    """Turn a failed call of `service` into the job's `JobFailed`."""
    try:
        yield
    except grpc.RpcError as exc:
        raise job_failed_from_rpc(exc, service) from exc


def rational(info: VideoInfo) -> common_pb2.Rational:
    return common_pb2.Rational(num=info.fps.numerator, den=info.fps.denominator)


def detect_source(ctx: StageContext) -> face_detect_pb2.DetectSourceResponse:
    """Find the source face: canvas size, 256 crop, crop->canvas transform, ratios."""
    start = time.monotonic()
    future = ctx.clients.face_detect.detect_source(
        ctx.inputs.image,
        source_max_dim=ctx.spec.source_max_dim,
        timeout_s=ctx.config.unary_timeout_s,
    )
    ctx.guard.on_abort(future.cancel)
    with rpc_errors("face detection"):
        response = ctx.guard.wait(future)
    ctx.span("detect", start)
    return response


def track_driving(
    ctx: StageContext, sinks: list[Callable[[animator_pb2.DrivingCrop], None]]
) -> int:
    """Decode the trimmed video and track its face; each crop goes to every sink. Returns the
    number of frames."""
    start = time.monotonic()
    decoder = FrameDecoder(ctx.inputs.trimmed, ctx.inputs.info, ctx.config.driving_max_side)
    ctx.guard.on_abort(decoder.close)

    def requests() -> Iterator[face_detect_pb2.TrackDrivingRequest]:
        yield face_detect_pb2.TrackDrivingRequest(
            config=face_detect_pb2.TrackDrivingConfig(
                width=decoder.width,
                height=decoder.height,
                crop_driving_video=ctx.config.crop_driving_video,
            )
        )
        for index, frame in enumerate(decoder):
            ctx.guard.check()
            yield face_detect_pb2.TrackDrivingRequest(
                frame=face_detect_pb2.DrivingFrame(index=index, image=array_to_raw(frame))
            )

    count = 0
    try:
        call = ctx.clients.face_detect.track_driving(
            ctx.feed(requests()), timeout_s=ctx.stream_deadline()
        )
        ctx.guard.on_abort(call.cancel)
        with rpc_errors("face detection"):
            for reply in call:
                crop = animator_pb2.DrivingCrop(
                    index=reply.index, image=reply.crop, ratios=reply.ratios
                )
                for sink in sinks:
                    sink(crop)
                count += 1
    finally:
        decoder.close()
    ctx.guard.check()
    if count == 0:
        raise MediaError("no frame of the hero video could be tracked", reason="no_frames")
    ctx.progress.set_total(count)
    ctx.span("detect", start)
    return count


def extract_motion(
    ctx: StageContext, crops: Iterable[animator_pb2.DrivingCrop]
) -> common_pb2.MotionTemplate:
    """Driving crops -> the video's motion template."""
    start = time.monotonic()

    def requests() -> Iterator[animator_pb2.ExtractMotionRequest]:
        yield animator_pb2.ExtractMotionRequest(
            config=animator_pb2.ExtractMotionConfig(fps=rational(ctx.inputs.info))
        )
        for crop in crops:
            yield animator_pb2.ExtractMotionRequest(crop=crop)

    future = ctx.clients.animator.extract_motion(
        ctx.feed(requests()), timeout_s=ctx.stream_deadline()
    )
    ctx.guard.on_abort(future.cancel)
    with rpc_errors("animator"):
        template = ctx.guard.wait(future).template
    ctx.span("motion", start)
    if not template.frames:
        raise JobFailed("internal", "the animator returned an empty motion template")
    return template


def animate(
    ctx: StageContext,
    source: Future,
    drive: Iterable[animator_pb2.AnimateRequest],
    sink: Callable[[animator_pb2.AnimatedFrame], None],
    motions: list[common_pb2.FrameMotion] | None = None,
    motion_fingerprint: str = "",
) -> int:
    """Set up the source, stream driving motion or crops in and generated frames to `sink`;
    with `motions`, also collect the motion the animator extracted from each crop.

    `motion_fingerprint` names the model that made the FrameMotion messages in `drive`; an
    animator running another model refuses the call before any frame (JobFailed
    `model_mismatch`). The model that made the frames goes to `ctx.model_fingerprint`.
    """
    src: face_detect_pb2.DetectSourceResponse = ctx.guard.wait(source)
    start = time.monotonic()
    setup = animator_pb2.AnimateSetup(
        source_crop=src.crop,
        source_ratios=src.ratios,
        options=animation_proto(ctx.spec.options),
        job_id=ctx.spec.job_id,
        motion_fingerprint=motion_fingerprint,
    )

    def requests() -> Iterator[animator_pb2.AnimateRequest]:
        yield animator_pb2.AnimateRequest(setup=setup)
        yield from drive

    call = ctx.clients.animator.animate(ctx.feed(requests()), timeout_s=ctx.stream_deadline())
    ctx.guard.on_abort(call.cancel)
    ctx.progress.enter("animate")
    expected = 0
    with rpc_errors("animator"):
        for reply in call:
            ctx.random_weights = ctx.random_weights or reply.random_weights
            ctx.device_seconds = max(ctx.device_seconds, reply.device_seconds)
            if ctx.model_fingerprint != reply.model_fingerprint:
                if ctx.model_fingerprint:  # one call is served by one animator
                    raise JobFailed("internal", "the animator's replies name two models")
                ctx.model_fingerprint = reply.model_fingerprint
            if not reply.HasField("frame"):
                continue
            if reply.frame.index != expected:
                raise JobFailed(
                    "internal", f"the animator sent frame {reply.frame.index}, expected {expected}"
                )
            expected += 1
            if motions is not None and reply.HasField("motion"):
                motions.append(reply.motion)
            sink(reply.frame)
            ctx.progress.frame_done(expected)
    ctx.guard.check()
    if expected != ctx.progress.frames_total:
        raise JobFailed(
            "internal",
            f"the animator made {expected} frames for {ctx.progress.frames_total} driving frames",
        )
    ctx.span("animate", start)
    return expected


def _encode_header(
    ctx: StageContext,
    src: face_detect_pb2.DetectSourceResponse,
    first: animator_pb2.AnimatedFrame,
    audio: Path | None,
) -> encoder_pb2.EncodeHeader:
    header = encoder_pb2.EncodeHeader(
        fps=rational(ctx.inputs.info),
        crf=ctx.config.encoder_crf,
        preset=ctx.config.encoder_preset,
        audio_bytes=audio.stat().st_size if audio else 0,
        frame_width=first.image.width,
        frame_height=first.image.height,
        expected_frames=ctx.progress.frames_total,
    )  # lets the encoder make the audio early
    if ctx.random_weights:
        header.comment = RANDOM_WEIGHTS_COMMENT
    if ctx.spec.options.paste_back:
        # The canvas is not sent: the photo file follows in chunks and the encoder rebuilds the
        # canvas from it with face_detect's max-dim, then checks its size against face_detect's.
        header.photo_bytes = len(ctx.inputs.image)
        header.source_max_dim = src.source_max_dim or ctx.spec.source_max_dim
        header.canvas_width, header.canvas_height = src.canvas_width, src.canvas_height
        header.crop_to_canvas.CopyFrom(src.crop_to_canvas)
    return header


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(view), size):
        yield bytes(view[start : start + size])


def hero_audio(ctx: StageContext) -> Path | None:
    """The trimmed hero video's first audio stream (a stream copy) for the encoder, or None."""
    if not ctx.inputs.info.has_audio:
        return None
    return extract_audio(ctx.inputs.trimmed, ctx.work_dir / "audio.mka")


def encode(
    ctx: StageContext,
    source: Future,
    frames: Iterable[animator_pb2.AnimatedFrame],
    out: Path,
    audio: Future | None = None,
) -> encoder_pb2.EncodeSummary:
    """Frames (as they come) + the hero video's audio -> MP4 at `out`. `audio` is a Future of
    `hero_audio` started earlier; without it the audio is extracted here, after frame 0."""
    frame_iter = iter(frames)
    first = next(frame_iter, None)
    ctx.guard.check()
    if first is None:
        raise JobFailed("internal", "no frame was generated")
    start = time.monotonic()
    audio = ctx.guard.wait(audio) if audio is not None else hero_audio(ctx)
    header = _encode_header(ctx, ctx.guard.wait(source), first, audio)
    sent = [0]

    def requests() -> Iterator[encoder_pb2.EncodeRequest]:
        yield encoder_pb2.EncodeRequest(header=header)
        if header.photo_bytes:
            for chunk in _chunks(ctx.inputs.image, ctx.config.audio_chunk_bytes):
                yield encoder_pb2.EncodeRequest(photo_chunk=chunk)
        if audio is not None:
            with open(audio, "rb") as handle:
                while chunk := handle.read(ctx.config.audio_chunk_bytes):
                    yield encoder_pb2.EncodeRequest(audio_chunk=chunk)
        for frame in _chain(first, frame_iter):
            sent[0] += 1
            yield encoder_pb2.EncodeRequest(
                frame=encoder_pb2.AnimatedFrameData(index=frame.index, image=frame.image)
            )

    call = ctx.clients.encoder.encode(ctx.feed(requests()), timeout_s=ctx.stream_deadline())
    ctx.guard.on_abort(call.cancel)
    summary = None
    with open(out, "wb") as handle, rpc_errors("encoder"):
        for reply in call:
            if reply.HasField("mp4_chunk"):
                handle.write(reply.mp4_chunk)
            elif reply.HasField("summary"):
                summary = reply.summary
    ctx.guard.check()
    if summary is None or summary.frames == 0:
        raise JobFailed("internal", "the encoder finished without a video")
    if summary.frames != sent[0]:
        raise JobFailed("internal", f"the encoder wrote {summary.frames} of {sent[0]} frames")
    ctx.span("encode", start)
    ctx.encode_summary = summary
    return summary


def _chain(first, rest: Iterator) -> Iterator:
    yield first
    yield from rest
