"""The `eval`, `merge` and `compare` verbs of `python -m evaluation` (`python -m clients eval|merge|compare` is a thin alias for one release).

    python -m evaluation eval --backend triton --url 127.0.0.1:8001 --model seg_unet --data DIR --split val --out DIR
    python -m evaluation eval --backend onnx --model-dir model_repository/seg_unet --data DIR --out DIR
    python -m evaluation eval --backend torch --checkpoint ckpt.pt --data DIR --shard 0/2 --state s0.json --out DIR
    python -m evaluation eval --backend triton --url 127.0.0.1:8001 --model seg_logits --data DIR --out DIR \
        --mode slide --crop 512x1024 --stride 341x683 --flip --scales 0.5,0.75,1.0,1.25,1.5,1.75
    python -m evaluation merge DIR0 DIR1 --out DIR
    python -m evaluation compare DIR_TORCH DIR_TRITON

Exit codes (eval and merge), for CI: 0 success; 1 the run could not finish (data or backend
error); 2 bad arguments; 3 some inputs failed (--allow-failures accepts them); 4 no image was
evaluated; 5 ground truth holds ids the model cannot predict (--ignore-unknown-ids accepts them,
and the report's headline says so); 130 interrupted. The report is written in cases 0, 3, 4 and 5.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys


from clients.contract import parse_hw
from clients.datasets import LAYOUTS, DatasetOptions
from clients.progress import Progress

log = logging.getLogger(__name__)
EXIT_ERROR, EXIT_USAGE = 1, 2
EXIT_CODES = {"failed_inputs": 3, "nothing_evaluated": 4, "unknown_ids": 5}  # evaluate.Problem.kind -> code


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="evaluate a model (Triton, onnxruntime or PyTorch) on a labelled dataset",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--backend", choices=("triton", "onnx", "torch"), required=True,
                   help="what runs the model: a served Triton model over gRPC, an exported model directory "
                        "in onnxruntime, or a training checkpoint in PyTorch")
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
    d.add_argument("--split", default="val", help="dataset split to evaluate (default %(default)s)")
    d.add_argument("--layout", choices=tuple(LAYOUTS), help="dataset layout (default: detect)")
    d.add_argument("--img-suffix", help="mmseg layout: image suffix, e.g. .jpg (default: any image)")
    d.add_argument("--seg-suffix", default=".png", help="mmseg layout: label suffix")
    d.add_argument("--depth-scale", type=float, help="depth PNG value / scale = metres (default: the layout's)")
    d.add_argument("--reduce-zero-label", action=argparse.BooleanOptionalAction, default=None,
                   help="map label 0 to ignore and shift the rest down (default: on for ADE20K only)")
    d.add_argument("--limit", type=int, help="evaluate only the first N samples")
    d.add_argument("--label-map", metavar="FILE",
                   help='segmentation: JSON {"src id": dst id, ...} applied to the ground truth before '
                        "reduce_zero_label (e.g. to fold a dataset's ids onto the model's classes)")
    d.add_argument("--class-names", metavar="FILE",
                   help="segmentation: class names for the report, one a line (or a JSON list); "
                        "default: the model's, else the dataset's built-in names")
    m = p.add_argument_group("metrics")
    m.add_argument("--min-depth", type=float, default=1e-3,
                   help="depth: ground truth at or below this (metres) is invalid, predictions are clipped to it "
                        "(default %(default)s)")
    m.add_argument("--max-depth", type=float, help="default: the dataset's range, else 10 (NYU)")
    m.add_argument("--alignment", choices=("none", "median", "scale_shift"),
                   help="depth alignment (default: scale_shift for relative-depth models, else none)")
    m.add_argument("--crop", type=_crop, metavar="NAME|HxW",
                   help="depth: evaluation crop (garg, eigen_kitti, eigen_nyu); with --mode slide: the "
                        "window's crop HxW, e.g. 512x1024 (mmseg's test_cfg crop_size)")
    m.add_argument("--trimap-kernel", type=int, default=10,
                   help="matting: kernel of the erode/dilate band when the dataset has no trimap files (default 10)")
    w = p.add_argument_group("inference (mmseg's test modes; segmentation needs a model served with logits)")
    w.add_argument("--mode", choices=("whole", "slide"), default="whole",
                   help="whole: one request per image, letterboxed by the model's contract; slide: "
                        "sliding-window tiles of --crop every --stride, logits averaged where they overlap")
    w.add_argument("--stride", type=lambda t: parse_hw(t, "--stride"), metavar="HxW",
                   help="--mode slide: window stride, e.g. 341x683 (about 2/3 of the crop)")
    w.add_argument("--flip", action="store_true", help="--mode slide: also average the horizontally flipped image")
    w.add_argument("--scales", type=_scales, metavar="R,R,...",
                   help="--mode slide: image scale factors to average, e.g. 0.5,0.75,1.0,1.25,1.5,1.75 (default 1.0)")
    r = p.add_argument_group("run")
    r.add_argument("--concurrency", type=int, default=1, help="requests in flight")
    r.add_argument("--shard", default="0/1", help="evaluate shard i of n (every n-th sample): i/n")
    r.add_argument("--state", help="progress file: a killed run restarted with it resumes where it stopped")
    r.add_argument("--state-every", type=float, default=2.0, help="seconds between state checkpoints")
    r.add_argument("--max-rate", type=float, help="cap requests per second (spare a shared server)")
    r.add_argument("--pictures", type=int, default=8, help="sample pictures in the report")
    r.add_argument("--out", required=True, help="report directory")
    _add_verdict_flags(r)
    p.set_defaults(run=run_eval)

    mp = subparsers.add_parser("merge", help="merge shard reports into one report",
                               description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mp.add_argument("reports", nargs="+", help="report directories (or report.json files)")
    mp.add_argument("--out", required=True, help="merged report directory")
    mp.add_argument("--pictures", type=int, default=8, help="sample pictures in the merged report")
    mp.add_argument("--allow-partial", action="store_true",
                    help="merge shards that do not cover the whole split (default: refuse)")
    _add_verdict_flags(mp)
    mp.set_defaults(run=run_merge)

    cp = subparsers.add_parser("compare", help="print reports' headline metrics side by side")
    cp.add_argument("reports", nargs="+", help="report directories (or report.json files)")
    cp.set_defaults(run=run_compare)


def _add_verdict_flags(group) -> None:
    group.add_argument("--allow-failures", action="store_true",
                       help="exit 0 even when some inputs failed (they are still listed in the report)")
    group.add_argument("--ignore-unknown-ids", action="store_true",
                       help="segmentation: drop ground-truth ids the model cannot predict instead of failing "
                            "(exit 5); the report's headline says they were dropped")


def read_label_map(path: str) -> dict[int, int]:
    """{src: dst} from a JSON object file; keys and values must be integer ids."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return {int(k): int(v) for k, v in data.items()}
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"--label-map {path}: {exc}; expected a JSON object of ids, e.g. {{\"7\": 0, \"8\": 1}}") \
            from None


