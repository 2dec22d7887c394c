"""Exportability rewrites: make any model, zoo or user, export with dynamic batch/H/W, exactly.

- SyncBatchNorm -> BatchNorm (same statistics; eval-mode sync BN is plain BN anyway).
- Adaptive average pooling with outputs other than 1 -> `exact_adaptive_avg_pool2d`: two small
  averaging matrices from PyTorch's own bin edges, `y = Ph @ x @ Pw^T`. Both torch exporters
  otherwise bake the traced size into the pooling (wrong numbers or a crash at other sizes).
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from typing import Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .errors import ExportError

log = logging.getLogger(__name__)
OutputSize = Union[int, None, Sequence[Optional[int]]]


def _bins(output_size: OutputSize) -> tuple[Optional[int], Optional[int]]:
    if output_size is None or isinstance(output_size, int):
        return output_size, output_size
    bh, bw = tuple(output_size)
    return bh, bw


def pooling_matrix(n: Union[int, torch.SymInt], bins: int, dtype: torch.dtype,
                   device: Optional[torch.device] = None) -> torch.Tensor:
    """(bins, n) matrix whose row i averages PyTorch's adaptive bin i of a length-n axis.

    PyTorch's bins: start = floor(i*n/b), end = ceil((i+1)*n/b); they overlap when b does not
    divide n, and every bin holds at least one element even when n < b. Built from arange and
    comparisons only, so `n` may be a symbolic size and the graph stays dynamic."""
    i = torch.arange(bins, device=device)
    start = torch.div(i * n, bins, rounding_mode="floor")
    end = torch.div((i + 1) * n + (bins - 1), bins, rounding_mode="floor")  # ceil((i+1)*n/b)
    idx = torch.arange(n, device=device)
    inside = (idx[None, :] >= start[:, None]) & (idx[None, :] < end[:, None])
    return inside.to(dtype) / (end - start).to(dtype)[:, None]


def exact_adaptive_avg_pool2d(x: torch.Tensor, output_size: OutputSize) -> torch.Tensor:
    """F.adaptive_avg_pool2d, written so that it exports with symbolic H and W.

    (..., H, W) -> (..., bh, bw). Equal to PyTorch's op up to float rounding (exact in float64)."""
    bh, bw = _bins(output_size)
    if bh == 1 and bw == 1:
        return x.mean(dim=(-2, -1), keepdim=True)
    if bh is not None:
        x = pooling_matrix(x.shape[-2], bh, x.dtype, x.device) @ x  # (bh, H) @ (..., H, W)
    if bw is not None:
        x = x @ pooling_matrix(x.shape[-1], bw, x.dtype, x.device).transpose(0, 1)  # (..., W) @ (W, bw)
    return x


