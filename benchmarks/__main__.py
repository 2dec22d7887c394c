"""pixelport benchmarks (benchmarks are not tests: nothing here asserts on timings).

    python -m benchmarks latency --url 127.0.0.1:8001 --model NAME --concurrency 1,2,4,8 --out DIR
    python -m benchmarks compare --checkpoint CKPT --image-size 512x512 --batch 1,4 --out DIR
    python -m benchmarks crosscheck --url 127.0.0.1:8001 --model NAME --shape 512x512 --concurrency 1,2 --out DIR
    python -m benchmarks tune --model-dir model_repository/NAME --budget-p99-ms 150 --shape 512x512 --out DIR
    python -m benchmarks soak --url 127.0.0.1:8001 --model NAME --clients 8 --duration 60 [--shm] --out DIR
"""

from __future__ import annotations

import argparse
import logging
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="verb", required=True)
    from . import cli_compare, cli_crosscheck, cli_latency, cli_soak, tune

    for module in (cli_latency, cli_compare, cli_crosscheck, cli_soak, tune):
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Our own progress at INFO; the exporter's libraries (onnxscript, onnx_ir) only when they warn.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("benchmarks", "clients", "export", "serving"):
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        return args.run(args)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
