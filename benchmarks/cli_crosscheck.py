"""`python -m benchmarks crosscheck`: argparse edge for benchmarks.crosscheck, plus its report files.

    python -m benchmarks crosscheck --url 127.0.0.1:8001 --model seg_unet [--perf-analyzer PATH] \
        [--shape 512x512] [--concurrency 1,2] [--window-s 2 --windows 8 --stability 0.1] \
        [--window-requests N] [--warmup-requests 10] --out DIR

Writes DIR/crosscheck.json (both tools' levels and the side-by-side rows) and perf_analyzer's own
CSV per level; prints the table.
"""

from __future__ import annotations

import os

from clients.cli_args import hw_arg
from clients.files import atomic_write_json

from . import report
from .cli_latency import int_list
from .crosscheck import CrosscheckSettings, crosscheck

COLUMNS = ["concurrency", "metric", "perf_analyzer", "pixelport", "pixelport / perf_analyzer"]


def add_parser(sub) -> None:
    p = sub.add_parser("crosscheck", help="perf_analyzer and pixelport's latency side by side, with ratios",
                       description=__doc__)
    p.add_argument("--url", default="127.0.0.1:8001", help="Triton gRPC address host:port (default: %(default)s)")
    p.add_argument("--model", required=True, help="served model name")
    p.add_argument("--perf-analyzer", help="perf_analyzer binary (default: on PATH, else ../shared/tools/perf-analyzer)")
    p.add_argument("--shape", type=hw_arg,
                   help="network-size HxW of the random batch-1 tensors (default: the model's own input size)")
    p.add_argument("--concurrency", default="1,2",
                   help="comma-separated concurrency levels, measured by both tools (default: %(default)s)")
    p.add_argument("--window-s", type=float, default=2.0,
                   help="measurement window in seconds, both tools (default: %(default)s)")
    p.add_argument("--windows", type=int, default=8, help="most windows per level, both tools (default: %(default)s)")
    p.add_argument("--stability", type=float, default=0.10,
                   help="three windows in a row must agree within this fraction (default: %(default)s)")
    p.add_argument("--window-requests", type=int, default=0,
                   help="windows also last until they hold this many requests, both tools (perf_analyzer's "
                        "count_windows); for slow models or busy machines (default: %(default)s, time windows)")
    p.add_argument("--warmup-requests", type=int, default=10,
                   help="requests sent at each level before measuring, both tools (default: %(default)s)")
    p.add_argument("--out", required=True, help="folder for crosscheck.json and perf_analyzer's CSVs")
    p.set_defaults(run=run)


def run(args) -> int:
    settings = CrosscheckSettings(url=args.url, model=args.model, concurrency=int_list(args.concurrency),
                                  shape=args.shape, perf_analyzer=args.perf_analyzer, window_s=args.window_s,
                                  windows=args.windows, stability=args.stability,
                                  window_requests=args.window_requests, warmup_requests=args.warmup_requests)
    os.makedirs(args.out, exist_ok=True)
    result = crosscheck(settings, work_dir=args.out)
    atomic_write_json(os.path.join(args.out, "crosscheck.json"), result, indent=2)
    h, w = result["shape"]
    print(f"{result['model']} at {h}x{w}, batch 1, {result['input_dtype']} tensors (no client preprocessing)")
    print(report.format_table(COLUMNS, table_rows(result["rows"])))
    return 0


def table_rows(rows: list[dict]) -> list[list]:
    return [[r["concurrency"], r["metric"], r["perf_analyzer"], r["pixelport"], f"{r['ratio']:.2f}"] for r in rows]
