"""`python -m benchmarks soak`: argparse edge for benchmarks.soak, plus its report files.

    python -m benchmarks soak --url 127.0.0.1:8001 --model seg_unet --clients 8 --duration 60 [--shm] --out DIR

Writes DIR/soak.json and prints the per-window table and a verdict. Exit code 0 when every request
succeeded and no shared-memory region was left behind, 1 otherwise (2: the soak could not run).
"""

from __future__ import annotations

import os

from clients.cli_args import hw_arg
from clients.files import atomic_write_json

from . import report
from .soak import DEFAULT_SIZES, MAX_CLIENTS, MAX_DURATION_S, MAX_REQUESTS, SoakSettings, soak

WINDOW_COLUMNS = ["window", "start s", "requests", "errors", "requests/s", "p50 ms", "p99 ms", "server peak MiB",
                  "client peak MiB"]


def sizes_arg(text: str) -> tuple[tuple[int, int], ...]:
    """`48x64,480x640` -> ((48, 64), (480, 640)), each through the shared HxW parser."""
    return tuple(hw_arg(part) for part in text.split(",") if part.strip())


def add_parser(sub) -> None:
    p = sub.add_parser("soak", help="sync and async clients, mixed sizes, for a bounded time; errors, p99 drift, "
                                    "memory and leftover shm", description=__doc__)
    p.add_argument("--url", default="127.0.0.1:8001",
                   help="Triton gRPC address on this host's loopback (default: %(default)s)")
    p.add_argument("--model", required=True, help="served model name")
    p.add_argument("--clients", type=int, default=8,
                   help=f"clients, half sync threads and half asyncio tasks (1..{MAX_CLIENTS}; default: %(default)s)")
    p.add_argument("--duration", type=float, default=60.0,
                   help=f"measured seconds after the warm-up (at most {MAX_DURATION_S:.0f}; default: %(default)s)")
    p.add_argument("--shm", action="store_true", help="send tensors through system shared memory")
    p.add_argument("--window-s", type=float, default=10.0, help="seconds per reported window (default: %(default)s)")
    p.add_argument("--warmup-s", type=float, default=5.0,
                   help="seconds before the clock starts; errors there still count (default: %(default)s)")
    p.add_argument("--max-requests", type=int, default=MAX_REQUESTS,
                   help="stop after this many requests in all (default: %(default)s)")
    p.add_argument("--timeout-s", type=float, default=30.0, help="per-request timeout (default: %(default)s)")
    p.add_argument("--sizes", type=sizes_arg, default=DEFAULT_SIZES,
                   help="comma-separated HxW image sizes the clients cycle through (default: a mix from 37x300 "
                        "to 480x640)")
    p.add_argument("--out", required=True, help="folder for soak.json")
    p.set_defaults(run=run)


def run(args) -> int:
    settings = SoakSettings(url=args.url, model=args.model, clients=args.clients, duration_s=args.duration,
                            shm=args.shm, window_s=args.window_s, warmup_s=args.warmup_s,
                            max_requests=args.max_requests, timeout_s=args.timeout_s, sizes=args.sizes)
    result = soak(settings)
    os.makedirs(args.out, exist_ok=True)
    atomic_write_json(os.path.join(args.out, "soak.json"), result, indent=2)
    print(summary(result))
    return 0 if result["errors"] == 0 and result["leftover_regions"] == 0 else 1


def _kb(value) -> str:
    return "n/a" if value is None else f"{value / 1024:.1f} MiB"


def _mib(value):
    return "n/a" if value is None else round(value / 1024, 1)


def _pct(value) -> str:
    return "n/a" if value is None else f"{value:+.1%}"


def summary(result: dict) -> str:
    rows = [[w["window"], w["start_s"], w["requests"], w["errors"], w["requests_per_s"], w["p50_ms"], w["p99_ms"],
             _mib(w["server_rss_peak_kb"]), _mib(w["client_rss_peak_kb"])] for w in result["windows"]]
    mem = result["memory"]
    errors = ", ".join(f"{k}: {v}" for k, v in result["errors_by_kind"].items()) or "none"
    left = result["shm_leftovers"]
    ratio = result["p99_last_over_first_window"]
    lines = [
        f"soak {result['model']} over {result['transport']}: {result['settings']['clients']} clients "
        f"({result['requests_by_client_kind']['sync']} sync / {result['requests_by_client_kind']['async']} async "
        f"requests), {result['wall_s']:.1f} s",
        report.format_table(WINDOW_COLUMNS, rows), "",
        f"requests {result['requests']} (measured {result['measured_requests']}), errors {result['errors']} ({errors})",
        "p99 last / first full window: " + ("n/a" if ratio is None else f"{ratio:.2f}"),
        f"server RSS (tritonserver + model stubs): start {_kb(mem['start']['server_total_rss_kb'])}, after warm-up "
        f"{_kb(mem['after_warmup']['server_total_rss_kb'])}, end {_kb(mem['end']['server_total_rss_kb'])}; "
        f"peak, last full window vs first: {_pct(result['server_rss_growth'])}",
        f"client RSS: start {_kb(mem['start']['client_rss_kb'])}, after warm-up "
        f"{_kb(mem['after_warmup']['client_rss_kb'])}, end {_kb(mem['end']['client_rss_kb'])}; "
        f"peak, last full window vs first: {_pct(result['client_rss_growth'])}",
        f"leftover shm regions: {len(left['server_registered'])} registered on the server, "
        f"{len(left['dev_shm'])} in /dev/shm",
        "PASS" if result["errors"] == 0 and result["leftover_regions"] == 0 else "FAIL",
    ]
    return "\n".join(lines)
