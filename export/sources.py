"""Load the model to export from one of four sources, with errors that say what to fix.

Zoo arch + checkpoint, `pkg.mod:factory` (+ optional checkpoint), TorchScript, or a torch.export
`.pt2`. Returns the eager model (the parity gate's reference) and the checkpoint's `meta`.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import os
import sys
import zlib
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn

from models import create_model, list_models
from models.checkpoint import CheckpointError, load_weights, read_checkpoint

from .errors import ExportError
from .settings import ExportSettings

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """An eval-mode model plus what its checkpoint says about it."""

    module: nn.Module  # (B, 3, H, W) normalised float -> dense output; the parity reference
    kind: str  # "arch" | "module" | "torchscript" | "exported"
    meta: dict[str, Any] = field(default_factory=dict)
    task: Optional[str] = None  # known from the zoo checkpoint (else from flags/meta)
    num_classes: Optional[int] = None


class FrozenProgram(nn.Module):
    """Holds `ExportedProgram.module()`: its graph fixed train/eval mode at export time and its
    GraphModule refuses `.train()`/`.eval()`, so this holder makes both a no-op."""

    def __init__(self, graph_module: nn.Module,
                 input_ranges: Optional[dict[int, tuple[int, Optional[int]]]] = None) -> None:
        super().__init__()
        self.program = graph_module
        # input axis -> (min, max or None): the sizes the program was exported for. Tracing it again
        # for wider ranges fails on its own range checks, and the ONNX exporter then traces a second
        # time with the ranges narrowed to these; asking for them up front saves that failed trace.
        self.input_ranges = input_ranges or {}

    def train(self, mode: bool = True) -> "FrozenProgram":
        return self

    def forward(self, x: torch.Tensor) -> Any:
        return self.program(x)


def load_model(settings: ExportSettings) -> LoadedModel:
    source = settings.source()
    loader = {"arch": _load_zoo, "module": _load_user_module, "torchscript": _load_torchscript,
              "exported": _load_exported}[source]
    loaded = loader(settings)
    loaded.module.eval()
    return loaded


def _need_file(path: str, flag: str) -> None:
    if not os.path.isfile(path):
        raise ExportError(f"{flag} {path!r}: no such file")


def _read(path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    _need_file(path, "--checkpoint")
    try:
        state, meta, _ = read_checkpoint(path)
    except CheckpointError as exc:
        raise ExportError(str(exc)) from exc
    return state, meta


def infer_width(state: dict[str, torch.Tensor]) -> Optional[int]:
    """The zoo's width is the output channel count of the first conv, the one reading RGB."""
    weight = state.get("encoder.stages.0.0.0.weight")
    return int(weight.shape[0]) if weight is not None and weight.ndim == 4 else None


def infer_out_channels(state: dict[str, torch.Tensor]) -> Optional[int]:
    weight = state.get("classifier.weight")
    return int(weight.shape[0]) if weight is not None else None


def zoo_task_and_classes(settings: ExportSettings, meta: dict[str, Any],
                         state: dict[str, torch.Tensor]) -> tuple[str, int]:
    """Task and class count: flags first, then meta, then the classifier's shape."""
    out_channels = infer_out_channels(state)
    task = settings.task or meta.get("task")
    if task is None:
        if out_channels == 1:
            raise ExportError("the checkpoint has no meta.task and a 1-channel head: "
                              "pass --task depth or --task matting")
        task = "segmentation"
    num_classes = settings.num_classes or int(meta.get("num_classes") or 0) or (out_channels or 0)
    if task != "segmentation":
        num_classes = 1
    return task, num_classes


def _load_zoo(settings: ExportSettings) -> LoadedModel:
    arch = settings.arch
    if arch not in list_models():
        raise ExportError(f"unknown arch {arch!r}; known archs: {', '.join(list_models())}")
    state, meta = _read(settings.checkpoint)
    task, num_classes = zoo_task_and_classes(settings, meta, state)
    width = settings.width or meta.get("width") or infer_width(state) or 16
    try:
        model = create_model(arch, task=task, num_classes=num_classes, width=int(width))
    except ValueError as exc:
        raise ExportError(str(exc)) from exc
    try:
        load_weights(model, state, hint=_arch_hint(arch, meta, state, task, num_classes, int(width)))
    except CheckpointError as exc:
        raise ExportError(f"--checkpoint {settings.checkpoint!r}: {exc}") from exc
    log.info("loaded zoo %s (%s, %d output channels, width %d) from %s", arch, task,
             num_classes, width, settings.checkpoint)
    return LoadedModel(model, "arch", dict(meta), task, num_classes)


def _arch_hint(arch: str, meta: dict[str, Any], state: dict[str, torch.Tensor], task: str,
               num_classes: int, width: int) -> str:
    """'did you mean --arch X?': from the meta, else the zoo arch whose keys fit the weights."""
    if meta.get("arch") and meta["arch"] != arch:
        return f"the checkpoint's meta says arch={meta['arch']!r}: did you mean --arch {meta['arch']}?"
    keys = set(state)
    for other in list_models():
        if other == arch:
            continue
        if set(create_model(other, task=task, num_classes=num_classes, width=width).state_dict()) == keys:
            return f"its keys fit arch {other!r}: did you mean --arch {other}?"
    return "check --arch, --task and --num-classes"


