"""Find the first module whose exported output diverges from PyTorch's, for the gate's error.

PyTorch side: forward hooks record every module's output, in the order modules finish. ONNX
side: the dynamo exporter tags each node with its module scope (`pkg.torch.onnx.name_scopes`);
the value a scope hands to the rest of the graph is that module's output, so we expose those
values as extra graph outputs and run onnxruntime once at the failing shape.
"""

from __future__ import annotations

import ast
import logging
from collections import Counter
from typing import Any, Optional

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from .wrapper import primary_output

log = logging.getLogger(__name__)
SCOPE_KEY = "pkg.torch.onnx.name_scopes"
REL_TOL = 1e-3  # relative to the module output's magnitude: far above float rounding


def _record(reference: nn.Module, x: torch.Tensor) -> tuple[list[tuple[str, str, torch.Tensor]], Counter]:
    """[(module name, class name, output)] in completion order (children before parents)."""
    records: list[tuple[str, str, torch.Tensor]] = []
    calls: Counter = Counter()
    handles = []

    def hook(name: str):
        def fn(module: nn.Module, args: Any, out: Any) -> None:
            calls[name] += 1
            try:
                tensor = primary_output(out)
            except TypeError:
                return
            # clone: an in-place op later (ReLU(inplace=True)) would change what we saw
            records.append((name, type(module).__name__, tensor.detach().clone()))
        return fn

    for name, module in reference.named_modules():
        if name:  # the root is the whole served model: its output is what already failed
            handles.append(module.register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            reference(x)
    finally:
        for h in handles:
            h.remove()
    return records, calls


def _scopes(node: onnx.NodeProto) -> tuple[str, ...]:
    for prop in node.metadata_props:
        if prop.key == SCOPE_KEY:
            try:
                return tuple(ast.literal_eval(prop.value))[:-1]  # the last entry names the op
            except (ValueError, SyntaxError):
                return ()
    return ()


def _module_outputs(model: onnx.ModelProto, names: list[str]) -> dict[str, str]:
    """module name -> the ONNX value its scope hands on (consumed outside it, or a graph output)."""
    nodes = list(model.graph.node)
    scopes = [set(_scopes(n)) for n in nodes]
    graph_outputs = {o.name for o in model.graph.output}
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for value in node.input:
            consumers.setdefault(value, []).append(i)
    found = {}
    for name in names:
        inside = [i for i, s in enumerate(scopes) if name in s]
        for i in reversed(inside):  # the last value leaving the scope is the module's output
            leaving = [v for v in nodes[i].output if v in graph_outputs
                       or any(name not in scopes[j] for j in consumers.get(v, []))]
            if leaving:
                found[name] = leaving[-1]
                break
    return found


def _display(name: str) -> str:
    """Names as the user's model spells them (the served wrapper holds it as `model`)."""
    if name == "model":
        return "the model's own forward"
    return name[len("model."):] if name.startswith("model.") else name


def first_divergence(reference: nn.Module, model_path: str, x: torch.Tensor) -> Optional[str]:
    """'name (Class): max abs err E vs PyTorch' for the first diverging module, or a sentence
    saying why none could be named."""
    records, calls = _record(reference, x)
    model = onnx.load(model_path)
    if not any(_scopes(n) for n in model.graph.node):
        return "not located (the graph carries no module scopes)"
    model = onnx.shape_inference.infer_shapes(model)
    typed = {v.name: v for v in list(model.graph.value_info) + list(model.graph.output)}
    single = [name for name, _, _ in records if calls[name] == 1]
    values = _module_outputs(model, single)
    extra = {n: v for n, v in values.items() if v in typed and v not in {o.name for o in model.graph.output}}
    for value in dict.fromkeys(extra.values()):
        model.graph.output.append(typed[value])
    try:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        wanted = [o.name for o in session.get_outputs()]
        got = dict(zip(wanted, session.run(wanted, {session.get_inputs()[0].name: x.numpy()})))
    except Exception as exc:  # the probe is best effort; the gate's own message still stands
        log.debug("divergence probe failed: %s", exc)
        return f"not located (the probe could not run: {str(exc).splitlines()[0]})"
    checked = 0
    for name, cls, ref in records:
        value = values.get(name)
        if value is None or value not in got or not ref.is_floating_point():
            continue
        out, expect = got[value], ref.numpy()
        checked += 1
        name = _display(name)
        if out.shape != expect.shape:
            return f"{name} ({cls}): output shape {out.shape} in ONNX, {expect.shape} in PyTorch"
        err = float(np.abs(out.astype(np.float64) - expect).max()) if expect.size else 0.0
        scale = float(np.abs(expect).max()) if expect.size else 0.0
        if not np.isfinite(err) or err > REL_TOL * (scale + 1e-6):
            return (f"{name} ({cls}): max abs err {err:.3g} vs PyTorch (output magnitude {scale:.3g}); "
                    "the module outputs before it match")
    if not checked:
        return "not located (no module output could be matched in the graph)"
    return f"not located (all {checked} matched module outputs agree; the difference is in the final ops)"
