"""`python -m benchmarks compare`: argparse edge for benchmarks.compare, plus its report files.

    python -m benchmarks compare --checkpoint CKPT [--data DATA] --image-size 512x512 --batch 1,4 --out DIR
    python -m benchmarks compare --model-dir model_repository/seg_unet --out DIR
"""

from __future__ import annotations

import os

from clients.cli_args import hw_arg
from clients.files import atomic_write, atomic_write_json

from . import report
from .cli_latency import int_list
from .compare import CompareSettings, compare

ROW_COLUMNS = ["variant", "batch", "p50 ms", "p90 ms", "images/s", "x onnxruntime", "accuracy"]


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="PyTorch vs onnxruntime vs Triton (gRPC, shm, uint8/float, labels/logits)",
                       description=__doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="a trained checkpoint: every served form is exported from it")
    src.add_argument("--model-dir", help="an exported <repository>/<model>: only its own form is compared")
    p.add_argument("--image-size", type=hw_arg, default=(512, 512),
                   help="network-size HxW of the random input tensors (default: 512x512)")
    p.add_argument("--batch", default="1,4", help="comma-separated batch sizes (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=8,
                   help="interleaved rounds over all variants (default: %(default)s)")
    p.add_argument("--iters", type=int, default=3, help="timed calls per variant and batch per round")
    p.add_argument("--precisions", default="fp16,int8", help="extra onnxruntime variants ('' for none)")
    p.add_argument("--concurrency", default="1,2,4,8",
                   help="comma-separated concurrency levels of the served throughput sweep over gRPC")
    p.add_argument("--window-s", type=float, default=2.0,
                   help="seconds per measurement window in the throughput sweep (default: %(default)s)")
    p.add_argument("--windows", type=int, default=4,
                   help="most measurement windows per concurrency level (default: %(default)s)")
    p.add_argument("--stability", type=float, default=0.10,
                   help="the sweep's and perf_analyzer's rule: three windows in a row within this fraction "
                        "(default: %(default)s)")
    p.add_argument("--data", help="synthetic dataset: accuracy on its val split, int8 calibration")
    p.add_argument("--eval-images", type=int, default=16,
                   help="val images scored per variant for accuracy (default: %(default)s)")
    p.add_argument("--perf-analyzer", nargs="?", const="", default=None, metavar="PATH",
                   help="also measure the served p50 with NVIDIA's perf_analyzer (PATH, else on PATH, else "
                        "../shared/tools/perf-analyzer) and report its served / in-process ratio beside ours")
    p.add_argument("--out", required=True, help="folder for compare.json, compare.md and compare.png")
    p.set_defaults(run=run)


def run(args) -> int:
    settings = CompareSettings(
        out=args.out, checkpoint=args.checkpoint, model_dir=args.model_dir, image_size=args.image_size,
        batches=int_list(args.batch), rounds=args.rounds, iters=args.iters,
        precisions=tuple(p for p in args.precisions.split(",") if p),
        concurrency=int_list(args.concurrency), window_s=args.window_s,
        windows=args.windows, data=args.data, eval_images=args.eval_images, perf_analyzer=args.perf_analyzer,
        stability=args.stability,
    )
    write_compare_outputs(args.out, compare(settings))
    return 0


def accuracy_text(row: dict) -> str:
    for key, fmt in (("mIoU", "mIoU {:.2%}"), ("abs_rel", "abs_rel {:.4f}"), ("sad", "SAD {:.3f}")):
        if row.get(key) is not None:
            return fmt.format(row[key])
    return "-"


def write_compare_outputs(out_dir: str, result: dict) -> None:
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_json(os.path.join(out_dir, "compare.json"), result, indent=2)
    rows = [[r["variant"], r["batch"], r["p50_ms"], r["p90_ms"], r["images_per_s"], r["vs_onnxruntime"],
             accuracy_text(r)] for r in result["rows"]]
    ratio_rows = [[k, f"{v:.3f}"] for k, v in result["ratios"].items()]
    level_rows = [[lv["concurrency"], lv["throughput"], lv["p50_us"] / 1e3, lv["server_us"]["queue"] / 1e3,
                   lv["server_us"]["compute_infer"] / 1e3,
                   (lv["server_us"]["compute_input"] + lv["server_us"]["compute_output"]) / 1e3]
                  for lv in result["served_throughput"]]
    level_header = ["concurrency", "images/s", "p50 ms", "server queue ms", "server infer ms", "server in+out ms"]
    best = result["onnxruntime_images_per_s_by_batch"]
    md = [f"# Variant comparison: {result['model']} ({result['task']}), "
          f"{result['settings']['image_size'][0]}x{result['settings']['image_size'][1]}", "",
          report.markdown_table(ROW_COLUMNS, rows), "", "## Ratios (same run)", "",
          report.markdown_table(["ratio", "value"], ratio_rows), "",
          "## Served throughput (gRPC, batch-1 requests) vs in-process onnxruntime", "",
          report.markdown_table(level_header, level_rows), "",
          "onnxruntime in-process images/s by batch: " + ", ".join(f"b{k}: {v:.2f}" for k, v in best.items()), ""]
    if result.get("perf_analyzer"):
        pa = result["perf_analyzer"]
        md += [f"perf_analyzer on the served fp32 model (batch 1, concurrency 1): p50 {pa['p50_ms']:.2f} ms, "
               f"p99 {pa['p99_ms']:.2f} ms, {pa['throughput']:.2f} infer/s.", ""]
    if result.get("efficiency"):
        e = result["efficiency"]
        md += [f"fp32 efficiency: {e['model_gflop_per_image']:.2f} GFLOP per image, onnxruntime reaches "
               f"{e['onnxruntime_fp32_gflops']:.1f} GFLOP/s at batch 1, {e['fraction_of_gemm_peak']:.0%} of this "
               f"machine's float32 GEMM rate ({e['gemm_peak_gflops']:.1f} GFLOP/s).", ""]
    if result.get("variants_not_published"):
        md += ["## Variants that failed their own parity gate (not compared)", ""]
        md += [f"- {k}: {v}" for k, v in result["variants_not_published"].items()] + [""]
    if result["targets_missed"]:
        md += ["## Targets missed", ""] + [f"- {k}: {v['value']:.3f} (target {v['target']})"
                                           for k, v in result["targets_missed"].items()]
        md += ["", "Where the time goes: compare each level's server queue and infer time with its p50 above; "
               "the rest is client and transport (gRPC serialisation, python-backend IPC)."]
    text = "\n".join(md) + "\n"
    atomic_write(os.path.join(out_dir, "compare.md"), text)
    b1 = result["batch_for_ratios"]
    names = [r["variant"] for r in result["rows"] if r["batch"] == b1]
    values = [r["p50_ms"] for r in result["rows"] if r["batch"] == b1]
    report.plot_bars(os.path.join(out_dir, "compare.png"), names, values, "p50 latency (ms)",
                     f"{result['model']}: batch {b1}, p50 latency by variant")
    print(text)
