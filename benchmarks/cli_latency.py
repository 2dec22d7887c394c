"""`python -m benchmarks latency`: argparse edge for benchmarks.latency."""

from __future__ import annotations

import json
import os

from . import report
from .latency import LatencySettings, measure


def parse_hw(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
        return h, w
    except ValueError:
        raise ValueError(f"expected HxW such as 512x512, got {text!r}") from None


def add_parser(sub) -> None:
    p = sub.add_parser("latency", help="perf_analyzer-style latency/throughput sweep of one served model")
    p.add_argument("--url", default="127.0.0.1:8001")
    p.add_argument("--model", required=True)
    p.add_argument("--concurrency", default="1,2,4,8", help="comma-separated levels")
    p.add_argument("--shm", action="store_true", help="send tensors through system shared memory")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--image-size", type=parse_hw, help="random images of HxW (default 512x512)")
    src.add_argument("--images", help="a folder of real images")
    p.add_argument("--window-s", type=float, default=2.0)
    p.add_argument("--windows", type=int, default=8, help="most windows per level")
    p.add_argument("--out", required=True)
    p.set_defaults(run=run)


def run(args) -> int:
    settings = LatencySettings(
        url=args.url, model=args.model, concurrency=tuple(int(c) for c in args.concurrency.split(",")),
        shm=args.shm, image_size=args.image_size, images_dir=args.images, window_s=args.window_s,
        windows=args.windows,
    )
    result = measure(settings)
    write_latency_outputs(args.out, result)
    return 0


def write_latency_outputs(out_dir: str, result: dict) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "latency.json"), "w") as fh:
        json.dump(result, fh, indent=2)
    rows = report.latency_rows(result["levels"])
    report.write_csv(os.path.join(out_dir, "latency.csv"), report.CSV_COLUMNS, rows)
    report.plot_latency(os.path.join(out_dir, "latency.png"), result["levels"],
                        f"{result['model']}: latency and throughput")
    print(report.format_table(report.CSV_COLUMNS, rows))
