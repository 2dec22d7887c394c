"""The served form as a torch module: what the published ONNX graph computes, end to end.

uint8 NHWC RGB (or normalised float NCHW) in; normalisation, the model, and the task's output
(argmax labels, confidence, logits, depth or alpha at the input resolution) inside the graph.
The parity gate runs this same wrapper around the untouched model as its reference.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from clients.contract import ModelContract

from .errors import ExportError

_TORCH_DTYPE = {"uint8": torch.uint8, "int32": torch.int32}


def primary_output(out: Any) -> torch.Tensor:
    """The dense tensor of a model's output: itself, dict['out'] (torchvision), or the first item."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        if "out" in out:
            return out["out"]
        out = list(out.values())
    if isinstance(out, (list, tuple)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise TypeError(f"the model returned {type(out).__name__}; pixelport needs a (B, C, H, W) tensor "
                    "(or a dict with 'out', or a tuple whose first item is one)")


class ServedModel(nn.Module):
    """(B, H, W, 3) uint8 | (B, 3, H, W) float32 -> the contract's outputs, in output_specs order."""

    def __init__(self, model: nn.Module, contract: ModelContract, resize_output: bool = False) -> None:
        super().__init__()
        self.model = model
        self.task = contract.task
        # NHWC is the uint8 served form: normalisation (and the layout change) happen in the graph
        self.nhwc_input = contract.input_layout == "NHWC"
        self.output_names = list(contract.output_names)
        self.label_dtype = _TORCH_DTYPE[contract.label_dtype]
        # Models whose output is below the input resolution are upsampled in-graph, as mmseg does:
        # the contract promises outputs at the network input size.
        self.resize_output = resize_output
        mean = torch.tensor(contract.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(contract.std, dtype=torch.float32).view(1, 3, 1, 1)
        # (x/255 - mean)/std folded into one multiply-add: x * scale + shift.
        self.register_buffer("scale", 1.0 / (255.0 * std), persistent=False)
        self.register_buffer("shift", -mean / std, persistent=False)

    def normalise(self, image: torch.Tensor) -> torch.Tensor:
        if not self.nhwc_input:
            return image  # the raw form: the client sends normalised NCHW float32
        x = image.permute(0, 3, 1, 2).to(torch.float32)  # (B, H, W, 3) -> (B, 3, H, W)
        return x * self.scale + self.shift

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.normalise(image)
        out = primary_output(self.model(x))
        if out.ndim == 3:  # (B, H, W) single-channel heads
            out = out[:, None]
        if self.resize_output:
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        if self.task == "depth":
            return (out[:, 0],)  # (B, 1, H, W) -> (B, H, W) metres
        if self.task == "matting":
            return (out[:, 0].clamp(0.0, 1.0),)
        results = []
        for name in self.output_names:
            if name == "labels":
                results.append(out.argmax(dim=1).to(self.label_dtype))  # (B, C, H, W) -> (B, H, W)
            elif name == "confidence":
                # max softmax = 1 / sum(exp(l - max l)): no full softmax tensor needed.
                top = out.amax(dim=1, keepdim=True)
                results.append(1.0 / torch.exp(out - top).sum(dim=1))
            else:
                results.append(out)
        return tuple(results)


def probe_output(model: nn.Module, sample: torch.Tensor) -> tuple[int, bool]:
    """Run the eager model once on a (B, 3, H, W) float sample: (output channels, whether the
    output comes out below the input size, so that the served graph must upsample it)."""
    try:
        with torch.no_grad():
            out = primary_output(model(sample))
    except TypeError as exc:
        raise ExportError(str(exc)) from exc
    except Exception as exc:  # the user's forward failing on a (B, 3, H, W) float input
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ExportError(f"the model fails on a {tuple(sample.shape)} float input: "
                          f"{type(exc).__name__}: {first}") from exc
    if out.ndim not in (3, 4):
        raise ExportError(f"the model outputs shape {tuple(out.shape)}; expected (B, C, H, W) or (B, H, W)")
    channels = out.shape[1] if out.ndim == 4 else 1
    return int(channels), tuple(out.shape[-2:]) != tuple(sample.shape[-2:])


def check_channels(channels: int, contract: ModelContract) -> None:
    want = contract.num_classes if contract.task == "segmentation" else 1
    if channels != want:
        raise ExportError(f"the model outputs {channels} channel(s) but a {contract.task} model "
                          f"{'with ' + str(want) + ' classes ' if contract.task == 'segmentation' else ''}"
                          f"needs {want}; check --task and --num-classes")
