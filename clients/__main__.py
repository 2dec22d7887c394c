"""pixelport clients CLI.

    python -m clients infer --url 127.0.0.1:8001 --model NAME IMAGES... --out DIR

`eval`, `merge` and `compare` moved to `python -m evaluation`; the old spellings here forward to
it for one release.
"""

from __future__ import annotations

import argparse
import logging
import sys


_MOVED_VERBS = ("eval", "merge", "compare")


def _forward_to_evaluation(argv: list[str]) -> int:
    # A thin alias for one release. Imported by name at run time, never at module level: the
    # client room must not depend on the evaluation room above it.
    import importlib

    logging.getLogger(__name__).warning("`python -m clients %s` moved to `python -m evaluation %s`", argv[0], argv[0])
    return importlib.import_module("evaluation.__main__").main(argv)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clients", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in _MOVED_VERBS:
        return _forward_to_evaluation(argv)
    sub = parser.add_subparsers(dest="verb", required=True)
    from . import cli_infer

    cli_infer.add_parser(sub)
    for verb in _MOVED_VERBS:
        sub.add_parser(verb, help=f"moved: use `python -m evaluation {verb}` (forwarded for one release)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
