"""GPU latency of the zoo models in PyTorch: fp32, fp16 (autocast) and fp16 replayed as a CUDA graph.

    python -m benchmarks.gpu_bench --size 1024x2048 --out gpu.json [--checkpoint CKPT ...]

Runs where torch has CUDA (the lent GPU machine); needs only torch, `models` and the stdlib-only
`clients.cli_args`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

import models
from clients.cli_args import hw_arg
from clients.files import atomic_write_json
from models.checkpoint import load_weights, read_checkpoint


def build(arch: str, task: str, num_classes: int, checkpoint: str | None) -> torch.nn.Module:
    if checkpoint:
        state, meta, _ = read_checkpoint(checkpoint)
        model = models.create_model(meta["arch"], task=meta["task"], num_classes=meta.get("num_classes", 0),
                                    width=meta.get("width", 16))
        load_weights(model, state)
        return model
    return models.create_model(arch, task=task, num_classes=num_classes)


def timed(fn, warmup: int, iters: int) -> list[float]:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()  # the clock is read only after the GPU is done
        times.append((time.perf_counter() - start) * 1e3)
    return times


def bench_model(model: torch.nn.Module, batch: int, h: int, w: int, warmup: int, iters: int) -> dict:
    model = model.cuda().eval()
    x = torch.randn(batch, 3, h, w, device="cuda")
    results = {}
    with torch.inference_mode():
        results["fp32"] = timed(lambda: model(x), warmup, iters)
        with torch.autocast("cuda", dtype=torch.float16):
            results["fp16"] = timed(lambda: model(x), warmup, iters)
    # CUDA graph: capture one fp16 forward on a static input, then replay it.
    static_x = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
        with torch.cuda.stream(stream):
            for _ in range(3):
                model(static_x)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_y = model(static_x)
    results["fp16_cuda_graph"] = timed(graph.replay, warmup, iters)
    with torch.inference_mode():
        ref = model(x).float()
        with torch.autocast("cuda", dtype=torch.float16):
            half = model(x).float()
    agree = None
    if ref.shape[1] > 1:
        agree = float((ref.argmax(1) == half.argmax(1)).float().mean())
        agree_graph = float((ref.argmax(1) == static_y.float().argmax(1)).float().mean())
    else:
        agree_graph = float((ref - static_y.float()).abs().max())
    summary = {k: {"p50_ms": statistics.median(v), "min_ms": min(v),
                   "p90_ms": sorted(v)[int(0.9 * (len(v) - 1))]} for k, v in results.items()}
    summary["fp16_vs_fp32"] = agree if agree is not None else float((ref - half).abs().max())
    summary["graph_vs_fp32"] = agree_graph
    summary["fp16_speedup"] = summary["fp32"]["p50_ms"] / summary["fp16"]["p50_ms"]
    summary["graph_speedup"] = summary["fp32"]["p50_ms"] / summary["fp16_cuda_graph"]["p50_ms"]
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=hw_arg, default=(1024, 2048), help="input HxW (default: 1024x2048)")
    parser.add_argument("--batch", type=int, default=1, help="images per forward pass (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed passes per variant (default: %(default)s)")
    parser.add_argument("--iters", type=int, default=50, help="timed passes per variant (default: %(default)s)")
    parser.add_argument("--checkpoint", nargs="*", default=[],
                        help="trained checkpoints to time as well (their meta gives arch, task and width)")
    parser.add_argument("--archs", default="fcn,unet,pspnet,upernet",
                        help="comma-separated zoo architectures, timed with random weights (default: %(default)s)")
    parser.add_argument("--out", default="gpu.json", help="JSON report path (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not torch.cuda.is_available():
        print("error: torch has no CUDA device here; run this on the GPU machine", file=sys.stderr)
        return 2
    h, w = args.size
    torch.backends.cudnn.benchmark = True
    report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "size": [h, w],
              "batch": args.batch, "models": {}}
    jobs = [(f"{a}-segmentation", a, "segmentation", 5, None) for a in args.archs.split(",")]
    jobs += [("unet-depth", "unet", "depth", 0, None)]
    jobs += [(f"ckpt:{c}", "", "", 0, c) for c in args.checkpoint]
    for name, arch, task, ncls, ckpt in jobs:
        res = bench_model(build(arch, task, ncls, ckpt), args.batch, h, w, args.warmup, args.iters)
        report["models"][name] = res
        print(f"{name:28s} fp32 {res['fp32']['p50_ms']:7.2f} ms  fp16 {res['fp16']['p50_ms']:7.2f} ms  "
              f"fp16+graph {res['fp16_cuda_graph']['p50_ms']:7.2f} ms  "
              f"(x{res['fp16_speedup']:.2f}, x{res['graph_speedup']:.2f})", flush=True)
    atomic_write_json(args.out, report, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
