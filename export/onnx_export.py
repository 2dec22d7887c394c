"""Served-form module -> a self-contained ONNX file with dynamic batch/H/W, plus the fp16 variant
(int8: export/quantize.py).

Uses the torch 2.x dynamo exporter (torch.export underneath) with the exact-pooling mode active.
Traces with batch 2: a batch-1 sample makes torch.export specialise the batch dimension to 1.
"""

from __future__ import annotations

import contextlib
import linecache
import logging
import os
import re
import sysconfig
import time
import traceback
from pathlib import Path
from typing import Iterator, Optional

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


def _dynamic_shapes(contract: ModelContract, profile: Profile,
                    served: Optional[torch.nn.Module] = None) -> tuple[dict[int, Dim], ...]:
    # max >= 3: a range of [1, 2] traced at 2 collapses to the constant 2 (sizes 0 and 1 are specialised)
    batch = (1, max(TRACE_BATCH + 1, profile.max_batch))
    # No upper bound on H/W: the graph stays valid past the profile; the gate checks the profile.
    height, width = ((max(2, profile.min_hw[0]), None), (max(2, profile.min_hw[1]), None))
    # A .pt2 source carries its own ranges: narrow to them (what the ONNX exporter would otherwise
    # do itself after a failed first trace), when the traced sizes stay inside
    own = getattr(getattr(served, "model", None), "input_ranges", None) or {}
    trace = {0: TRACE_BATCH, 2: profile.opt_hw[0], 3: profile.opt_hw[1]}  # the inner model's NCHW axes
    batch = _narrowed(batch, own.get(0), trace[0])
    height = _narrowed(height, own.get(2), trace[2])
    width = _narrowed(width, own.get(3), trace[3])
    dims = {0: Dim("batch", min=batch[0], max=batch[1])}
    if not profile.static:
        h = Dim("height", min=height[0], max=height[1]) if height[1] is not None else Dim("height", min=height[0])
        w = Dim("width", min=width[0], max=width[1]) if width[1] is not None else Dim("width", min=width[0])
        dims.update(dict(zip(contract.hw_axes, (h, w))))
    return (dims,)


def _narrowed(wanted: tuple[int, Optional[int]], own: Optional[tuple[int, Optional[int]]],
              traced: int) -> tuple[int, Optional[int]]:
    """`wanted` intersected with the model's `own` range, unless that would exclude the traced size
    or leave it the only size (then torch decides, as without it)."""
    if own is None:
        return wanted
    lo = max(wanted[0], own[0])
    hi = own[1] if wanted[1] is None else wanted[1] if own[1] is None else min(wanted[1], own[1])
    if lo > traced or (hi is not None and (hi < traced or hi <= max(lo, traced - 1, 2))):
        return wanted
    return lo, hi


