"""The `dynamics` dispatcher: help, unknown commands, and honest "not built" answers."""

from __future__ import annotations

import subprocess
import sys

import pytest

from services.cli import __main__ as cli


def test_help_lists_every_subcommand() -> None:
    out = subprocess.run([sys.executable, "-m", "services.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for name in ("render", "up", "detect", "weights", "bench"):
        assert name in out


def test_unknown_command_is_an_error(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["paint"])
    assert info.value.code == 2
    assert "unknown command 'paint'" in capsys.readouterr().err


def test_missing_capability_says_so_and_fails(monkeypatch, capsys) -> None:
    monkeypatch.setitem(cli.SUBCOMMANDS, "future", ("services.not_a_module", "later"))
    assert cli.main(["future"]) == 3
    assert "not built yet" in capsys.readouterr().err


def test_no_arguments_prints_usage_and_fails(capsys) -> None:
    assert cli.main([]) == 2
    assert "usage: dynamics" in capsys.readouterr().out
