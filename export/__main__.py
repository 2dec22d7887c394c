"""Export a trained model into a Triton model repository, checked against PyTorch first.

    .venv/bin/python -m export --help
    python -m export --name seg --repository model_repository --arch unet --checkpoint work/seg.pt
    python -m export --name mine --repository model_repository --module pkg.mod:build \\
        --task segmentation --num-classes 5 --resize letterbox:256x256
    python -m export --name ts --repository model_repository --torchscript model.ts --resize stride:32
    python -m export --name ep --repository model_repository --exported model.pt2 --resize letterbox:512x512

Third-party models (e.g. Hugging Face `transformers`) go through --module like any other:

    python -m export --name dpt --repository model_repository --module my_models.py:build_dpt \
        --task depth --depth-kind disparity --resize letterbox:256x256

Exit status: 0 published, 1 the parity gate failed (nothing published), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from typing import Optional, Sequence

from clients.cli_args import hw_arg
from clients.contract import DEPTH_KINDS, SEG_OUTPUTS, TASKS

from .errors import ExportError, ParityError
from .settings import INPUTS, ExportSettings

log = logging.getLogger("export")
# Third-party loggers that narrate every export step at INFO.
_QUIET = ("torch", "onnx_ir", "onnxscript", "onnxruntime")


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three numbers like '0.485,0.456,0.406', got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export",
        description="Export a trained PyTorch model to ONNX (or TensorRT), check it against PyTorch, "
                    "and publish it into a Triton model repository.",
    )
    p.add_argument("--name", required=True, help="model name in the repository (letters, digits, _ - .)")
    p.add_argument("--repository", required=True, help="Triton model repository directory")
    src = p.add_argument_group("model source (exactly one)")
    src.add_argument("--arch", help="zoo architecture (fcn, unet, pspnet, upernet); needs --checkpoint")
    src.add_argument("--checkpoint", help="weights: a state_dict or a checkpoint with 'model'/'state_dict'")
    src.add_argument("--module", help="user model as pkg.mod:factory or file.py:factory (class or function)")
    src.add_argument("--torchscript", help="a TorchScript file (torch.jit.save)")
    src.add_argument("--exported", help="a torch.export program (.pt2, torch.export.save)")
    meta = p.add_argument_group("metadata (default: the checkpoint's meta)")
    meta.add_argument("--task", choices=TASKS, help="what the model predicts (default: meta, else segmentation)")
    meta.add_argument("--num-classes", type=int,
                      help="segmentation classes (default: meta, else the model's output channels)")
    meta.add_argument("--width", type=int, help="zoo width (default: read off the checkpoint)")
    meta.add_argument("--mean", type=_floats, help="RGB mean on [0, 1], e.g. 0.485,0.456,0.406")
    meta.add_argument("--std", type=_floats, help="RGB std on [0, 1], e.g. 0.229,0.224,0.225")
    meta.add_argument("--class-names", help="file with one class name a line")
    meta.add_argument("--pad-value", type=int, help="letterbox pad level (0..255)")
    meta.add_argument("--depth-kind", choices=DEPTH_KINDS,
                      help="metric (metres after --depth-scale), relative (depth up to scale) or disparity "
                           "(relative inverse depth: MiDaS, DPT, Depth Anything); default metric")
    meta.add_argument("--depth-scale", type=float, help="served depth x scale = metres (zoo: 1)")
    form = p.add_argument_group("served form")
    form.add_argument("--input", choices=INPUTS, default="uint8",
                      help="uint8 NHWC RGB normalised in the graph (default), or normalised float32 NCHW "
                           "('float' is an alias of float32)")
    form.add_argument("--output", choices=tuple(SEG_OUTPUTS), default=next(iter(SEG_OUTPUTS)),
                      help="segmentation outputs (default labels: argmax in the graph)")
    form.add_argument("--resize", help="letterbox:HxW (default: the training size) or stride:N")
    form.add_argument("--static", action="store_true",
                      help="fixed H/W graph, dynamic batch (for TensorRT); letterbox mode falls back to it "
                           "by itself when a dynamic graph fails the gate")
    form.add_argument("--max-batch", type=int, default=8, help="Triton max_batch_size (default 8)")
    form.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    form.add_argument("--min-size", type=hw_arg, help="profile minimum HxW (default 32x32)")
    form.add_argument("--max-size", type=hw_arg,
                      help="profile maximum HxW (default max(2 x opt, 384)); in stride mode also the largest "
                           "image one request may carry (published as pixelport.max_size)")
    form.add_argument("--instances", type=int,
                      help="Triton instance count (default: 2 on CPU, each with all the cores; 1 per GPU)")
    prec = p.add_argument_group("precision")
    prec.add_argument("--fp16", action="store_true", help="fp16 weights/compute, same I/O types")
    prec.add_argument("--int8", action="store_true",
                      help="ONNX Runtime static int8 (per-channel, u8 activations x s8 weights); layers that "
                           "cost accuracy stay fp32 until the gate's budget is met")
    prec.add_argument("--int8-format", choices=("qdq", "qoperator"), default="qdq",
                      help="QDQ (default; onnxruntime fuses it into int8 kernels) or QOperator (QLinearConv ...)")
    prec.add_argument("--int8-calibration", choices=("minmax", "entropy", "percentile"), default="minmax",
                      help="how activation ranges are calibrated (default minmax)")
    prec.add_argument("--int8-max-fp32-layers", type=int, default=8,
                      help="most layers the int8 search may keep in fp32 (default 8; 0: all int8 or fail)")
    prec.add_argument("--calibration", help="images (or a dataset root) for --int8 and the accuracy check")
    prec.add_argument("--samples", type=int, default=8, help="sample images for the fp16/int8 check")
    prec.add_argument("--atol", type=float, help="parity absolute tolerance (fp32 default 1e-4)")
    prec.add_argument("--rtol", type=float, help="parity relative tolerance (fp32 default 1e-3)")
    pub = p.add_argument_group("publishing")
    pub.add_argument("--version", type=int, help="version number (default: the next one)")
    pub.add_argument("--force", action="store_true", help="replace an existing --version")
    pub.add_argument("--gpu", action="store_true", help="KIND_GPU + ONNX Runtime TensorRT accelerator")
    pub.add_argument("--tensorrt", action="store_true", help="build a TensorRT plan (needs tensorrt)")
    pub.add_argument("--report", help="write the parity report (JSON) here, whether the gate passes or not")
    pub.add_argument("--allow-degenerate", action="store_true",
                     help="publish even when the PyTorch reference output is near-zero or near-constant at "
                          "every gate shape (matching it proves little; by default the gate fails)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging; tracebacks on errors")
    return p


def settings_from_args(args: argparse.Namespace) -> ExportSettings:
    fields = {k: v for k, v in vars(args).items() if k != "verbose" and not k.startswith("int8_")}
    return ExportSettings(**fields)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.INFO if args.verbose else logging.WARNING)
    if not args.verbose:
        # torch.onnx warns about optional torchvision ops and deprecations on every export.
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
    from .api import export_model  # torch loads here, after argparse answered --help
    from .quantize import Int8Settings

    try:
        int8 = Int8Settings(format=args.int8_format, calibration=args.int8_calibration,
                            max_fp32_layers=args.int8_max_fp32_layers)
        result = export_model(settings_from_args(args), int8)
    except ParityError as exc:
        if args.verbose:
            raise
        print(f"export: error: {exc}", file=sys.stderr)
        return 1
    except (ExportError, ValueError, FileNotFoundError) as exc:
        if args.verbose:
            raise
        print(f"export: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # whatever the user's model does: one line, never a traceback without -v
        if args.verbose:
            raise
        first = str(exc).strip().splitlines()
        print(f"export: error: unexpected {type(exc).__name__}: {first[0] if first else ''} "
              "(run with -v for the traceback)", file=sys.stderr)
        return 2
    print(result.summary())
    print(json.dumps({"model_dir": str(result.model_dir), "version": result.version,
                      "timings_s": {k: round(v, 2) for k, v in result.timings.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
