"""`dynamics up` refusals that come before anything starts (the served stack is in
tests/integration/test_up_e2e.py)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from services.cli.up import main


def test_missing_or_file_weights_folder_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    (tmp_path / "file").write_bytes(b"x")
    for weights, reason in (
        (tmp_path / "none", "no such file or folder"),
        (tmp_path / "file", "not a folder"),
    ):
        assert main(["--weights", str(weights), "--port", "0"], environ={}) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1
        assert err.startswith(f"dynamics up: weights folder {weights}: {reason};")


def test_a_taken_port_is_named_before_any_service_starts(tmp_path: Path, capsys) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code = main(["--weights", str(tmp_path), "--port", str(port)], environ={})
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in err and "starting" not in err


def test_port_must_be_a_tcp_port(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--weights", str(tmp_path), "--port", "70000"], environ={})
    assert info.value.code == 2 and "not a TCP port" in capsys.readouterr().err