class ExactAdaptiveAvgPool2d(nn.Module):
    """Drop-in for nn.AdaptiveAvgPool2d that exports with dynamic H/W."""

    def __init__(self, output_size: OutputSize) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return exact_adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AnyDimBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm for any input rank >= 2, as SyncBatchNorm accepts (BatchNorm1d/2d/3d each fix one)."""

    def _check_input_dim(self, input: torch.Tensor) -> None:  # noqa: A002 (torch's signature)
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {input.dim()}D")


def _sync_bn_to_bn(m: nn.SyncBatchNorm) -> nn.Module:
    bn = AnyDimBatchNorm(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
    bn.load_state_dict(m.state_dict())
    bn.train(m.training)
    return bn


def _replace(module: nn.Module, counts: Counter) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.SyncBatchNorm):
            setattr(module, name, _sync_bn_to_bn(child))
            counts["SyncBatchNorm -> BatchNorm"] += 1
        elif isinstance(child, nn.AdaptiveAvgPool2d):
            setattr(module, name, ExactAdaptiveAvgPool2d(child.output_size))
            counts["AdaptiveAvgPool2d -> exact pooling matrices"] += 1
        else:
            _replace(child, counts)


def rewrite_modules(model: nn.Module, probe: Optional[torch.Tensor] = None) -> tuple[nn.Module, dict[str, int]]:
    """A rewritten deep copy (the caller's model stays the untouched reference) and what changed.

    With a `probe` input, a pooling swap counts only if the forward actually calls the new module: a
    model that keeps its layers in a plain Python list as well (HF UperNet) still calls the old ones,
    which the export-time functional rewrite (`ExactPooling`) then covers."""
    try:
        clone = copy.deepcopy(model)
    except Exception as exc:  # user modules holding locks, files, ...
        raise ExportError(f"cannot copy the model to rewrite it for export: {exc}") from exc
    counts: Counter = Counter()
    _replace(clone, counts)
    pooling = "AdaptiveAvgPool2d -> exact pooling matrices"
    if probe is not None and counts[pooling]:
        used = _called(clone, ExactAdaptiveAvgPool2d, probe)
        if used is not None and used < counts[pooling]:
            log.info("%d of the swapped AdaptiveAvgPool2d modules are not called through the module tree "
                     "(e.g. held in a plain list); the export-time functional rewrite covers them",
                     counts[pooling] - used)
            counts[pooling] = used
    for what, n in counts.items():
        if n:
            log.info("rewrote %d x %s", n, what)
    return clone.eval(), {k: v for k, v in counts.items() if v}


def _called(model: nn.Module, kind: type, probe: torch.Tensor) -> Optional[int]:
    """How many modules of `kind` one forward on `probe` calls (None if the forward fails)."""
    seen: set[int] = set()
    handles = [m.register_forward_hook(lambda mod, *_: seen.add(id(mod))) for m in model.modules()
               if isinstance(m, kind)]
    try:
        with torch.no_grad():
            model.eval()(probe)
    except Exception:  # the probe is best effort: the gate runs the model properly later
        return None
    finally:
        for h in handles:
            h.remove()
    return len(seen)


_POOL_OPS = (
    F.adaptive_avg_pool2d,
    torch._C._nn.adaptive_avg_pool2d,
    torch.ops.aten.adaptive_avg_pool2d.default,
    torch.ops.aten._adaptive_avg_pool2d.default,
)


class ExactPooling(TorchFunctionMode):
    """While active, every adaptive-average-pooling call runs `exact_adaptive_avg_pool2d`.

    Module rewrites cannot reach functional calls inside a user's forward
    (`F.adaptive_avg_pool2d(x, (2, 3))`), nor aten ops in a TorchScript or .pt2 graph. A torch
    function mode sees all of them however they are spelt (also `from torch.nn.functional import
    adaptive_avg_pool2d` aliases, which patching the module attribute would miss). It is active
    only while tracing for export; the parity reference runs without it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Optional[dict] = None) -> Any:
        kwargs = kwargs or {}
        if func in _POOL_OPS:
            self.calls += 1
            x = args[0] if args else kwargs["input"]
            size = args[1] if len(args) > 1 else kwargs["output_size"]
            return exact_adaptive_avg_pool2d(x, size)
        return func(*args, **kwargs)


def torchscript_to_module(script: torch.jit.ScriptModule, sample: torch.Tensor) -> nn.Module:
    """A TorchScript model as an exportable graph module (the dynamo exporter cannot trace
    ScriptModules: their weights are not nn.Parameters)."""
    from torch._export.converter import TS2EPConverter  # the only public-ish TorchScript -> FX route

    from .sources import FrozenProgram

    try:
        program = TS2EPConverter(script, (sample,)).convert()
    except Exception as exc:  # unsupported TorchScript ops surface as assorted errors
        raise ExportError(f"cannot convert the TorchScript model for export ({str(exc).splitlines()[0]}); "
                          "export the Python model with --module pkg.mod:factory instead") from exc
    return FrozenProgram(program.module())
