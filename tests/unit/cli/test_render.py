"""`dynamics render` argument handling and its progress bar (the full run is in integration)."""

from __future__ import annotations

import io
from pathlib import Path

from services.cli.render import ProgressBar, _option_value, default_weights_dir, main
from services.gateway.domain import ProgressUpdate


def test_weights_default_and_missing_weights(tmp_path: Path, capsys) -> None:
    assert default_weights_dir({}) == Path(".dynamics/weights")
    assert default_weights_dir({"DYNAMICS_WEIGHTS_DIR": "/w"}) == Path("/w")
    code = main(["a.png", "b.mp4", "-o", str(tmp_path / "o.mp4"), "--weights",
                 str(tmp_path / "none")], environ={})
    assert code == 2 and "no weights at" in capsys.readouterr().err


def test_bad_option_syntax(tmp_path: Path, capsys) -> None:
    code = main(["a.png", "b.mp4", "-o", "o.mp4", "--weights", str(tmp_path), "--option", "x"],
                environ={})
    assert code == 2 and "KEY=VALUE" in capsys.readouterr().err
    assert _option_value("false") is False and _option_value("1.5") == 1.5
    assert _option_value("3") == 3 and _option_value("lip") == "lip"


def test_progress_bar_plain_lines() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream, width=10)
    bar(ProgressUpdate("detect", 0, 10, None, {}))
    bar(ProgressUpdate("animate", 5, 10, 2.5, {}))
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("detect") and "ETA --" in lines[0]
    assert "[#####.....] 5/10 frames  ETA   2.5s" in lines[1]
