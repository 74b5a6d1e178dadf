"""Every option of every `dynamics` command, sub-subcommands included, has help text."""

from __future__ import annotations

import argparse
import importlib

import pytest

from services.cli import __main__ as cli


def _walk(parser: argparse.ArgumentParser, path: str):
    """(where, action) for every action of `parser` and of the subparsers below it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helped = {choice.dest: choice.help for choice in action._choices_actions}
            for name, child in action.choices.items():
                yield path, _Named(name, helped.get(name))
                yield from _walk(child, f"{path} {name}")
        else:
            yield path, action


class _Named:
    """A subcommand as an item to check: its name and the help it is listed with."""

    def __init__(self, name: str, help_text: str | None) -> None:
        self.option_strings, self.dest, self.help = [], name, help_text


def _label(action) -> str:
    return "/".join(action.option_strings) or action.dest


def _parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    found = [("dynamics", cli.build_parser())]
    for name, (module_name, _help) in cli.SUBCOMMANDS.items():
        found.append((f"dynamics {name}", importlib.import_module(module_name).build_parser()))
    return found


PARSERS = _parsers()


@pytest.mark.parametrize(("prog", "parser"), PARSERS, ids=[prog for prog, _ in PARSERS])
def test_every_action_has_help(prog: str, parser: argparse.ArgumentParser) -> None:
    missing = [
        f"{where}: {_label(action)}"
        for where, action in _walk(parser, prog)
        if action.help is not argparse.SUPPRESS and not (action.help or "").strip()
    ]
    assert not missing, f"options without help: {missing}"


def test_the_walk_reaches_nested_subcommands_and_sees_missing_help() -> None:
    """The walker itself: it finds an option two levels down that has no help."""
    root = argparse.ArgumentParser(prog="t")
    sub = root.add_subparsers(dest="cmd")
    child = sub.add_parser("child", help="a child")
    child.add_argument("--helped", help="yes")
    grand = child.add_subparsers(dest="inner").add_parser("grand")  # listed without help
    grand.add_argument("--bare")
    labels = {(where, _label(action), bool(action.help)) for where, action in _walk(root, "t")}
    assert ("t", "child", True) in labels and ("t child", "--helped", True) in labels
    assert ("t child", "grand", False) in labels
    assert ("t child grand", "--bare", False) in labels
