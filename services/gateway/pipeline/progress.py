"""Progress of one job: stage, frames done/total, ETA from the measured frame throughput."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from services.gateway.domain import ProgressUpdate

logger = logging.getLogger(__name__)


class ProgressTracker:
    """Collects progress from a job's threads and reports it, throttled, to `on_progress`.

    The ETA is the frames still to make divided by the throughput measured since generation
    started (the `animate` stage; frames arrive in batches, so the time since the first frame
    would overstate the rate); None until a frame exists.
    """

    def __init__(
        self,
        on_progress: Callable[[ProgressUpdate], None],
        *,
        every_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_progress = on_progress
        self._every_s = every_s
        self._clock = clock
        self._lock = threading.Lock()
        self.stage = "fetch_trim"
        self.frames_total = 0
        self.frames_done = 0
        self.timings: dict[str, float] = {}
        self._generation_started: float | None = None
        self._last_emit = float("-inf")

    def enter(self, stage: str) -> None:
        """The job moved to `stage` (reported at once)."""
        with self._lock:
            self.stage = stage
            if stage == "animate" and self._generation_started is None:
                self._generation_started = self._clock()
        self.emit(force=True)

    def set_total(self, frames: int) -> None:
        with self._lock:
            self.frames_total = max(frames, self.frames_done)

    def timing(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.timings[stage] = round(seconds, 4)

    def frame_done(self, frames_done: int) -> None:
        """`frames_done` frames exist now."""
        with self._lock:
            if self._generation_started is None:
                self._generation_started = self._clock()
            self.frames_done = frames_done
            self.frames_total = max(self.frames_total, frames_done)
            last = frames_done == self.frames_total
        self.emit(force=last)

    def eta_seconds(self) -> float | None:
        with self._lock:
            if self.frames_total and self.frames_done >= self.frames_total:
                return 0.0
            if self._generation_started is None or self.frames_done < 1:
                return None
            elapsed = self._clock() - self._generation_started
            if elapsed <= 0:
                return None
            rate = self.frames_done / elapsed  # frames per second since generation started
            return round(max(0, self.frames_total - self.frames_done) / rate, 2)

    def snapshot(self) -> ProgressUpdate:
        eta = self.eta_seconds()
        with self._lock:
            return ProgressUpdate(
                stage=self.stage,
                frames_done=self.frames_done,
                frames_total=self.frames_total,
                eta_seconds=eta,
                timings=dict(self.timings),
            )

    def emit(self, force: bool = False) -> None:
        """Report the current state (at most every `every_s` unless forced)."""
        now = self._clock()
        with self._lock:
            if not force and now - self._last_emit < self._every_s:
                return
            self._last_emit = now
        try:
            self._on_progress(self.snapshot())
        except Exception:
            logger.warning("progress listener failed", exc_info=True)
