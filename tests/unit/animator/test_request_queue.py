"""BoundedReader: back-pressure (never reads far ahead), batching, error hand-over, stop."""

from __future__ import annotations

import time

import pytest

from services.animator import metrics
from services.animator.request_queue import BoundedReader


def _depth() -> float:
    return metrics.QUEUE_DEPTH.collect()[0].samples[0].value


def test_reader_stops_pulling_when_the_queue_is_full():
    pulled = []

    def endless():
        i = 0
        while True:
            pulled.append(i)
            yield i
            i += 1

    reader = BoundedReader(endless(), lambda x: x * 10, maxsize=3)
    time.sleep(0.5)
    assert len(pulled) <= 4  # 3 queued + 1 waiting to be put
    assert _depth() == 3
    batch, ended = reader.get_batch(2)
    assert batch == [0, 10] and not ended
    time.sleep(0.3)
    assert len(pulled) <= 6
    reader.stop()
    assert _depth() == 0


def test_batches_and_end_of_stream():
    reader = BoundedReader(iter(range(5)), lambda x: x, maxsize=8)
    assert reader.get_batch(2) == ([0, 1], False)
    assert reader.get_batch(2) == ([2, 3], False)
    assert reader.get_batch(2) == ([4], True)
    reader.stop()


def test_errors_arrive_after_the_items_before_them():
    def failing():
        yield 1
        yield 2
        raise ValueError("broken request")

    reader = BoundedReader(failing(), lambda x: x, maxsize=8)
    time.sleep(0.2)
    assert reader.get_batch(5) == ([1, 2], False)
    with pytest.raises(ValueError, match="broken request"):
        reader.get_batch(5)
    reader.stop()


def test_conversion_errors_are_raised_to_the_consumer():
    def convert(x):
        if x == 1:
            raise KeyError("bad item")
        return x

    reader = BoundedReader(iter(range(3)), convert, maxsize=8)
    time.sleep(0.2)
    assert reader.get_batch(1) == ([0], False)
    with pytest.raises(KeyError):
        reader.get_batch(1)
    reader.stop()