def read_class_names(path: str) -> tuple[str, ...]:
    """Class names from a text file (one a line) or a JSON list."""
    try:
        text = open(path, encoding="utf-8").read()
    except OSError as exc:
        raise ValueError(f"--class-names {path}: {exc}") from None
    if text.lstrip().startswith("["):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--class-names {path}: not a JSON list ({exc})") from None
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"--class-names {path}: expected one name a line, or a JSON list of strings")
    return tuple(names)


DEPTH_CROPS = ("garg", "eigen_kitti", "eigen_nyu")


def _crop(text: str):
    """--crop: a depth evaluation crop name, or a slide window's HxW."""
    if text in DEPTH_CROPS:
        return text
    try:
        return parse_hw(text, "--crop")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a depth crop ({', '.join(DEPTH_CROPS)}) or a window "
                                         f"size HxW such as 512x1024, got {text!r}") from None


def _scales(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated scale factors such as 0.5,1.0,1.5, got {text!r}") from None


def _window(args: argparse.Namespace):
    """--mode/--crop/--stride/--flip/--scales -> a SlideWindow (None for whole-image mode)."""
    from clients.window import SlideWindow

    if args.mode == "whole":
        if args.stride or args.flip or args.scales or isinstance(args.crop, tuple):
            raise ValueError("--crop HxW, --stride, --flip and --scales need --mode slide")
        return None
    if not isinstance(args.crop, tuple) or args.stride is None:
        raise ValueError("--mode slide needs --crop HxW and --stride HxW (e.g. --crop 512x1024 --stride 341x683)")
    return SlideWindow(args.crop, args.stride, flip=args.flip, scales=args.scales or (1.0,))


def _settings(args: argparse.Namespace):
    from .evaluate import EvalSettings, parse_shard
    from .predictors import PredictorSettings

    if not os.path.isdir(args.data):  # before any connection: a typo must not wait out the retries
        raise FileNotFoundError(f"--data {args.data}: no such directory (the dataset root)")
    window = _window(args)
    predictor = PredictorSettings(backend=args.backend, url=args.url, model=args.model, model_dir=args.model_dir,
                                  version=args.version, checkpoint=args.checkpoint, resize=args.resize,
                                  like=args.like, threads=args.threads, window=window)
    options = DatasetOptions(img_suffix=args.img_suffix, seg_suffix=args.seg_suffix, depth_scale=args.depth_scale,
                             reduce_zero_label=args.reduce_zero_label)
    settings = EvalSettings(data=args.data, split=args.split, layout=args.layout, dataset=options,
                            concurrency=args.concurrency, shard=parse_shard(args.shard), state=args.state,
                            out=args.out, limit=args.limit, min_depth=args.min_depth, max_depth=args.max_depth,
                            alignment=args.alignment, crop=None if window else args.crop,
                            trimap_kernel=args.trimap_kernel,
                            num_pictures=args.pictures, state_every=args.state_every, max_rate=args.max_rate,
                            label_map=read_label_map(args.label_map) if args.label_map else None,
                            class_names=read_class_names(args.class_names) if args.class_names else None,
                            ignore_unknown_ids=args.ignore_unknown_ids)
    return predictor, settings


def verdict(report: dict, allow_failures: bool) -> int:
    """Print one line per problem and return the exit code of the most serious one (0: none)."""
    from .evaluate import check_report

    problems = check_report(report, allow_failures)
    for problem in problems:
        print(f"error: {problem.message}", file=sys.stderr)
    return EXIT_CODES[problems[0].kind] if problems else 0


def run_eval(args: argparse.Namespace) -> int:
    from .evaluate import BackendError, evaluate
    from .predictors import make_predictor
    from .report import comparison_table, write_report

    try:
        predictor_settings, settings = _settings(args)
        predictor = make_predictor(predictor_settings)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as exc:  # RuntimeError: server unreachable
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        report = evaluate(predictor, settings, progress=Progress(0, "eval"))
    except KeyboardInterrupt:
        print("interrupted" + (f"; rerun with --state {args.state} to resume" if args.state else ""), file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, BackendError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        predictor.close()
    paths = write_report(report, args.out)
    print(comparison_table([report]))
    print(f"wrote {', '.join(paths)}")
    return verdict(report, args.allow_failures)


def run_merge(args: argparse.Namespace) -> int:
    from .evaluate import collect_pictures, merge_reports
    from .report import comparison_table, read_report, write_report

    try:
        merged = merge_reports([read_report(p) for p in args.reports], allow_partial=args.allow_partial)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    merged["ignore_unknown_ids"] = merged["ignore_unknown_ids"] or args.ignore_unknown_ids
    collect_pictures([p for p in args.reports], args.out, args.pictures)
    paths = write_report(merged, args.out)
    print(comparison_table([merged]))
    print(f"wrote {', '.join(paths)}")
    return verdict(merged, args.allow_failures)


def run_compare(args: argparse.Namespace) -> int:
    from .report import comparison_table, read_report

    try:
        reports = [read_report(p) for p in args.reports]
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(comparison_table(reports), end="")
    return 0
