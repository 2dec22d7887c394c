"""The served contract of an export: flags first, then the checkpoint's `meta`, then defaults.

Zoo checkpoints carry task, classes, mean/std, palette, input size and pad value in `meta`;
user models get them from flags (`--task`, `--num-classes`, `--mean`, `--std`, `--class-names`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from clients.contract import DEFAULT_OUTPUT_KIND, ContractError, ModelContract, Resize, checked_palette

from .errors import ExportError
from .settings import ExportSettings

log = logging.getLogger(__name__)


def read_class_names(path: str) -> tuple[str, ...]:
    file = Path(path)
    if not file.is_file():
        raise ExportError(f"--class-names {path!r}: no such file (one class name a line)")
    return tuple(line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip())


def resolve_task(settings: ExportSettings, meta: dict[str, Any]) -> str:
    return settings.task or meta.get("task") or "segmentation"


def resolve_resize(settings: ExportSettings, meta: dict[str, Any]) -> Resize:
    resize = settings.parsed_resize()
    if resize is not None:
        return resize
    size = meta.get("input_size")
    if size:
        h, w = (int(v) for v in (size if len(size) == 2 else (size[0], size[0])))
        return Resize("letterbox", h, w)
    raise ExportError("no input size known: pass --resize letterbox:HxW (the training size) or stride:N "
                      "(the checkpoint has no meta.input_size)")


def _triple(value: Optional[Any], meta_value: Optional[Any], default: tuple[float, ...]) -> tuple[float, float, float]:
    chosen = value if value is not None else meta_value if meta_value else default
    return tuple(float(v) for v in chosen)  # type: ignore[return-value]


def _default(name: str) -> Any:
    """A ModelContract field's default: the contract owns them, export does not restate them."""
    return ModelContract.__dataclass_fields__[name].default


def _pick(flag: Optional[Any], meta: dict[str, Any], key: str) -> Any:
    """The flag, else the checkpoint's meta, else the contract's default."""
    if flag is not None:
        return flag
    value = meta.get(key)
    return _default(key) if value is None or value == "" else value


def build_contract(settings: ExportSettings, meta: dict[str, Any], task: str, num_classes: int) -> ModelContract:
    """The ModelContract to publish; raises ExportError naming the flag to fix."""
    seg = task == "segmentation"
    class_names: tuple[str, ...] = ()
    if seg:
        if settings.class_names:
            class_names = read_class_names(settings.class_names)
        elif meta.get("class_names"):
            class_names = tuple(str(n) for n in meta["class_names"])
        if class_names and len(class_names) != num_classes:
            raise ExportError(f"{len(class_names)} class names for a model with {num_classes} classes; "
                              "fix --class-names or --num-classes")
    if settings.mean is None and not meta.get("mean"):
        log.info("no mean/std given or in the checkpoint: using ImageNet's (pass --mean/--std otherwise)")
    resize = resolve_resize(settings, meta)
    try:
        palette = checked_palette(meta.get("palette") or (), num_classes) if seg else ()
        return ModelContract(
            name=settings.name,
            task=task,
            resize=resize,
            input_dtype=settings.input,
            output_kind=settings.output if seg else DEFAULT_OUTPUT_KIND[task],
            mean=_triple(settings.mean, meta.get("mean"), _default("mean")),
            std=_triple(settings.std, meta.get("std"), _default("std")),
            pad_value=int(_pick(settings.pad_value, meta, "pad_value")),
            ignore_index=int(_pick(None, meta, "ignore_index")),
            num_classes=num_classes if seg else 0,
            class_names=class_names,
            palette=palette,
            depth_kind=_pick(settings.depth_kind, meta, "depth_kind"),
            # the served depth output x depth_scale = metres; the zoo outputs metres (1.0)
            depth_scale=float(_pick(settings.depth_scale, meta, "depth_scale")),
            max_batch_size=settings.max_batch,
            dynamic_batching=settings.dynamic_batching,
            instance_count=settings.instance_count(),
            instance_kind="KIND_GPU" if (settings.gpu or settings.tensorrt) else "KIND_CPU",
            platform="tensorrt_plan" if settings.tensorrt else "onnxruntime",
            gpu_accelerator=settings.gpu and not settings.tensorrt,
            # a letterbox client only ever sends HxW: fixed dims let Triton itself refuse any other
            # shape, before the backend copies the request (the graph may still be dynamic)
            static_shape=(resize.height, resize.width) if settings.static or resize.mode == "letterbox" else None,
            precision=settings.precision,
            # stride mode: --max-size (the profile's maximum, which the gate checks) is also the largest
            # image a request may carry; a letterbox model's limit is its own HxW (None)
            max_size=tuple(settings.max_size) if settings.max_size and resize.mode == "stride" else None,
        )
    except ContractError as exc:
        raise ExportError(str(exc)) from exc
