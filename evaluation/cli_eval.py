"""The `eval`, `merge` and `compare` verbs of `python -m evaluation` (`python -m clients eval|merge|compare` is a thin alias for one release).

    python -m evaluation eval --backend triton --url 127.0.0.1:8001 --model seg_unet --data DIR --split val --out DIR
    python -m evaluation eval --backend onnx --model-dir model_repository/seg_unet --data DIR --out DIR
    python -m evaluation eval --backend torch --checkpoint ckpt.pt --data DIR --shard 0/2 --state s0.json --out DIR
    python -m evaluation merge DIR0 DIR1 --out DIR
    python -m evaluation compare DIR_TORCH DIR_TRITON
"""

from __future__ import annotations

import argparse
import logging
import sys


from clients.datasets import LAYOUTS, DatasetOptions
from clients.progress import Progress

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="evaluate a model (Triton, onnxruntime or PyTorch) on a labelled dataset",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--backend", choices=("triton", "onnx", "torch"), required=True)
    g.add_argument("--url", help="triton: gRPC HOST:PORT (comma-separated for several servers)")
    g.add_argument("--model", help="triton: model name")
    g.add_argument("--model-dir", help="onnx: exported model directory <repository>/<name>")
    g.add_argument("--version", type=int, help="onnx: model version (default: the highest)")
    g.add_argument("--checkpoint", help="torch: checkpoint path")
    g.add_argument("--resize", help="torch: letterbox:HxW or stride:N (default: the checkpoint's input_size)")
    g.add_argument("--like", help="torch: use the served contract (resize, outputs) of this model directory")
    g.add_argument("--threads", type=int, default=0, help="onnx/torch intra-op threads (0 = default)")
    d = p.add_argument_group("data")
    d.add_argument("--data", required=True, help="dataset root")
    d.add_argument("--split", default="val")
    d.add_argument("--layout", choices=tuple(LAYOUTS), help="dataset layout (default: detect)")
    d.add_argument("--img-suffix", help="mmseg layout: image suffix, e.g. .jpg (default: any image)")
    d.add_argument("--seg-suffix", default=".png", help="mmseg layout: label suffix")
    d.add_argument("--depth-scale", type=float, help="depth PNG value / scale = metres (default: the layout's)")
    d.add_argument("--reduce-zero-label", action=argparse.BooleanOptionalAction, default=None,
                   help="map label 0 to ignore and shift the rest down (default: on for ADE20K only)")
    d.add_argument("--limit", type=int, help="evaluate only the first N samples")
    m = p.add_argument_group("metrics")
    m.add_argument("--min-depth", type=float, default=1e-3)
    m.add_argument("--max-depth", type=float, help="default: the dataset's range, else 10 (NYU)")
    m.add_argument("--alignment", choices=("none", "median", "scale_shift"),
                   help="depth alignment (default: scale_shift for relative-depth models, else none)")
    m.add_argument("--crop", choices=("garg", "eigen_kitti", "eigen_nyu"), help="depth evaluation crop")
    m.add_argument("--trimap-kernel", type=int, default=10, help="matting: erosion kernel of the trimap")
    r = p.add_argument_group("run")
    r.add_argument("--concurrency", type=int, default=1, help="requests in flight")
    r.add_argument("--shard", default="0/1", help="evaluate shard i of n (every n-th sample): i/n")
    r.add_argument("--state", help="progress file: a killed run restarted with it resumes where it stopped")
    r.add_argument("--state-every", type=float, default=2.0, help="seconds between state checkpoints")
    r.add_argument("--max-rate", type=float, help="cap requests per second (spare a shared server)")
    r.add_argument("--pictures", type=int, default=8, help="sample pictures in the report")
    r.add_argument("--out", required=True, help="report directory")
    p.set_defaults(run=run_eval)

    mp = subparsers.add_parser("merge", help="merge shard reports into one report")
    mp.add_argument("reports", nargs="+", help="report directories (or report.json files)")
    mp.add_argument("--out", required=True)
    mp.add_argument("--pictures", type=int, default=8)
    mp.set_defaults(run=run_merge)

    cp = subparsers.add_parser("compare", help="print reports' headline metrics side by side")
    cp.add_argument("reports", nargs="+", help="report directories (or report.json files)")
    cp.set_defaults(run=run_compare)


def _settings(args: argparse.Namespace):
    from .evaluate import EvalSettings, parse_shard
    from .predictors import PredictorSettings

    predictor = PredictorSettings(backend=args.backend, url=args.url, model=args.model, model_dir=args.model_dir,
                                  version=args.version, checkpoint=args.checkpoint, resize=args.resize,
                                  like=args.like, threads=args.threads)
    options = DatasetOptions(img_suffix=args.img_suffix, seg_suffix=args.seg_suffix, depth_scale=args.depth_scale,
                             reduce_zero_label=args.reduce_zero_label)
    settings = EvalSettings(data=args.data, split=args.split, layout=args.layout, dataset=options,
                            concurrency=args.concurrency, shard=parse_shard(args.shard), state=args.state,
                            out=args.out, limit=args.limit, min_depth=args.min_depth, max_depth=args.max_depth,
                            alignment=args.alignment, crop=args.crop, trimap_kernel=args.trimap_kernel,
                            num_pictures=args.pictures, state_every=args.state_every, max_rate=args.max_rate)
    return predictor, settings


def run_eval(args: argparse.Namespace) -> int:
    from .evaluate import BackendError, evaluate
    from .predictors import make_predictor
    from .report import comparison_table, write_report

    try:
        predictor_settings, settings = _settings(args)
        predictor = make_predictor(predictor_settings)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as exc:  # RuntimeError: server unreachable
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        report = evaluate(predictor, settings, progress=Progress(0, "eval"))
    except KeyboardInterrupt:
        print("interrupted" + (f"; rerun with --state {args.state} to resume" if args.state else ""), file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, BackendError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        predictor.close()
    paths = write_report(report, args.out)
    print(comparison_table([report]))
    print(f"wrote {', '.join(paths)}")
    return 0


def run_merge(args: argparse.Namespace) -> int:
    from .evaluate import collect_pictures, merge_reports
    from .report import comparison_table, read_report, write_report

    try:
        merged = merge_reports([read_report(p) for p in args.reports])
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    collect_pictures([p for p in args.reports], args.out, args.pictures)
    paths = write_report(merged, args.out)
    print(comparison_table([merged]))
    print(f"wrote {', '.join(paths)}")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from .report import comparison_table, read_report

    try:
        reports = [read_report(p) for p in args.reports]
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(comparison_table(reports), end="")
    return 0
