"""Served-form module -> a self-contained ONNX file with dynamic batch/H/W, plus the fp16 variant
(int8: export/quantize.py).

Uses the torch 2.x dynamo exporter (torch.export underneath) with the exact-pooling mode active.
Traces with batch 2: a batch-1 sample makes torch.export specialise the batch dimension to 1.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional

import onnx
import torch
from torch.export import Dim

from clients.contract import INPUT_NAME, ModelContract

from .errors import ExportError
from .rewrites import ExactPooling
from .settings import Profile

log = logging.getLogger(__name__)
TRACE_BATCH = 2
_TWO_GB = 2**31 - 1


def sample_input(contract: ModelContract, batch: int, hw: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """A deterministic input in the served form: uint8 NHWC noise, or its normalised NCHW float."""
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (batch, hw[0], hw[1], 3), dtype=torch.uint8, generator=g)
    if contract.input_layout == "NHWC":
        return image
    mean = torch.tensor(contract.mean).view(1, 3, 1, 1)
    std = torch.tensor(contract.std).view(1, 3, 1, 1)
    return ((image.permute(0, 3, 1, 2).float() / 255.0 - mean) / std).contiguous()


def probe_input(batch: int, hw: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """A (B, 3, H, W) float input like a normalised image, for running the eager model once."""
    return torch.randn(batch, 3, hw[0], hw[1], generator=torch.Generator().manual_seed(seed))


def _dynamic_shapes(contract: ModelContract, profile: Profile) -> tuple[dict[int, Dim], ...]:
    batch = Dim("batch", min=1, max=max(TRACE_BATCH, profile.max_batch))
    dims = {0: batch}
    if not profile.static:
        # No upper bound: the graph stays valid past the profile; the gate checks the profile.
        h = Dim("height", min=max(2, profile.min_hw[0]))
        w = Dim("width", min=max(2, profile.min_hw[1]))
        dims.update(dict(zip(contract.hw_axes, (h, w))))
    return (dims,)


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def export_onnx(served: torch.nn.Module, contract: ModelContract, profile: Profile, path: Path,
                opset: Optional[int] = None) -> float:
    """Export `served` (a ServedModel) to `path`; returns the seconds it took."""
    start = time.perf_counter()
    sample = sample_input(contract, TRACE_BATCH, profile.opt_hw)
    output_names = list(contract.output_names)
    pooling = ExactPooling()
    try:
        with pooling, torch.no_grad():
            program = torch.onnx.export(
                served, (sample,), dynamo=True, input_names=[INPUT_NAME], output_names=output_names,
                dynamic_shapes=_dynamic_shapes(contract, profile), opset_version=opset,
                optimize=True, verbose=False,
            )
    except Exception as exc:  # the exporter wraps everything in its own error types
        raise ExportError(
            f"torch could not export the model ({_root_cause(exc)}); make its forward traceable by "
            "torch.export (no data-dependent Python control flow on tensor values)"
        ) from exc
    if pooling.calls:
        log.info("replaced %d functional adaptive-pooling call(s) with the exact form", pooling.calls)
    save_model(program.model_proto, path)
    seconds = time.perf_counter() - start
    log.info("exported ONNX (opset %s) to %s in %.1f s", _opset_of(program.model_proto), path.name, seconds)
    return seconds


def _opset_of(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def save_model(model: onnx.ModelProto, path: Path) -> None:
    """One self-contained file below 2 GB (the dynamo exporter would write a .onnx.data side file);
    past protobuf's 2 GB limit, the weights go to `<file>.data` beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    size = sum(t.ByteSize() for t in model.graph.initializer)
    external = size > _TWO_GB - (64 << 20)
    onnx.save_model(model, str(path), save_as_external_data=external, all_tensors_to_one_file=True,
                    location=f"{path.name}.data" if external else None)


def convert_fp16(src: Path, dst: Path) -> None:
    """fp16 weights and compute, fp32/uint8 I/O kept (keep_io_types): the contract stays the same."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    try:
        half = convert_float_to_float16(model, keep_io_types=True)
    except Exception as exc:  # the converter's failures are plain exceptions
        raise ExportError(f"fp16 conversion failed: {_root_cause(exc)}") from exc
    save_model(half, dst)
