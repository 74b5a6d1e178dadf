"""Run guard, pipes and spools: first error wins, everything stops, nothing hangs."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from pathlib import Path

import pytest
from dynamics.v1 import animator_pb2, common_pb2

from services.gateway.pipeline.streams import Aborted, Pipe, RunGuard, Spool


def test_pipe_hands_items_over_in_order() -> None:
    guard = RunGuard(threading.Event())
    pipe: Pipe = Pipe(guard, maxsize=2)

    def produce() -> None:
        for i in range(10):
            pipe.put(i)
        pipe.close()

    guard.spawn("producer", produce)
    assert list(pipe) == list(range(10))
    guard.join()
    guard.close()
    assert guard.error is None


def test_first_error_wins_and_blocked_threads_give_up() -> None:
    guard = RunGuard(threading.Event())
    pipe: Pipe = Pipe(guard, maxsize=1)
    stopped = []
    guard.on_abort(lambda: stopped.append("call cancelled"))

    def stuck_producer() -> None:
        while True:
            pipe.put("x")  # nobody reads: blocks until the abort

    guard.spawn("producer", stuck_producer)
    guard.spawn("failing", lambda: (_ for _ in ()).throw(ValueError("first")))
    guard.join()
    guard.fail(RuntimeError("second"))
    assert isinstance(guard.error, ValueError) and stopped == ["call cancelled"]
    guard.on_abort(lambda: stopped.append("late"))  # registered after the abort: runs at once
    assert stopped[-1] == "late"
    with pytest.raises(Aborted):
        guard.wait(Future())
    guard.close()


def test_cancel_event_aborts_the_run() -> None:
    cancel = threading.Event()
    guard = RunGuard(cancel)
    threading.Timer(0.2, cancel.set).start()
    start = time.monotonic()
    with pytest.raises(Aborted):
        guard.wait(Future())
    assert time.monotonic() - start < 2.0
    guard.close()


def test_spool_round_trip(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "crops.spool", animator_pb2.DrivingCrop)
    crops = [
        animator_pb2.DrivingCrop(
            index=i,
            image=common_pb2.RawImage(width=2, height=1, channels=3, data=bytes(range(i, i + 6))),
        )
        for i in range(5)
    ]
    for crop in crops:
        spool.write(crop)
    spool.finish()
    assert list(spool) == crops and list(spool) == crops and spool.count == 5
