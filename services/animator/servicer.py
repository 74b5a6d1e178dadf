"""AnimatorService: proto <-> domain translation around `AnimatorPipeline` (no model code)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from fractions import Fraction

import grpc
import numpy as np
from dynamics.v1 import animator_pb2, animator_pb2_grpc, common_pb2

from services.animator import metrics, templates
from services.animator.batcher import CrossJobBatcher, JobSlot
from services.animator.motion_types import DrivingFrame, MotionOptions
from services.animator.pipeline import AnimatorPipeline, Ratios
from services.animator.request_queue import BoundedReader
from services.common.errors import (
    FailedPreconditionError,
    InvalidInputError,
    ResourceExhaustedError,
    UnavailableError,
    handle_errors,
)
from services.common.media import array_to_raw, raw_to_array

logger = logging.getLogger(__name__)

SERVICE_NAME = animator_pb2.DESCRIPTOR.services_by_name["AnimatorService"].full_name
_DRIVING_OPTIONS = {0: True, 1: True, 2: False}  # enum -> expression_friendly
_REGIONS = {0: "all", 1: "all", 2: "exp", 3: "pose", 4: "lip", 5: "eyes"}


def options_from_proto(msg: common_pb2.AnimationOptions, total_frames: int) -> MotionOptions:
    """AnimationOptions -> MotionOptions; a job announced with exactly 1 frame is image-driven."""
    if msg.driving_option not in _DRIVING_OPTIONS or msg.region not in _REGIONS:
        raise InvalidInputError("unknown driving_option or region", reason="bad_options")
    multiplier = msg.driving_multiplier or 1.0
    if not np.isfinite(multiplier) or not 0.0 < multiplier <= 10.0:
        raise InvalidInputError("driving_multiplier must be in (0, 10]", reason="bad_options")
    return MotionOptions(
        relative=not msg.absolute_motion,
        expression_friendly=_DRIVING_OPTIONS[msg.driving_option],
        stitching=not msg.disable_stitching,
        normalize_lip=msg.normalize_lip,
        eye_retargeting=msg.eye_retargeting,
        lip_retargeting=msg.lip_retargeting,
        driving_multiplier=float(multiplier),
        region=_REGIONS[msg.region],
        driving_image=total_frames == 1,
    )


def ratios_from_proto(msg: common_pb2.FaceRatios) -> Ratios:
    values = (msg.eye_left, msg.eye_right, msg.lip)
    if not all(np.isfinite(v) and v >= 0 for v in values):
        raise InvalidInputError("face ratios must be finite and >= 0", reason="bad_ratios")
    return Ratios(*values)


def _crop_item(crop: animator_pb2.DrivingCrop) -> tuple[np.ndarray, Ratios]:
    return raw_to_array(crop.image), ratios_from_proto(crop.ratios)


def _driving_item(request: animator_pb2.AnimateRequest):
    which = request.WhichOneof("item")
    if which == "motion":
        return templates.frame_from_proto(request.motion)
    if which == "crop":
        return _crop_item(request.crop)
    raise InvalidInputError(
        f"expected FrameMotion or DrivingCrop after the setup, got {which}", reason="bad_request"
    )


def _dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def info_of(pipe: AnimatorPipeline) -> animator_pb2.AnimatorInfo:
    """What a loaded pipeline runs, as GetInfo reports it."""
    return animator_pb2.AnimatorInfo(
        model_fingerprint=pipe.fingerprint,
        config_name=pipe.config_name,
        provenance=pipe.provenance,
        backend=pipe.backend,
        device=str(pipe.device),
        dtype=_dtype_name(pipe.compute_dtype),
        input_size=pipe.input_size,
        num_kp=pipe.num_kp,
        batch_size=pipe.batch_size,
    )


class AnimatorServicer(animator_pb2_grpc.AnimatorServiceServicer):
    """ExtractMotion (crops -> template), Animate (setup + motion/crops -> frames) and GetInfo
    (the model fingerprint and how the model runs)."""

    def __init__(
        self,
        pipeline: AnimatorPipeline | None = None,
        *,
        max_frames: int = 3000,
        queue_frames: int = 16,
        max_jobs: int = 8,
        max_wait_ms: float = 10.0,
    ) -> None:
        self.max_frames = max_frames
        self.queue_frames = queue_frames
        self.max_jobs = max_jobs
        self.max_wait_ms = max_wait_ms
        self.pipeline: AnimatorPipeline | None = None
        self.batcher: CrossJobBatcher | None = None
        if pipeline is not None:
            self.attach(pipeline)

    def attach(self, pipeline: AnimatorPipeline) -> None:
        """Install the loaded pipeline and start its cross-job batcher (NOT_SERVING until then)."""
        self.batcher = CrossJobBatcher(
            pipeline, max_wait_s=self.max_wait_ms / 1000.0, max_jobs=self.max_jobs
        ).start()
        self.pipeline = pipeline
        metrics.record_backend(pipeline.backend, str(pipeline.device))
        logger.info("animator serving on backend %s, device %s", pipeline.backend, pipeline.device)

    def close(self) -> None:
        """Stop the batcher's device thread (queued work fails with UNAVAILABLE)."""
        if self.batcher is not None:
            self.batcher.stop()

    def _pipe(self) -> AnimatorPipeline:
        if self.pipeline is None:
            raise UnavailableError("the animator is still loading its weights", reason="loading")
        return self.pipeline

    def _on_gpu(self) -> bool:
        return self._pipe().device.type == "cuda"

    @handle_errors
    def GetInfo(self, request, context) -> animator_pb2.AnimatorInfo:
        return info_of(self._pipe())  # UNAVAILABLE (reason loading) until the weights are in

    @handle_errors
    def ExtractMotion(self, request_iterator, context):
        pipe = self._pipe()
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("item") != "config":
            raise InvalidInputError(
                "the first ExtractMotion message must be the config", reason="bad_request"
            )
        fps = first.config.fps
        if fps.num < 0 or fps.den < 0 or (fps.num > 0) != (fps.den > 0):
            raise InvalidInputError("fps must be a positive fraction", reason="bad_request")
        reader = BoundedReader(request_iterator, self._extract_item, self.queue_frames)
        frames: list[DrivingFrame] = []
        try:
            while context.is_active():
                batch, ended = reader.get_batch(pipe.batch_size)
                self._check_length(len(frames) + len(batch))
                if batch:
                    frames += self._motion_of_crops(batch, len(frames))
                if ended:
                    break
        finally:
            reader.stop()
        if not frames:
            raise InvalidInputError("no driving crops were sent", reason="no_frames")
        tpl = templates.MotionTemplate(
            frames=frames,
            fps=Fraction(fps.num, fps.den) if fps.num else Fraction(25),
            num_kp=pipe.num_kp,
            model_version=pipe.fingerprint,
        )
        return animator_pb2.ExtractMotionResponse(template=templates.template_to_proto(tpl))

    def _extract_item(self, request: animator_pb2.ExtractMotionRequest):
        if request.WhichOneof("item") != "crop":
            raise InvalidInputError(
                "only DrivingCrop messages may follow the config", reason="bad_request"
            )
        return _crop_item(request.crop)

    def _check_length(self, n: int) -> None:
        if n > self.max_frames:
            raise ResourceExhaustedError(
                f"more than {self.max_frames} frames in one call", reason="too_many_frames"
            )

    def _motion_of_crops(
        self, items: list[tuple[np.ndarray, Ratios]], start: int
    ) -> list[DrivingFrame]:
        pipe = self._pipe()
        held = pipe.held_seconds()
        frames = pipe.extract_motion([c for c, _ in items], [r for _, r in items], start)
        metrics.record_busy(pipe.held_seconds() - held, self._on_gpu())
        return frames

    @handle_errors
    def Animate(self, request_iterator, context) -> Iterator[animator_pb2.AnimateResponse]:
        self._pipe()
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("item") != "setup":
            raise InvalidInputError(
                "the first Animate message must be the setup", reason="bad_request"
            )
        setup = first.setup
        fingerprint = self._pipe().fingerprint
        if setup.motion_fingerprint and setup.motion_fingerprint != fingerprint:
            raise FailedPreconditionError(
                f"the motion was made by model {setup.motion_fingerprint}, this animator runs "
                f"{fingerprint}",
                reason="model_mismatch",
            )
        total = max(0, setup.total_frames)
        self._check_length(total)
        options = options_from_proto(setup.options, total)
        slot = self.batcher.open_job(setup.job_id)  # RESOURCE_EXHAUSTED past max_jobs
        try:
            yield from self._animate(slot, setup, options, request_iterator, context, total)
        finally:
            self.batcher.close_job(slot)

    def _animate(
        self, slot: JobSlot, setup, options: MotionOptions, request_iterator, context, total: int
    ) -> Iterator[animator_pb2.AnimateResponse]:
        pipe = self._pipe()
        held = pipe.held_seconds()
        slot.state = pipe.prepare_source(
            raw_to_array(setup.source_crop), ratios_from_proto(setup.source_ratios), options
        )
        seconds = pipe.held_seconds() - held
        slot.device_seconds += seconds
        metrics.record_busy(seconds, self._on_gpu())
        logger.info("animate job %s: %d frames announced", setup.job_id or "-", total)
        reader = BoundedReader(request_iterator, _driving_item, self.queue_frames)
        done = 0
        try:
            while context.is_active():
                batch, ended = reader.get_batch(pipe.batch_size)
                self._check_length(done + len(batch))
                if batch:
                    yield from self._animate_batch(slot, batch, done, total)
                    done += len(batch)
                if ended:
                    break
        finally:
            reader.stop()
        if done == 0 and context.is_active():
            raise InvalidInputError(
                "no driving motion or crops followed the setup", reason="no_frames"
            )

    def _animate_batch(
        self, slot: JobSlot, items: list, start: int, total: int
    ) -> Iterator[animator_pb2.AnimateResponse]:
        crops = [(i, item) for i, item in enumerate(items) if isinstance(item, tuple)]
        extracted_at: dict[int, common_pb2.FrameMotion] = {}  # frame index -> its crop's motion
        if crops:
            pipe = self._pipe()
            held = pipe.held_seconds()
            extracted = self._motion_of_crops([c for _, c in crops], start)
            slot.device_seconds += pipe.held_seconds() - held
            for (i, _), frame in zip(crops, extracted, strict=True):
                frame.index = start + i
                items[i] = frame
                extracted_at[start + i] = templates.frame_to_proto(frame)
        out = self.batcher.submit(slot, items, start).result()  # shares a batch across jobs
        for k, index in enumerate(out.indices):
            yield animator_pb2.AnimateResponse(
                frame=animator_pb2.AnimatedFrame(index=index, image=array_to_raw(out.images[k])),
                progress=common_pb2.Progress(done=index + 1, total=total),
                random_weights=out.random_weights,
                device_seconds=slot.device_seconds,
                motion=extracted_at.get(index),
                model_fingerprint=self._pipe().fingerprint,
            )


def add_to_server(servicer: AnimatorServicer, server: grpc.Server) -> None:
    """Register the servicer on a gRPC server."""
    animator_pb2_grpc.add_AnimatorServiceServicer_to_server(servicer, server)
