"""`python -m benchmarks latency`: argparse edge for benchmarks.latency.

    python -m benchmarks latency --url 127.0.0.1:8001 --model seg_unet --concurrency 1,2,4,8 \
        [--shm] [--image-size 512x512 | --images DIR] [--window-s 2 --windows 8] --out DIR
"""

from __future__ import annotations

import os

from clients.cli_args import hw_arg
from clients.files import atomic_write_json

from . import report
from .latency import LatencySettings, measure


def int_list(text: str) -> tuple[int, ...]:
    """`1,2,4` -> (1, 2, 4), every value a positive int."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise ValueError(f"expected comma-separated positive integers such as 1,2,4, got {text!r}")
    return values


def add_parser(sub) -> None:
    p = sub.add_parser("latency", help="perf_analyzer-style latency/throughput sweep of one served model",
                       description=__doc__)
    p.add_argument("--url", default="127.0.0.1:8001", help="Triton gRPC address host:port (default: %(default)s)")
    p.add_argument("--model", required=True, help="served model name")
    p.add_argument("--concurrency", default="1,2,4,8",
                   help="comma-separated concurrency levels: closed-loop clients in flight (default: %(default)s)")
    p.add_argument("--shm", action="store_true", help="send tensors through system shared memory")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--image-size", type=hw_arg, help="random images of HxW (default 512x512)")
    src.add_argument("--images", help="a folder of real images")
    p.add_argument("--window-s", type=float, default=2.0, help="seconds per measurement window (default: %(default)s)")
    p.add_argument("--windows", type=int, default=8,
                   help="most windows per level; a level stops early once 3 in a row agree within 10%% "
                        "(default: %(default)s)")
    p.add_argument("--out", required=True, help="folder for latency.json, latency.csv and latency.png")
    p.set_defaults(run=run)


def run(args) -> int:
    settings = LatencySettings(
        url=args.url, model=args.model, concurrency=int_list(args.concurrency),
        shm=args.shm, image_size=args.image_size, images_dir=args.images, window_s=args.window_s,
        windows=args.windows,
    )
    result = measure(settings)
    write_latency_outputs(args.out, result)
    return 0


def write_latency_outputs(out_dir: str, result: dict) -> None:
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_json(os.path.join(out_dir, "latency.json"), result, indent=2)
    rows = report.latency_rows(result["levels"])
    report.write_csv(os.path.join(out_dir, "latency.csv"), report.CSV_COLUMNS, rows)
    report.plot_latency(os.path.join(out_dir, "latency.png"), result["levels"],
                        f"{result['model']}: latency and throughput")
    print(report.format_table(report.CSV_COLUMNS, rows))
