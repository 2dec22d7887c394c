"""The benchmarks command line explains itself: every flag has help, every CLI module shows its command."""

from __future__ import annotations

import argparse
import importlib

import pytest

from benchmarks.__main__ import build_parser
from benchmarks.cli_latency import int_list

CLI_MODULES = ["benchmarks.__main__", "benchmarks.cli_latency", "benchmarks.cli_compare", "benchmarks.gpu_bench"]


def _parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    from benchmarks.gpu_bench import build_parser as gpu_parser

    root = build_parser()
    found = [("python -m benchmarks", root), ("python -m benchmarks.gpu_bench", gpu_parser())]
    for action in root._actions:
        if isinstance(action, argparse._SubParsersAction):
            found += [(f"python -m benchmarks {verb}", p) for verb, p in action.choices.items()]
    return found


def test_every_flag_has_help_text():
    missing = [f"{prog}: {'/'.join(a.option_strings) or a.dest}" for prog, parser in _parsers()
               for a in parser._actions
               if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and not a.help]
    assert missing == []


def test_every_verb_is_listed_and_has_help():
    root = build_parser()
    sub = next(a for a in root._actions if isinstance(a, argparse._SubParsersAction))
    assert {"latency", "compare"} <= set(sub.choices)
    assert all(choice.help for choice in sub._choices_actions)


@pytest.mark.parametrize("module", CLI_MODULES)
def test_cli_module_docstring_shows_its_run_command(module):
    doc = importlib.import_module(module).__doc__ or ""
    command = "python -m " + (module.rsplit(".", 1)[0] if module.endswith("__main__") else
                              "benchmarks" if module.startswith("benchmarks.cli_") else module)
    assert command in doc, f"{module}'s docstring should show `{command} ...`"
    if module.startswith("benchmarks.cli_"):
        assert f"{command} {module.split('cli_')[1]}" in doc


def test_sizes_use_the_shared_hxw_parser(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["latency", "--model", "m", "--out", "o", "--image-size", "12y4"])
    assert "HxW" in capsys.readouterr().err
    args = build_parser().parse_args(["compare", "--model-dir", "d", "--out", "o", "--image-size", "64x96"])
    assert args.image_size == (64, 96)


def test_int_list_names_the_bad_value():
    assert int_list("1,2, 4") == (1, 2, 4)
    for bad in ("", "1,x", "0,1"):
        with pytest.raises(ValueError, match="comma-separated"):
            int_list(bad)
