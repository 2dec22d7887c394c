"""pixelport clients CLI.

    python -m clients infer --url 127.0.0.1:8001 --model NAME IMAGES... --out DIR
    python -m clients eval --backend triton --url 127.0.0.1:8001 --model NAME --data DIR --out DIR
    python -m clients merge DIR... --out DIR
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clients", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="verb", required=True)
    # Each verb lives in its own module; imported lazily so `infer` never loads eval's plotting.
    from . import cli_eval, cli_infer

    cli_infer.add_parser(sub)
    cli_eval.add_parser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
