"""Every command explains itself: each CLI flag has help text, each CLI module shows its run command."""

from __future__ import annotations

import argparse
import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROOMS = ("models", "export", "serving", "clients", "evaluation", "benchmarks")


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


def top_parser(room: str, monkeypatch) -> argparse.ArgumentParser:
    """The room's argparse parser, caught at its first parse: no command runs."""
    def capture(self, *args, **kwargs):
        raise _Captured(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
    main = importlib.import_module(f"{room}.__main__").main
    with pytest.raises(_Captured) as caught:
        main(["--help"])
    return caught.value.parser


def flags_without_help(parser: argparse.ArgumentParser, prefix: str) -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            for verb, sub in action.choices.items():
                missing += flags_without_help(sub, f"{prefix} {verb}")
            continue
        if not (action.help and action.help.strip()):
            missing.append(f"{prefix} {'/'.join(action.option_strings) or action.dest}")
    return missing


@pytest.mark.parametrize("room", ROOMS)
def test_every_flag_has_help(room, monkeypatch):
    missing = flags_without_help(top_parser(room, monkeypatch), f"python -m {room}")
    assert not missing, "flags without help text:\n" + "\n".join(missing)


def cli_modules() -> list[Path]:
    """`__main__.py` and every `cli_*.py` that defines a verb (not shared argparse helpers)."""
    def defines_verb(path: Path) -> bool:
        names = {n.name for n in ast.parse(path.read_text(encoding="utf-8")).body if isinstance(n, ast.FunctionDef)}
        return bool(names & {"main", "add_parser", "build_parser"})

    return sorted(p for room in ROOMS for p in (ROOT / room).glob("*.py")
                  if p.name == "__main__.py" or (p.name.startswith("cli_") and defines_verb(p)))


@pytest.mark.parametrize("path", cli_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_cli_module_docstring_shows_its_run_command(path):
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    assert f"python -m {path.parent.name} " in doc, f"{path.relative_to(ROOT)}: docstring lacks `python -m {path.parent.name} ...`"
