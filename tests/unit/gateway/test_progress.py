"""Progress tracking: stages, throttling, ETA from generation throughput."""

from __future__ import annotations

from services.gateway.domain import ProgressUpdate
from services.gateway.pipeline.progress import ProgressTracker


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_eta_from_generation_throughput_and_throttling() -> None:
    clock, seen = _Clock(), []
    tracker = ProgressTracker(seen.append, every_s=1.0, clock=clock)
    tracker.set_total(10)
    tracker.enter("animate")  # generation starts at t=100
    assert seen[-1].stage == "animate" and seen[-1].eta_seconds is None
    clock.now = 104.0
    tracker.frame_done(2)  # 2 frames in 4 s -> 0.5 frame/s -> 8 left = 16 s
    assert tracker.eta_seconds() == 16.0
    assert seen[-1].frames_done == 2  # 4 s since the last report: not throttled
    clock.now = 104.5
    tracker.frame_done(3)
    assert seen[-1].frames_done == 2  # throttled (0.5 s < 1 s)
    clock.now = 110.0
    tracker.frame_done(10)  # the last frame is always reported
    assert seen[-1] == ProgressUpdate("animate", 10, 10, 0.0, {})


def test_timings_snapshot_and_failing_listener() -> None:
    def broken(update: ProgressUpdate) -> None:
        raise RuntimeError("listener down")

    tracker = ProgressTracker(broken)
    tracker.timing("detect", 1.23456)
    tracker.enter("encode")  # must not raise
    snap = tracker.snapshot()
    assert snap.timings == {"detect": 1.2346} and snap.stage == "encode"
    tracker.frame_done(5)
    assert tracker.frames_total == 5
