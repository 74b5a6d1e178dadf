"""Demo inputs: a packaged portrait and a generated, moving hero clip with a tone."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from services.cli.demo_media import build_demo_inputs, hero_face, hero_frame, main
from services.gateway.pipeline.media import probe_video

pytestmark = [
    pytest.mark.ffmpeg,
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg"),
]


def test_demo_inputs_are_a_photo_and_a_clip_with_audio(tmp_path: Path) -> None:
    source, hero = build_demo_inputs(tmp_path, seconds=1.0, fps=10, size=96, photo_side=128)
    assert source.read_bytes().startswith(b"\x89PNG")
    info = probe_video(hero)
    assert (info.width, info.height, info.fps) == (96, 96, Fraction(10)) and info.has_audio
    assert info.duration_s == pytest.approx(1.0, abs=0.15)


def test_the_hero_face_moves() -> None:
    face = hero_face()
    first, later = hero_frame(face, 0.0, 128), hero_frame(face, 0.4, 128)
    assert first.shape == (128, 128, 3) and first.dtype == np.uint8
    assert np.abs(first.astype(int) - later.astype(int)).mean() > 2.0


def test_module_entry_point(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path / "demo"), "--seconds", "0.4", "--fps", "5", "--size", "64"]) == 0
    assert (tmp_path / "demo" / "hero.mp4").is_file() and "hero clip" in capsys.readouterr().out
