"""Runs one job across face_detect, animator and encoder (DESIGN.md, "The flow of one job").

1. fetch/trim: fetch URLs (SSRF-safe), trim the hero video with FFmpeg, hash it, look up its
   motion template in the cache under the model fingerprint of the animator behind the channel
   (`ServiceClients.animator_fingerprint`, from its GetInfo).
2. concurrently: (a) source photo -> DetectSource; (b) on a cache miss, driving frames decoded
   by FFmpeg -> TrackDriving -> crops, streamed straight into Animate (which extracts each
   frame's motion on the fly), so generation starts after frame 0's motion (SPEC 11) instead
   of after the whole video. Animate returns each crop's motion with its frame; in order they
   are the video's motion template, stored in the cache when generation ends (no second M
   pass, no second upload of the crops). On a hit, the template's FrameMotion messages feed
   Animate and (b) is skipped.
3. Animate streams frames into Encode while it generates; the MP4 streams into `work_dir`.

A template is stored under the fingerprint of the model that made it (named by every Animate
reply, or by ExtractMotion's template), and a hit's motion is sent with its fingerprint: an
animator running another model (replicas mid-rollout) refuses it before any frame, and the job
then runs from the driving video as on a miss. So motion made by one model never drives
another.

`OrchestratorConfig.sequential` runs the same stages one after another through disk spools (a
benchmark baseline; `dynamics render --sequential` and the bench set it, the gateway never
does). Cancellation or any failure cancels every call and subprocess.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from dynamics.v1 import animator_pb2, common_pb2

from services.common.errors import DynamicsError
from services.gateway.domain import JobFailed, JobResult, JobSpec, MediaInput, ProgressUpdate
from services.gateway.net.fetch import MediaFetcher
from services.gateway.pipeline import stages
from services.gateway.pipeline.clients import (
    CAPACITY_REASONS,
    MODEL_MISMATCH,
    ServiceClients,
    job_failed_from_rpc,
)
from services.gateway.pipeline.media import MediaLimits, read_image_file, sha256_file, trim_video
from services.gateway.pipeline.motion_cache import MotionCache, NullMotionCache, motion_cache_key
from services.gateway.pipeline.progress import ProgressTracker
from services.gateway.pipeline.streams import Aborted, Pipe, RunGuard, Spool

__all__ = ["Orchestrator", "OrchestratorConfig"]

logger = logging.getLogger(__name__)
MIB = 1024 * 1024


@dataclass(frozen=True)
class OrchestratorConfig:
    """How this orchestrator runs every job: deadlines, limits, and the local run settings the
    CLI and the bench choose (the gateway leaves those at their defaults). Streaming deadlines
    grow with the frame count."""

    driving_max_side: int = 1280  # driving frames are shrunk to fit before tracking
    unary_timeout_s: float = 60.0
    stream_timeout_s: float = 120.0
    per_frame_timeout_s: float = 15.0
    pipe_frames: int = 8
    max_image_bytes: int = 20 * MIB
    media_limits: MediaLimits = field(default_factory=MediaLimits)
    audio_chunk_bytes: int = MIB  # chunk size of the photo and audio files sent to the encoder
    sequential: bool = False  # stages one after another through spools (benchmark baseline)
    crop_driving_video: bool = False  # track the face in a square driving video too
    encoder_crf: int = 0  # 0: the encoder's ENCODER_CRF
    encoder_preset: str = ""  # "": the encoder's ENCODER_PRESET


class Orchestrator:
    """Drives the three services for one job at a time per calling thread (thread-safe)."""

    def __init__(
        self,
        clients: ServiceClients,
        cache: MotionCache,
        fetcher: MediaFetcher,
        config: OrchestratorConfig = OrchestratorConfig(),
    ) -> None:
        self.clients, self.cache, self.fetcher, self.config = clients, cache, fetcher, config

    def run(
        self,
        spec: JobSpec,
        work_dir: Path,
        *,
        on_progress: Callable[[ProgressUpdate], None],
        cancel: threading.Event,
    ) -> JobResult:
        """Run `spec`; returns the MP4 in `work_dir` or raises `JobFailed`."""
        started = time.monotonic()
        work_dir.mkdir(parents=True, exist_ok=True)
        progress = ProgressTracker(on_progress, every_s=0.0)  # listeners throttle themselves
        guard = RunGuard(cancel)
        ctx = None
        try:
            progress.enter("fetch_trim")
            inputs = self._prepare(spec, work_dir, guard)
            progress.timing("fetch_trim", time.monotonic() - started)
            ctx = self._context(spec, work_dir, guard, progress, inputs)
            out = work_dir / "result.mp4"
            (self._sequential if self.config.sequential else self._pipelined)(ctx, out)
        except BaseException as exc:  # noqa: BLE001 - translated below
            guard.fail(exc)
        finally:
            guard.join()
            guard.close()
        if guard.error is not None:
            for leftover in ("result.mp4", "crops.spool", "frames.spool", "audio.mka"):
                (work_dir / leftover).unlink(missing_ok=True)
            raise self._translate(guard.error, cancel) from guard.error
        assert ctx is not None and ctx.encode_summary is not None
        if inputs.template is not None:
            progress.timing("motion", 0.0)
        if ctx.device_seconds > 0:
            # The animator's own device time: what a GPU bills, and what cost per video uses.
            progress.timing("gpu_seconds", ctx.device_seconds)
        animator = self._animator_summary(ctx.model_fingerprint)
        progress.timing("total", time.monotonic() - started)
        progress.enter("done")
        return JobResult(
            mp4_path=out,
            timings=dict(progress.timings),
            cache_hit=inputs.template is not None,
            frames=ctx.encode_summary.frames,
            random_weights=ctx.random_weights,
            animator=animator,
        )

    def _animator_summary(self, model: str) -> dict[str, str]:
        """What animated the job: `model`, the fingerprint its Animate replies named, and the
        backend, device and dtype from the channel's kept GetInfo answer (asked once per channel,
        so this costs no call per job). Those three are given only when that answer names the
        same model: behind a balanced channel mid-rollout it may describe another replica. A
        failed GetInfo leaves them out; the job itself has succeeded."""
        summary = {"model": model} if model else {}
        try:
            info = self.clients.animator_info(self.config.unary_timeout_s)
        except grpc.RpcError as exc:
            logger.warning(
                "animator GetInfo failed (%s): the job's result names no backend",
                exc.code() if hasattr(exc, "code") else exc,
            )
            return summary
        if model and info.model_fingerprint != model:
            return summary
        summary["model"] = info.model_fingerprint
        for key in ("backend", "device", "dtype"):
            if value := getattr(info, key):
                summary[key] = value
        return summary

    # -- 1. fetch / trim / hash / cache lookup ---------------------------------------------

    def _materialize(self, media: MediaInput, dest: Path, guard: RunGuard) -> Path:
        if media.path is not None:
            return Path(media.path)
        guard.check()
        return self.fetcher.fetch(str(media.url), dest, guard.cancel).path

    def _prepare(self, spec: JobSpec, work_dir: Path, guard: RunGuard) -> stages.PreparedInputs:
        if spec.seconds <= 0 or spec.source_max_dim <= 0:
            raise JobFailed("bad_option", "seconds and source_max_dim must be positive")
        source = self._materialize(spec.source, work_dir / "source.input", guard)
        driving = self._materialize(spec.driving, work_dir / "driving.input", guard)
        image = read_image_file(source, self.config.max_image_bytes)
        trimmed = work_dir / "driving.mkv"
        info = trim_video(driving, trimmed, spec.seconds, self.config.media_limits)
        guard.check()
        settings = {
            "rotation": info.rotation,
            "driving_max_side": self.config.driving_max_side,
            "crop_driving_video": self.config.crop_driving_video,
        }
        inputs = stages.PreparedInputs(image, trimmed, info, sha256_file(trimmed), settings, None)
        if not isinstance(self.cache, NullMotionCache):
            inputs.template = self._lookup(inputs)
        return inputs

    def _lookup(self, inputs: stages.PreparedInputs) -> common_pb2.MotionTemplate | None:
        """The cached template made by the model the animator reports, or None."""
        with stages.rpc_errors("animator"):
            fingerprint = self.clients.animator_fingerprint(self.config.unary_timeout_s)
        key = motion_cache_key(inputs.video_sha256, inputs.cache_settings, fingerprint)
        try:
            template = self.cache.get(key)
        except Exception:
            logger.warning("motion cache lookup failed", exc_info=True)
            return None
        if template is not None and template.model_version != fingerprint:
            logger.warning(
                "motion cache entry %s was made by model %r, not %r: ignored",
                key,
                template.model_version,
                fingerprint,
            )
            return None
        return template

    def _context(
        self,
        spec: JobSpec,
        work_dir: Path,
        guard: RunGuard,
        progress: ProgressTracker,
        inputs: stages.PreparedInputs,
    ) -> stages.StageContext:
        progress.set_total(len(inputs.template.frames) if inputs.template else inputs.info.frames)
        return stages.StageContext(
            spec=spec,
            config=self.config,
            clients=self.clients,
            guard=guard,
            progress=progress,
            inputs=inputs,
            work_dir=work_dir,
        )

    # -- 2-3. the service stages -------------------------------------------------------------

    def _store_template(
        self, ctx: stages.StageContext, template: common_pb2.MotionTemplate
    ) -> None:
        """Cache `template` under the fingerprint of the model that made it."""
        if not template.model_version:
            logger.warning("the animator named no model for the motion: the template is not cached")
            return
        key = motion_cache_key(
            ctx.inputs.video_sha256, ctx.inputs.cache_settings, template.model_version
        )
        try:
            self.cache.put(key, template)
        except Exception:
            logger.warning("could not store the motion template", exc_info=True)

    def _pipelined(self, ctx: stages.StageContext, out: Path) -> None:
        guard = ctx.guard
        ctx.progress.enter("detect")
        source: Future = Future()
        guard.spawn("source", lambda: source.set_result(stages.detect_source(ctx)))
        audio: Future = Future()  # ready before frame 0, so the encoder starts at once
        guard.spawn("audio", lambda: audio.set_result(stages.hero_audio(ctx)))
        template = ctx.inputs.template
        frames: Pipe = Pipe(guard, self.config.pipe_frames)

        def from_crops() -> int:
            # a miss with a cache keeps the motion Animate extracts from each crop
            motions = None if isinstance(self.cache, NullMotionCache) else []
            made = stages.animate(ctx, source, self._drive_from_crops(ctx), frames.put, motions)
            if motions is not None:
                self._store_motions(ctx, motions, made)
            return made

        def generate() -> None:
            if template is None:
                from_crops()
            else:
                drive = (animator_pb2.AnimateRequest(motion=m) for m in template.frames)
                try:
                    stages.animate(
                        ctx, source, drive, frames.put, motion_fingerprint=template.model_version
                    )
                except JobFailed as exc:
                    if exc.code != MODEL_MISMATCH:
                        raise
                    # Refused before any frame: the animator runs another model than the one
                    # that made the template. Run from the driving video, as on a miss.
                    logger.info(
                        "job %s: %s; running from the driving video", ctx.spec.job_id, exc.message
                    )
                    self.clients.forget_animator_info()
                    ctx.inputs.template = None
                    ctx.progress.set_total(ctx.inputs.info.frames)
                    from_crops()
            self.clients.saw_animator_model(ctx.model_fingerprint)
            frames.close()
            ctx.progress.enter("encode")

        guard.spawn("animate", generate)
        guard.spawn("encode", lambda: stages.encode(ctx, source, frames, out, audio))
        guard.join()

    def _drive_from_crops(self, ctx: stages.StageContext) -> Iterator[animator_pb2.AnimateRequest]:
        """Cache miss: track the driving video; its crops feed Animate as they come."""
        guard = ctx.guard
        to_animate: Pipe = Pipe(guard, self.config.pipe_frames)

        def track() -> None:
            stages.track_driving(ctx, [to_animate.put])
            to_animate.close()

        guard.spawn("track", track)
        return (animator_pb2.AnimateRequest(crop=crop) for crop in to_animate)

    def _store_motions(
        self, ctx: stages.StageContext, motions: list[common_pb2.FrameMotion], frames: int
    ) -> None:
        """Animate's per-crop motion, one per frame in order, as the cached template."""
        start = time.monotonic()
        if len(motions) != frames or any(m.index != i for i, m in enumerate(motions)):
            logger.warning(
                "the animator returned motion for %d of %d frames: the template is not cached",
                len(motions),
                frames,
            )
            return
        template = common_pb2.MotionTemplate(
            num_kp=len(motions[0].expression) // 3,
            fps=stages.rational(ctx.inputs.info),
            frames=motions,
            model_version=ctx.model_fingerprint,
        )
        self._store_template(ctx, template)
        ctx.span("motion", start)

    def _sequential(self, ctx: stages.StageContext, out: Path) -> None:
        ctx.progress.enter("detect")
        resolved: Future = Future()
        resolved.set_result(stages.detect_source(ctx))
        template = ctx.inputs.template
        if template is None:
            crops = Spool(ctx.work_dir / "crops.spool", animator_pb2.DrivingCrop)
            stages.track_driving(ctx, [crops.write])
            crops.finish()
            ctx.progress.enter("motion")
            template = stages.extract_motion(ctx, crops)
            self._store_template(ctx, template)
        generated = Spool(ctx.work_dir / "frames.spool", animator_pb2.AnimatedFrame)
        drive = (animator_pb2.AnimateRequest(motion=m) for m in template.frames)
        stages.animate(
            ctx, resolved, drive, generated.write, motion_fingerprint=template.model_version
        )
        self.clients.saw_animator_model(ctx.model_fingerprint)
        generated.finish()
        ctx.progress.enter("encode")
        stages.encode(ctx, resolved, generated, out)

    # -- errors ------------------------------------------------------------------------------

    @staticmethod
    def _translate(error: BaseException, cancel: threading.Event) -> JobFailed:
        if cancel.is_set():
            return JobFailed("cancelled", "The job was cancelled.", retryable=False)
        if isinstance(error, JobFailed):
            return error
        if isinstance(error, grpc.RpcError):
            return job_failed_from_rpc(error, "backend")
        if isinstance(error, DynamicsError):
            retryable = error.status == grpc.StatusCode.UNAVAILABLE or (
                error.status == grpc.StatusCode.RESOURCE_EXHAUSTED
                and error.reason in CAPACITY_REASONS
            )
            return JobFailed(error.reason, error.message, retryable=retryable)
        if isinstance(error, Aborted):
            return JobFailed("cancelled", "The job was stopped.", retryable=False)
        logger.error("job failed with an unexpected error", exc_info=error)
        return JobFailed("internal", "An internal error stopped this job.", retryable=False)
