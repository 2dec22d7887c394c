"""Checkpoints: what the trainer writes and what export reads, with clear errors on a mismatch.

A pixelport checkpoint is a dict: `model` (state_dict), `optimizer`, `scheduler`, `epoch`, `rng`,
and `meta` (arch, task, num_classes, class_names, palette, mean, std, input_size, pad_value,
ignore_index, depth_scale, depth_kind). The common wrappers (`state_dict`, `model`, mmseg-style
`meta`) and plain state_dicts are accepted too.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the architecture."""


def read_checkpoint(path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(state_dict, meta, whole checkpoint). Loads with weights_only=True: never runs pickled code."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise CheckpointError(f"cannot load checkpoint {path!r}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint {path!r} holds a {type(ckpt).__name__}, not a dict/state_dict")
    meta = ckpt.get("meta") if isinstance(ckpt.get("meta"), dict) else {}
    for key in ("state_dict", "model"):
        if isinstance(ckpt.get(key), dict):
            return _strip_prefix(ckpt[key]), meta, ckpt
    if all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return _strip_prefix(ckpt), meta, ckpt
    raise CheckpointError(
        f"checkpoint {path!r} has no weights: expected a state_dict or a dict with 'state_dict'/'model' "
        f"(top-level keys: {sorted(ckpt)[:8]})"
    )


def _strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # DataParallel/DDP wrap every key in 'module.'.
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], hint: str = "") -> None:
    """Strict load that names what does not fit, instead of torch's wall of keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (first: {missing[0]!r})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (first: {unexpected[0]!r})")
        if mismatched:
            k = mismatched[0]
            parts.append(
                f"{len(mismatched)} shape mismatches (first: {k!r} is {tuple(state[k].shape)} in the "
                f"checkpoint, {tuple(own[k].shape)} in the model)"
            )
        raise CheckpointError(
            "checkpoint does not match the architecture: " + "; ".join(parts)
            + (f"; {hint}" if hint else "; check --arch, --task and --num-classes")
        )
    model.load_state_dict(state, strict=True)
