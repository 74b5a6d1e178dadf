"""Cross-job dynamic batching: frames of concurrent Animate calls share one W + G forward pass.

One `CrossJobBatcher` owns the device for generation. Each call opens a `JobSlot` (its source
state f_s / x_s stays on the device) and submits batches of driving motion; a device thread
collects pending requests of all jobs into one batch of at most `max_batch` frames, waiting at
most `max_wait_s` for more when some open job has nothing queued yet (as Triton's dynamic
batcher does), runs each job's keypoint recipe, then W + G once over the concatenated frames,
and routes every job's slice of the result back to its future, in order. Past `max_jobs` open
jobs or `max_queued_frames` waiting frames a call gets `ResourceExhaustedError`, so the gateway
can queue the job and retry.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from services.animator import metrics
from services.animator.motion_types import DrivingFrame
from services.animator.pipeline import AnimatorOutput, AnimatorPipeline, SourceState
from services.common.errors import ResourceExhaustedError, UnavailableError

logger = logging.getLogger(__name__)


@dataclass
class JobSlot:
    """One open Animate call: its source state and the device time spent on it."""

    job_id: str
    state: SourceState | None = None  # set once F and M have run on the source
    device_seconds: float = 0.0
    frames: int = 0


@dataclass
class _Request:
    slot: JobSlot
    motions: Sequence[DrivingFrame]
    start: int
    future: Future = field(default_factory=Future)


class CrossJobBatcher:
    """Form W + G batches across jobs on one device thread (start with `start()`)."""

    def __init__(
        self,
        pipeline: AnimatorPipeline,
        *,
        max_batch: int | None = None,
        max_wait_s: float = 0.01,
        max_jobs: int = 8,
        max_queued_frames: int | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.max_batch = max_batch or pipeline.batch_size
        self.max_wait_s = max_wait_s
        self.max_jobs = max_jobs
        self.max_queued_frames = max_queued_frames or max_jobs * self.max_batch
        self._pending: deque[_Request] = deque()
        self._slots: set[int] = set()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="animator-batcher", daemon=True)

    def start(self) -> CrossJobBatcher:
        metrics.add_queue_source(self.queued_frames)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Fail what is queued and end the device thread."""
        with self._cond:
            self._stopped = True
            while self._pending:
                self._pending.popleft().future.set_exception(
                    UnavailableError("the animator is shutting down", reason="stopping")
                )
            self._cond.notify_all()
        metrics.remove_queue_source(self.queued_frames)
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    # -- the calls' side ---------------------------------------------------------------------

    def open_job(self, job_id: str) -> JobSlot:
        """Admit a job, or raise ResourceExhaustedError when `max_jobs` are open."""
        slot = JobSlot(job_id)
        with self._cond:
            if len(self._slots) >= self.max_jobs:
                raise ResourceExhaustedError(
                    f"the animator is running {self.max_jobs} jobs; retry later",
                    reason="animator_busy",
                )
            self._slots.add(id(slot))
        return slot

    def close_job(self, slot: JobSlot) -> None:
        with self._cond:
            self._slots.discard(id(slot))
            self._cond.notify_all()
        metrics.JOB_DEVICE_SECONDS.observe(slot.device_seconds)

    def submit(self, slot: JobSlot, motions: Sequence[DrivingFrame], start: int) -> Future:
        """Queue one job's frames (in job order); the future yields its AnimatorOutput."""
        if slot.state is None:
            raise ValueError("the job's source state is not set")
        request = _Request(slot, list(motions), start)
        with self._cond:
            if self._stopped:
                raise UnavailableError("the animator is shutting down", reason="stopping")
            if self.queued_frames() + len(request.motions) > self.max_queued_frames:
                raise ResourceExhaustedError(
                    f"more than {self.max_queued_frames} frames are waiting for the device",
                    reason="animator_busy",
                )
            self._pending.append(request)
            self._cond.notify_all()
        return request.future

    def open_jobs(self) -> int:
        with self._cond:
            return len(self._slots)

    def queued_frames(self) -> int:
        return sum(len(r.motions) for r in self._pending)

    # -- the device thread -------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._run(batch)

    def _waiting_for_more(self) -> bool:
        """True while a batch could still grow: frames below max_batch and an open job idle."""
        queued = self.queued_frames()
        busy = {id(r.slot) for r in self._pending}
        return queued < self.max_batch and len(busy) < len(self._slots)

    def _next_batch(self) -> list[_Request] | None:
        with self._cond:
            while not self._pending and not self._stopped:
                self._cond.wait()
            if self._stopped:
                return None
            deadline = time.monotonic() + self.max_wait_s
            while self._waiting_for_more() and not self._stopped:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch, frames = [], 0
            while self._pending:
                size = len(self._pending[0].motions)
                if batch and frames + size > self.max_batch:
                    break
                batch.append(self._pending.popleft())
                frames += size
            return batch

    def _run(self, batch: list[_Request]) -> None:
        held = self.pipeline.held_seconds()
        try:
            outputs = self._forward(batch)
        except BaseException as exc:  # noqa: BLE001 - every waiting call gets the error
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(exc)
            return
        seconds = self.pipeline.held_seconds() - held  # device time, not the wait for it
        frames = sum(len(r.motions) for r in batch)
        metrics.record_batch(frames, seconds, self.pipeline.device.type == "cuda")
        for request, out in zip(batch, outputs, strict=True):
            share = seconds * len(request.motions) / frames
            request.slot.device_seconds += share
            request.slot.frames += len(request.motions)
            out.seconds = share
            request.future.set_result(out)

    @torch.no_grad()
    def _forward(self, batch: list[_Request]) -> list[AnimatorOutput]:
        pipe = self.pipeline
        with pipe.on_device():
            x_d = [pipe.job_keypoints(r.slot.state, r.motions, r.start) for r in batch]  # b×K×3
            if len(batch) == 1:  # one job: f_s of batch 1 is broadcast inside W
                state = batch[0].slot.state
                return [
                    pipe.warp_decode(
                        state.f_s, state.motion.x_s.expand_as(x_d[0]), x_d[0], batch[0].start
                    )
                ]
            f_s = torch.cat(
                [
                    r.slot.state.f_s.expand(len(r.motions), *r.slot.state.f_s.shape[1:])
                    for r in batch
                ]
            )  # B×C×D×H×W
            x_s = torch.cat([r.slot.state.motion.x_s.expand_as(x) for r, x in zip(batch, x_d)])
            whole = pipe.warp_decode(f_s, x_s, torch.cat(x_d), 0)  # B frames
        return _split(whole, batch)


def _split(whole: AnimatorOutput, batch: list[_Request]) -> list[AnimatorOutput]:
    """Cut a cross-job output into one AnimatorOutput per request (indices per job)."""
    outs, lo = [], 0
    for request in batch:
        hi = lo + len(request.motions)
        occlusion = whole.occlusion_map
        outs.append(
            AnimatorOutput(
                indices=list(range(request.start, request.start + hi - lo)),
                images=whole.images[lo:hi],
                x_d=whole.x_d[lo:hi],
                image=whole.image[lo:hi],
                occlusion_map=None if occlusion is None else occlusion[lo:hi],
                deformation=None if whole.deformation is None else whole.deformation[lo:hi],
                random_weights=whole.random_weights,
            )
        )
        lo = hi
    return outs
