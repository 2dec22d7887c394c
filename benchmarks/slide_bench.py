"""Sliding-window inference served: tiles of one image batched per request vs one request per tile.

    python -m benchmarks.slide_bench --url 127.0.0.1:8001 --model seg_logits --size 1024x2048 \
        --crop 512x1024 --stride 341x683 --rounds 5 [--shm] [--out slide.json]

The model must be served with logits (`python -m export ... --output logits`) and accept the crop
(`--max-size`). Both variants run the same `clients.window.SlideJob` on the same image, alternating
within each round after a warm-up round, so their images/s and ratio come from one run; the labels
they return are compared too (equal unless onnxruntime's sums differ across batch sizes near a tie).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from clients.client import DenseClient
from clients.contract import parse_hw
from clients.window import SlideJob, SlideWindow

log = logging.getLogger(__name__)
VARIANTS = ("batched", "per_tile")


@dataclass(frozen=True)
class SlideBenchSettings:
    url: str
    model: str
    size: tuple[int, int] = (1024, 2048)
    crop: tuple[int, int] = (512, 1024)
    stride: tuple[int, int] = (341, 683)
    rounds: int = 5
    shm: bool = False
    seed: int = 0


def slide_once(client: DenseClient, image: np.ndarray, window: SlideWindow) -> tuple[np.ndarray, int]:
    """One image slid as client.predict(image, window=window) does -> (labels, requests made)."""
    job = SlideJob(image, window, client.contract)
    while (request := job.next_request()) is not None:
        job.feed(request, client.infer_tensors(request.batch, "slide bench"))
    return job.result().labels, job.requests


def run_bench(s: SlideBenchSettings) -> dict:
    image = np.random.default_rng(s.seed).integers(0, 256, size=s.size + (3,), dtype=np.uint8)
    seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with DenseClient(s.url, s.model, use_shm=s.shm, timeout_s=600) as client:
        per_request = {"batched": max(1, client.contract.max_batch_size), "per_tile": 1}
        windows = {v: SlideWindow(s.crop, s.stride, tiles_per_request=per_request[v]) for v in VARIANTS}
        labels, requests = {}, {}
        for variant in VARIANTS:  # warm-up (not timed): also the labels and request counts
            labels[variant], requests[variant] = slide_once(client, image, windows[variant])
        for r in range(s.rounds):
            for variant in (VARIANTS if r % 2 == 0 else VARIANTS[::-1]):  # alternate who goes first
                start = time.perf_counter()
                slide_once(client, image, windows[variant])
                seconds[variant].append(time.perf_counter() - start)
            log.info("round %d/%d: %s", r + 1, s.rounds,
                     ", ".join(f"{v} {seconds[v][-1]:.3f} s" for v in VARIANTS))
    rows = {v: {"tiles_per_request": per_request[v], "requests_per_image": requests[v],
                "median_s": float(np.median(seconds[v])), "p90_s": float(np.percentile(seconds[v], 90)),
                "images_per_s": 1.0 / float(np.median(seconds[v])), "seconds": seconds[v]} for v in VARIANTS}
    return {"settings": asdict(s), "tiles": len(SlideJob(image, windows["batched"], client.contract).streams[0].boxes),
            "variants": rows, "batched_over_per_tile": rows["batched"]["images_per_s"] / rows["per_tile"]["images_per_s"],
            "labels_agree": float(np.mean(labels["batched"] == labels["per_tile"]))}


def table(result: dict) -> str:
    lines = ["| variant | tiles/request | requests/image | median s | p90 s | images/s |", "|---|---|---|---|---|---|"]
    for name, row in result["variants"].items():
        lines.append(f"| {name} | {row['tiles_per_request']} | {row['requests_per_image']} | {row['median_s']:.3f} "
                     f"| {row['p90_s']:.3f} | {row['images_per_s']:.3f} |")
    lines.append(f"\nbatched / per tile (images/s, same run): {result['batched_over_per_tile']:.3f}; "
                 f"{result['tiles']} tiles; labels agree on {100 * result['labels_agree']:.3f} % of pixels")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.slide_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="Triton gRPC HOST:PORT")
    p.add_argument("--model", required=True, help="a segmentation model served with logits")
    p.add_argument("--size", type=lambda t: parse_hw(t, "--size"), default=(1024, 2048), help="image HxW (random pixels)")
    p.add_argument("--crop", type=lambda t: parse_hw(t, "--crop"), default=(512, 1024), help="window crop HxW")
    p.add_argument("--stride", type=lambda t: parse_hw(t, "--stride"), default=(341, 683), help="window stride HxW")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds (each runs both variants once)")
    p.add_argument("--shm", action="store_true", help="send tiles through system shared memory")
    p.add_argument("--out", help="also write the result as JSON here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = run_bench(SlideBenchSettings(args.url, args.model, args.size, args.crop, args.stride,
                                              args.rounds, args.shm))
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(table(result))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
