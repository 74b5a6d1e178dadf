"""Plumbing for one orchestrated job: bounded hand-over pipes, disk spools, and a guard that
turns the first failure (or a cancel) into stopping every thread, call and subprocess."""

from __future__ import annotations

import logging
import queue
import struct
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Generic, TypeVar

import grpc
from google.protobuf.message import Message

logger = logging.getLogger(__name__)

T = TypeVar("T")
M = TypeVar("M", bound=Message)
_END = object()
_POLL_S = 0.1


class Aborted(Exception):
    """Raised in a job's threads after the job failed elsewhere or was cancelled."""


class RunGuard:
    """Shared fate of a job's threads: the first error wins, then everything is stopped."""

    def __init__(self, cancel: threading.Event) -> None:
        self.cancel = cancel
        self.abort = threading.Event()
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._stoppers: list[Callable[[], object]] = []
        self._threads: list[threading.Thread] = []
        self._done = threading.Event()
        self._watcher = threading.Thread(target=self._watch_cancel, daemon=True)
        self._watcher.start()

    def _watch_cancel(self) -> None:
        while not self._done.is_set():
            if self.cancel.wait(_POLL_S):
                self.fail(Aborted("cancelled"))
                return

    def on_abort(self, stop: Callable[[], object]) -> None:
        """Run `stop` (cancel a call, kill a process) when the job aborts; at once if it has."""
        with self._lock:
            if not self.abort.is_set():
                self._stoppers.append(stop)
                return
        stop()

    def fail(self, exc: BaseException) -> None:
        """Record `exc` unless an earlier error was recorded, and stop everything."""
        with self._lock:
            if self.error is None:
                self.error = exc
            if self.abort.is_set():
                return
            self.abort.set()
            stoppers, self._stoppers = self._stoppers, []
        for stop in stoppers:
            try:
                stop()
            except Exception:
                logger.debug("stopper failed", exc_info=True)

    def check(self) -> None:
        if self.abort.is_set():
            raise Aborted("job aborted")

    def spawn(self, name: str, target: Callable[[], object]) -> threading.Thread:
        """Run `target` in a thread whose exception fails the job."""

        def body() -> None:
            try:
                target()
            except BaseException as exc:  # noqa: BLE001 - handed to the job's owner
                self.fail(exc)

        thread = threading.Thread(target=body, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()
        return thread

    def join(self) -> None:
        for thread in self._threads:
            thread.join()

    def wait(self, future: Future) -> object:
        """`future.result()`, giving up when the job aborts."""
        while True:
            try:
                return future.result(timeout=_POLL_S)
            except (TimeoutError, grpc.FutureTimeoutError):
                self.check()

    def close(self) -> None:
        self._done.set()
        self._watcher.join()


class Pipe(Generic[T]):
    """A bounded queue between two threads of one job; both ends give up on abort."""

    def __init__(self, guard: RunGuard, maxsize: int = 8) -> None:
        self._guard = guard
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)

    def put(self, item: T | object) -> None:
        while True:
            self._guard.check()
            try:
                self._queue.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """No more items; the reader's iteration ends after the queued ones."""
        self.put(_END)

    def __iter__(self) -> Iterator[T]:
        while True:
            self._guard.check()
            try:
                item = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if item is _END:
                return
            yield item


class Spool(Generic[M]):
    """Protobuf messages written to a file one after another and read back in order (sequential
    mode keeps a stage's whole output on disk, not in memory)."""

    def __init__(self, path: Path, message_type: type[M]) -> None:
        self.path = path
        self.message_type = message_type
        self.count = 0
        self._handle = open(path, "wb")  # noqa: SIM115 - closed by finish()

    def write(self, message: M) -> None:
        data = message.SerializeToString()
        self._handle.write(struct.pack("<I", len(data)) + data)
        self.count += 1

    def finish(self) -> None:
        self._handle.close()

    def __iter__(self) -> Iterator[M]:
        with open(self.path, "rb") as handle:
            while header := handle.read(4):
                (size,) = struct.unpack("<I", header)
                message = self.message_type()
                message.ParseFromString(handle.read(size))
                yield message
