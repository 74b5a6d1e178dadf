"""local_stack: a service that cannot start fails the stack with its own log, nothing is left."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.gateway.local_stack import LocalStack, StackConfig, StackError, weights_fingerprint

FIXTURE_WEIGHTS = Path(__file__).resolve().parents[1] / "fixtures" / "liveportrait" / "checkpoints"


def test_a_failing_service_reports_its_log_and_the_rest_is_stopped(tmp_path: Path) -> None:
    stack = LocalStack(StackConfig(weights_dir=tmp_path / "no-weights", env=dict(os.environ),
                                   animator_device="cpu", start_timeout_s=120))
    with pytest.raises(StackError) as err:
        stack.start()
    text = str(err.value)
    assert "animator exited with code" in text and "ANIMATOR_WEIGHTS_DIR" in text
    assert stack.services == {}


def test_weights_fingerprint_tracks_content(tmp_path: Path) -> None:
    for name in ("a.pth", "b.pth"):
        (tmp_path / name).write_bytes(name.encode())
    first = weights_fingerprint(tmp_path)
    assert first == weights_fingerprint(tmp_path) and len(first) == 32
    (tmp_path / "b.pth").write_bytes(b"changed")
    assert weights_fingerprint(tmp_path) != first
    assert weights_fingerprint(FIXTURE_WEIGHTS) != first
