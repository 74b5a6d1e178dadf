"""`dynamics weights` commands: random, verify, usage errors (fetch is covered in test_hub)."""

from __future__ import annotations

import io

from services.animator.weights_cli import main
from tests.fixture_set import DEFAULT_SET


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_random_then_verify(tmp_path):
    code, out, _ = _run(["random", "--config", "reduced", "--seed", "5", str(tmp_path / "w")])
    assert code == 0 and "RANDOM" in out
    code, out, _ = _run(["verify", str(tmp_path / "w")])
    assert code == 0
    assert "provenance:  random  (RANDOM: output is noise)" in out
    assert "tree layout" in out and "990,085 parameters" in out  # total of the reduced config
    code, _, err = _run(["random", "--config", "reduced", str(tmp_path / "w")])
    assert code == 1 and err.startswith("error: weights already exist")


def test_verify_reports_precise_errors(tmp_path):
    code, out, err = _run(["verify", str(tmp_path)])
    assert code == 1 and out == ""
    assert err.startswith(f"error: no LivePortrait weights in {tmp_path}")
    assert len(err.strip().splitlines()) == 1


def test_verify_of_a_missing_or_non_folder_is_usage(tmp_path):
    (tmp_path / "file").write_bytes(b"x")
    for path, reason in (
        (tmp_path / "gone", "no such file or folder"),
        (tmp_path / "file", "not a folder"),
    ):
        code, out, err = _run(["verify", str(path)])
        assert (code, out) == (2, "") and err == f"error: weights folder {path}: {reason}\n"


def test_usage(capsys):
    assert main(["--help"]) == 0
    assert "fetch" in capsys.readouterr().out
    assert main(["random", "--seed", "x", "d"]) == 2
    assert main([]) == 2


def test_verify_with_named_config(tmp_path):
    """'reduced' names the config the default fixture set's checkpoints were made with."""
    code, out, _ = _run(["verify", "--config", "reduced", str(DEFAULT_SET.checkpoints)])
    assert code == 0 and "flat layout" in out and "provenance:  unknown" in out
    code, _, err = _run(["verify", "--config", "real", str(DEFAULT_SET.checkpoints)])
    assert code == 1 and "appearance_feature_extractor.pth: key mismatch" in err