def _import_factory(spec: str) -> Any:
    """`pkg.mod:factory` (importable) or `path/to/file.py:factory`."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise ExportError(f"--module must look like 'pkg.mod:factory' or 'file.py:factory', got {spec!r}")
    try:
        if target.endswith(".py") or os.sep in target:
            _need_file(target, "--module")
            name = f"_pixelport_user_{zlib.crc32(os.path.abspath(target).encode()):08x}"
            mod_spec = importlib.util.spec_from_file_location(name, target)
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[name] = module  # dataclasses and pickling look the module up by name
            mod_spec.loader.exec_module(module)
        else:
            if "" not in sys.path and os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())  # as `python -m` does: user packages in the cwd import
            module = importlib.import_module(target)
    except ImportError as exc:
        raise ExportError(f"--module {spec!r}: cannot import {target!r}: {exc}") from exc
    except Exception as exc:  # the user's module body raised while importing
        raise ExportError(f"--module {spec!r}: importing {target!r} failed: {type(exc).__name__}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ExportError(f"--module {spec!r}: {target!r} has no attribute {attr!r}") from None


def _load_user_module(settings: ExportSettings) -> LoadedModel:
    factory = _import_factory(settings.module)
    if not callable(factory):
        raise ExportError(f"--module {settings.module!r} is not a class or function")
    state, meta = _read(settings.checkpoint) if settings.checkpoint else (None, {})
    # inspect tells a class from a function; both get the settings their signature asks for.
    kind = "class" if inspect.isclass(factory) else "function"
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # some builtins and C extensions have no signature
        params = {}
    offered = {"num_classes": settings.num_classes or meta.get("num_classes"),
               "task": settings.task or meta.get("task")}
    kwargs = {k: v for k, v in offered.items() if v is not None and k in params}
    try:
        model = factory(**kwargs)
    except Exception as exc:  # the user's constructor
        raise ExportError(f"--module {settings.module!r}: calling the {kind} with {kwargs} failed: "
                          f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ExportError(f"--module {settings.module!r} returned a {type(model).__name__}, not a torch.nn.Module")
    if state is not None:
        try:
            load_weights(model, state, hint=f"does {settings.module} build the network these weights came from?")
        except CheckpointError as exc:
            raise ExportError(f"--checkpoint {settings.checkpoint!r}: {exc}") from exc
    log.info("built %s from the %s %s", type(model).__name__, kind, settings.module)
    return LoadedModel(model, "module", dict(meta))


def _load_torchscript(settings: ExportSettings) -> LoadedModel:
    _need_file(settings.torchscript, "--torchscript")
    try:
        model = torch.jit.load(settings.torchscript, map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError/ValueError for non-TorchScript files
        raise ExportError(f"--torchscript {settings.torchscript!r} is not a TorchScript file: "
                          f"{str(exc).splitlines()[0]}") from exc
    return LoadedModel(model, "torchscript")


def _load_exported(settings: ExportSettings) -> LoadedModel:
    _need_file(settings.exported, "--exported")
    try:
        program = torch.export.load(settings.exported)
    except Exception as exc:  # a zip that is not a .pt2, or a version mismatch
        raise ExportError(f"--exported {settings.exported!r} is not a torch.export .pt2 file: "
                          f"{str(exc).splitlines()[0]}") from exc
    _check_program_input(program, settings)
    return LoadedModel(FrozenProgram(program.module(), _input_ranges(program)), "exported")


def _input_ranges(program: "torch.export.ExportedProgram") -> dict[int, tuple[int, Optional[int]]]:
    """The program's own range for each dynamic axis of its image input (best effort: {} if unknown)."""
    ranges: dict[int, tuple[int, Optional[int]]] = {}
    try:
        node = _image_placeholder(program)
        for axis, size in enumerate(node.meta["val"].shape):
            if not isinstance(size, torch.SymInt):
                continue
            vr = program.range_constraints.get(size.node.expr)
            lower = _bound(vr.lower) if vr is not None else None
            if lower is not None:
                ranges[axis] = (lower, _bound(vr.upper))
    except Exception as exc:  # only an optimisation: without it torch narrows the ranges itself
        log.debug("cannot read the program's input ranges: %s", exc)
        return {}
    return ranges


def _bound(value: Any) -> Optional[int]:
    """A range end as an int; None for torch's infinities (whose is_finite says True)."""
    try:
        bound = int(value)
    except Exception:  # int_oo / oo
        return None
    return bound if abs(bound) < 2**62 else None


def _image_placeholder(program: "torch.export.ExportedProgram") -> Any:
    user_inputs = [s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    return next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == user_inputs[0])


def _check_program_input(program: "torch.export.ExportedProgram", settings: ExportSettings) -> None:
    """A .pt2 bakes its input shape unless it was exported with dynamic_shapes: say so up front."""
    user_inputs = [s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    if len(user_inputs) != 1:
        raise ExportError(f"--exported program takes {len(user_inputs)} inputs; pixelport serves models "
                          "with one (B, 3, H, W) image input")
    node = _image_placeholder(program)
    shape = tuple(node.meta["val"].shape)
    if len(shape) != 4:
        raise ExportError(f"--exported program's input has shape {shape}; expected (B, 3, H, W)")
    fixed = [d for d, size in zip("BCHW", shape) if isinstance(size, int) and d != "C"]
    if ("H" in fixed or "W" in fixed) and not settings.static:
        raise ExportError(
            f"--exported program has a fixed input size {shape}: re-export it with "
            "dynamic_shapes for H and W (torch.export.Dim), or pass --static with "
            f"--resize letterbox:{shape[2]}x{shape[3]}"
        )
    if "B" in fixed:
        raise ExportError(f"--exported program has a fixed batch of {shape[0]}: re-export it with a dynamic "
                          "batch dimension (torch.export.Dim('batch')) so Triton can batch requests")
