"""Bounded reading of a client stream on a helper thread (back-pressure for streaming RPCs).

The reader converts each request with `convert` and puts it into a queue of `maxsize` items;
when the consumer (the device loop) falls behind, `put` blocks, the reader stops pulling from
gRPC and HTTP/2 flow control slows the client down. Nothing is buffered beyond `maxsize`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from services.animator import metrics

_END = object()
_POLL_S = 0.1
_ACTIVE: set[BoundedReader] = set()
_ACTIVE_LOCK = threading.Lock()


def _queued_frames() -> int:
    with _ACTIVE_LOCK:
        return sum(reader.pending() for reader in _ACTIVE)


metrics.add_queue_source(_queued_frames)


class BoundedReader:
    """Pull `requests` on a daemon thread into a bounded queue; `stop()` ends it early."""

    def __init__(
        self, requests: Iterator[Any], convert: Callable[[Any], Any], maxsize: int
    ) -> None:
        self._requests = requests
        self._convert = convert
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="animate-reader", daemon=True)
        with _ACTIVE_LOCK:
            _ACTIVE.add(self)
        self._thread.start()

    def pending(self) -> int:
        """Items received and queued but not yet taken (for the queue-depth gauge)."""
        return self._queue.qsize()

    def stop(self) -> None:
        """Stop reading; the queue no longer counts towards `animator_queue_depth`."""
        self._stop.set()
        with _ACTIVE_LOCK:
            _ACTIVE.discard(self)

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for request in self._requests:
                if not self._put(self._convert(request)):
                    return
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            self._put(exc)
            return
        self._put(_END)

    def get_batch(self, size: int, linger_s: float = 0.5) -> tuple[list[Any], bool]:
        """Up to `size` items: blocks for the first, then waits at most `linger_s` per item.

        Returns (items, ended). Raises the reader's exception once earlier items are consumed.
        """
        items: list[Any] = []
        while len(items) < size and not self._stop.is_set():
            try:
                item = self._queue.get(timeout=linger_s if items else _POLL_S)
            except queue.Empty:
                if items:
                    break
                continue
            if item is _END:
                return items, True
            if isinstance(item, Exception):
                if items:  # deliver what came before the error first
                    self._queue.put(item)
                    break
                raise item
            items.append(item)
        return items, False
