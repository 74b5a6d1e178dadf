"""The `dynamics` dispatcher: help with the exit codes, --version, unknown commands, and a
one-line answer when an optional package a command needs is not installed."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest

from services.cli import __main__ as cli
from services.common.cli import EXIT_CODES


def test_help_lists_every_subcommand_and_the_exit_codes() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "services.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for name in ("render", "up", "detect", "weights", "bench"):
        assert name in out
    codes = out[out.index("exit codes:") :].splitlines()[1:]
    assert [int(line.split()[0]) for line in codes] == [code for code, _ in EXIT_CODES]


def test_version_is_the_installed_distributions() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0
    assert done.stdout == f"dynamics {importlib.metadata.version('dynamics')}\n"


def test_unknown_command_is_an_error(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["paint"])
    assert info.value.code == 2
    assert "unknown command 'paint'" in capsys.readouterr().err


def test_unknown_top_level_option_is_an_error(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--paint"])
    assert info.value.code == 2 and "unrecognized arguments: --paint" in capsys.readouterr().err


def test_a_missing_optional_package_is_named_in_one_line(tmp_path, monkeypatch, capsys) -> None:
    (tmp_path / "needs_missing_pkg.py").write_text("import no_such_package_xyz.sub\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.SUBCOMMANDS, "paint", ("needs_missing_pkg", "later"))
    assert cli.main(["paint"]) == 3
    assert capsys.readouterr().err == (
        "dynamics paint: needs the Python module 'no_such_package_xyz', which is not installed; "
        "install the project with its extras (`bash setup.sh install`)\n"
    )


def test_a_missing_module_of_this_project_is_a_bug_not_a_message(monkeypatch) -> None:
    monkeypatch.setitem(cli.SUBCOMMANDS, "paint", ("services.not_a_module", "later"))
    with pytest.raises(ModuleNotFoundError):
        cli.main(["paint"])


def test_no_arguments_prints_usage_and_fails(capsys) -> None:
    assert cli.main([]) == 2
    assert "usage: dynamics" in capsys.readouterr().out
