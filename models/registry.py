"""Model registry: `create_model(arch, task=..., num_classes=...)`, as timm's `create_model`."""

from __future__ import annotations

from typing import Callable

from torch import nn

TASKS = ("segmentation", "depth", "matting")
_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
# Which tasks each architecture supports (segmentation everywhere; depth/matting where registered).
_TASKS_OF: dict[str, tuple[str, ...]] = {}


def register_model(name: str, tasks: tuple[str, ...] = TASKS) -> Callable:
    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise RuntimeError(f"model {name!r} registered twice")
        _REGISTRY[name] = factory
        _TASKS_OF[name] = tasks
        return factory

    return wrap


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(arch: str, task: str = "segmentation", num_classes: int = 0, **kwargs) -> nn.Module:
    """Build a zoo model. Segmentation needs `num_classes`; depth and matting output one channel."""
    if arch not in _REGISTRY:
        raise ValueError(f"unknown arch {arch!r}; known archs: {', '.join(list_models())}")
    if task not in _TASKS_OF[arch]:
        raise ValueError(f"arch {arch!r} supports tasks {_TASKS_OF[arch]}, not {task!r}")
    if task == "segmentation" and num_classes <= 0:
        raise ValueError("segmentation needs num_classes > 0 (pass num_classes=...)")
    out_channels = num_classes if task == "segmentation" else 1
    return _REGISTRY[arch](task=task, out_channels=out_channels, **kwargs)