class _GuardLog(logging.Handler):
    """Collects torch's "[guard added]" records (the condition and the user's source line) and the
    symbols it creates for the input sizes, while torch.export traces."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.guards: list[tuple[str, Optional[traceback.FrameSummary]]] = []  # (record, the user's frame)
        self.symbols: dict[str, int] = {}  # symbol -> input axis

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if "[guard added]" in msg:
            # torch names the innermost frame, often its own reference ops; the user's line is the
            # innermost frame outside torch and the standard library, on the stack right now
            self.guards.append((msg, _user_frame()))
        elif (m := re.match(r"create_symbol (\w+) = \d+ for L\['\w+'\]\.size\(\)\[(\d+)\]", msg)):
            self.symbols[m.group(1)] = int(m.group(2))


@contextlib.contextmanager
def _guard_log() -> Iterator[_GuardLog]:
    logger = logging.getLogger("torch.fx.experimental.symbolic_shapes")
    handler = _GuardLog()
    saved = (logger.handlers, logger.level, logger.propagate)
    logger.handlers, logger.propagate = [handler], False  # collect quietly; torch's own handler would print
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.handlers, logger.propagate = saved[0], saved[2]
        logger.setLevel(saved[1])


_NOT_USER = tuple(os.path.dirname(p) + os.sep for p in (torch.__file__, logging.__file__, contextlib.__file__)) + (
    sysconfig.get_paths()["stdlib"] + os.sep, os.path.dirname(__file__) + os.sep)  # and export itself


def _user_frame() -> Optional[traceback.FrameSummary]:
    for frame in reversed(traceback.extract_stack()):
        if not frame.filename.startswith(_NOT_USER):
            return frame
    return None


def _short_path(path: str) -> str:
    """A path as a user recognises it: relative to the cwd, or from the installed package on."""
    marker = "site-packages" + os.sep
    if marker in path:
        return path.split(marker, 1)[1]
    return os.path.relpath(path) if path.startswith(os.getcwd() + os.sep) else path


def _describe_guard(text: str, frame: Optional[traceback.FrameSummary], names: dict[str, str]) -> Optional[str]:
    """'width > 100 at tests/export/user_models.py:65 in forward: `if x.shape[-1] > 100:`'."""
    m = re.match(r"eval (.+?) \[guard added\]", text)
    if not m:
        return None
    expr = m.group(1)
    if expr.startswith("["):  # "[guard suppressed]": torch did not keep it
        return None
    if not set(re.findall(r"\bs\d+\b", expr)) & set(names):
        return None  # a guard on internal sizes only
    for sym, name in names.items():
        expr = re.sub(rf"\b{sym}\b", name, expr)
    if frame is None:
        return expr
    source = linecache.getline(frame.filename, frame.lineno or 0).strip()
    where = f"{_short_path(frame.filename)}:{frame.lineno} in {frame.name}"
    return f"{expr} at {where}" + (f": `{source}`" if source else "")


def size_guards(served: torch.nn.Module, contract: ModelContract, profile: Profile,
                limit: int = 3) -> list[str]:
    """Why torch.export cannot keep H/W symbolic: the guards the model's code puts on the input
    size, each with its source line (empty when torch.export keeps the sizes dynamic)."""
    sample = sample_input(contract, TRACE_BATCH, profile.opt_hw)
    with _guard_log() as found, ExactPooling(), torch.no_grad():
        try:
            torch.export.export(served, (sample,), dynamic_shapes=_dynamic_shapes(contract, profile, served),
                                strict=False)
        except Exception as exc:  # a constraint violation is what we are looking for; others say little
            log.debug("torch.export failed while looking for size guards: %s", _root_cause(exc))
    axis_names = {contract.hw_axes[0]: "height", contract.hw_axes[1]: "width", 0: "batch"}
    names = {sym: axis_names[axis] for sym, axis in found.symbols.items() if axis in axis_names}
    described = [d for d in (_describe_guard(g, frame, names) for g, frame in found.guards) if d]
    hw = [d for d in described if "height" in d or "width" in d]
    # the guards that pin a size (Eq, or a comparison with a number) first: those are what torch.export
    # refuses; Ne/Mod/Max guards mostly come with reshapes and hold for every size
    ranked = sorted(dict.fromkeys(hw), key=_pinning_rank)
    pinning = [g for g in ranked if _pinning_rank(g) < 2]
    return (pinning or ranked)[:limit]


def _pinning_rank(guard: str) -> int:
    expr = guard.split(" at ", 1)[0]
    if expr.startswith("Eq(") or "==" in expr:
        return 0
    if "Max(" not in expr and "Mod(" not in expr and re.search(r"[<>]=? *-?\d|\d *[<>]", expr):
        return 1
    return 2


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
                dynamic_shapes=_dynamic_shapes(contract, profile, served), opset_version=opset,
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


def pin_input_hw(path: Path, contract: ModelContract, hw: tuple[int, int]) -> None:
    """Fix the input's H/W dims of an exported graph to `hw` (the batch stays dynamic): the graph a
    letterbox model is served with when only its traced size is right."""
    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for axis, size in zip(contract.hw_axes, hw):
        dims[axis].Clear()
        dims[axis].dim_value = int(size)
    save_model(model, path)


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
