"""pixelport evaluation CLI.

    python -m evaluation eval --backend triton --url 127.0.0.1:8001 --model NAME --data DIR --out DIR
    python -m evaluation merge DIR... --out DIR
    python -m evaluation compare DIR...
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="verb", required=True)
    from . import cli_eval

    cli_eval.add_parser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
