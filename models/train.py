"""Trainer for the zoo on the synthetic data: `train(TrainConfig(...)) -> final val metrics`.

AdamW, linear warmup then poly decay, gradient clipping, a guard that skips non-finite batches,
validation and a checkpoint every epoch. The data order and augmentation are functions of
(seed, epoch), so `resume` ends with the same weights as an uninterrupted run (on CPU).
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from clients.files import atomic_path
from clients.progress import Progress

from .checkpoint import CheckpointError, load_weights, read_checkpoint
from .data import IGNORE_INDEX, MEAN, PAD_VALUE, STD, SynthDataset, read_meta
from clients.metrics.tasks import TASK_METRICS

from .evaluate import validate
from .registry import TASKS, create_model

log = logging.getLogger(__name__)

SILOG_LAMBDA = 0.85  # 1.0 = fully scale-invariant; < 1 keeps some pull towards metric scale
DEPTH_L1_WEIGHT = 0.1  # L1 is in metres (up to ~15 here); this keeps it beside the log loss


# Random zoom per task. Depth gets a narrow range: a zoomed-in image looks nearer, so its depth is
# divided by the zoom, but that is only approximately the same camera (5 epochs of the default
# demo: val abs_rel 0.127 with 0.75-1.5, 0.077 with 0.9-1.2).
DEFAULT_SCALE = {"segmentation": (0.75, 1.5), "depth": (0.9, 1.2), "matting": (0.75, 1.5)}


@dataclass
class TrainConfig:
    arch: str = "unet"
    task: str = "segmentation"
    data: str = "work/data"
    epochs: int = 5
    out: str = "work/checkpoints/model.pt"
    resume: Optional[str] = None  # a checkpoint this config wrote; training continues after its epoch
    batch_size: int = 8
    lr: float = 4e-3
    weight_decay: float = 1e-4
    warmup_iters: int = 30
    size: int = 128  # training crop (square); validation letterboxes to it
    seed: int = 0
    width: int = 16
    scale: Optional[tuple[float, float]] = None  # random zoom range; None = the task's DEFAULT_SCALE
    clip_grad: float = 5.0
    threads: int = 0  # torch intra-op threads; 0 = default_threads(). Fixed, so reruns match.
    device: str = "cpu"
    stop_after: int = 0  # stop after this epoch as if interrupted (0 = run all epochs)
    progress: bool = True  # per-epoch progress line on stderr

    def check(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        for name in ("epochs", "batch_size", "size", "width"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.scale is not None and not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be 0 < low <= high, got {self.scale}")

    @property
    def zoom(self) -> tuple[float, float]:
        return tuple(self.scale) if self.scale is not None else DEFAULT_SCALE.get(self.task, (1.0, 1.0))


class WarmupPoly:
    """LR factor: linear warmup over `warmup` steps, then (1 - progress) ** power down to 0.

    A plain object (not a lambda) so LambdaLR can save and restore it in the checkpoint."""

    def __init__(self, warmup: int, total: int, power: float = 0.9) -> None:
        self.warmup, self.total, self.power = warmup, total, power

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.total - self.warmup)
        return max(0.0, 1.0 - progress) ** self.power


# ---- losses ----------------------------------------------------------------------------------

def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    # (B, C, H, W), (B, H, W); 255 marks object borders and padding: never a class.
    if not bool((labels != IGNORE_INDEX).any()):
        return logits.sum() * 0  # all ignored: cross_entropy's mean over no pixels would be NaN
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)


def depth_loss(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Scale-invariant log loss (per image) + L1 in metres, over valid pixels (gt > 0) only."""
    valid = gt > 0  # (B, 1, H, W)
    n = valid.sum(dim=(1, 2, 3))
    if not bool((n > 0).any()):
        return pred.sum() * 0  # nothing to learn from; zero loss, zero grad
    d = torch.where(valid, torch.log(pred) - torch.log(gt.clamp(min=1e-6)), torch.zeros_like(pred))
    has = n > 0
    nf = n[has].float()
    mean_d = d.sum(dim=(1, 2, 3))[has] / nf
    mean_d2 = (d * d).sum(dim=(1, 2, 3))[has] / nf
    silog = (mean_d2 - SILOG_LAMBDA * mean_d ** 2).mean()
    l1 = (pred - gt).abs()[valid].mean()
    return silog + DEPTH_L1_WEIGHT * l1


def matting_loss(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    valid = gt >= 0  # padding carries alpha -1
    if not bool(valid.any()):
        return pred.sum() * 0
    return (pred - gt).abs()[valid].mean()


LOSSES = {"segmentation": segmentation_loss, "depth": depth_loss, "matting": matting_loss}


def compute_loss(task: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return LOSSES[task](output, target)


# ---- one step, with the non-finite guard ------------------------------------------------------

def train_step(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, task: str,
               optimizer: torch.optim.Optimizer, clip_grad: float) -> Optional[float]:
    """One optimisation step; returns the loss, or None when the batch was skipped as non-finite.

    A skipped batch changes nothing: no step, and BatchNorm's running statistics (which the
    forward pass already updated) are put back, so one bad batch cannot poison the model."""
    buffers = [b.detach().clone() for b in model.buffers()]
    optimizer.zero_grad(set_to_none=True)
    loss = compute_loss(task, model(images), targets)
    reason = None if torch.isfinite(loss) else f"loss is {loss.item()}"
    if reason is None:
        loss.backward()
        norm = nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        if not torch.isfinite(norm):
            reason = f"gradient norm is {norm.item()}"
    if reason is not None:
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for b, saved in zip(model.buffers(), buffers):
                b.copy_(saved)
        log.warning("skipped a batch: %s", reason)
        return None
    optimizer.step()
    return loss.item()


# ---- checkpoint -----------------------------------------------------------------------------

def rng_state() -> dict[str, Any]:
    """Global RNG states as tensors/lists/ints, so the checkpoint loads with weights_only=True."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)},
        "python": {"version": version, "state": list(state), "gauss": py_gauss},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def model_meta(cfg: TrainConfig, data_meta: dict) -> dict[str, Any]:
    """What export needs to rebuild the model and write the served contract."""
    seg = cfg.task == "segmentation"
    meta = {
        "arch": cfg.arch,
        "task": cfg.task,
        "width": cfg.width,  # create_model(..., width=...): the zoo default is 16
        "num_classes": int(data_meta["num_classes"]) if seg else 1,
        "class_names": list(data_meta["class_names"]) if seg else [],
        "palette": [list(c) for c in data_meta["palette"]] if seg else [],
        "mean": list(MEAN),
        "std": list(STD),
        "input_size": [cfg.size, cfg.size],
        "pad_value": PAD_VALUE,
        "ignore_index": IGNORE_INDEX,
        "depth_scale": 1.0,  # the depth output is in metres (output x depth_scale = metres)
        "depth_kind": "metric",
    }
    if cfg.task == "depth":
        meta["depth_range"] = [float(data_meta["depth_min"]), float(data_meta["depth_max"])]
    return meta


def save_checkpoint(path: str, ckpt: dict[str, Any]) -> None:
    """Write-then-rename: an interruption never leaves a half-written checkpoint at `path`."""
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def _config_record(cfg: TrainConfig) -> dict[str, Any]:
    rec = asdict(cfg)
    rec["scale"] = list(cfg.zoom)
    return rec


def _resume(cfg: TrainConfig, model: nn.Module, optimizer, scheduler) -> tuple[int, list]:
    state, meta, ckpt = read_checkpoint(cfg.resume)
    if not all(k in ckpt for k in ("optimizer", "scheduler", "epoch")):
        raise CheckpointError(f"{cfg.resume!r} is not a training checkpoint (no optimizer/scheduler/epoch); "
                              "train from scratch without --resume")
    for key in ("arch", "task", "width"):
        if key in meta and meta[key] != getattr(cfg, key):
            raise CheckpointError(f"--resume {cfg.resume!r} was trained with {key}={meta[key]!r}, "
                                  f"not {getattr(cfg, key)!r}; pass --{key} {meta[key]}")
    load_weights(model, state, hint=f"--resume {cfg.resume!r} holds arch={meta.get('arch')!r}")
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    if "rng" in ckpt:
        set_rng_state(ckpt["rng"])
    old = ckpt.get("config", {})
    changed = [k for k in ("epochs", "batch_size", "lr", "size", "seed", "scale") if k in old
               and old[k] != _config_record(cfg)[k]]
    if changed:
        log.warning("resuming with changed %s: the run will not match an uninterrupted one", ", ".join(changed))
    return int(ckpt["epoch"]), list(ckpt.get("history", []))


# ---- the loop -------------------------------------------------------------------------------

def default_threads() -> int:
    """Half the cores (1 on a 2-core machine), at most 8.

    On a shared machine, OpenMP threads that lose their core spin at every barrier: measured on
    2 busy cores, 2 threads ran a UNet step 1.5-4x slower than 1 thread, and only about 1.3x
    faster when the cores were idle. A fixed count also keeps a resumed run bit-identical."""
    return max(1, min((os.cpu_count() or 2) // 2, 8))


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train (or resume), validate and checkpoint every epoch; returns the last epoch's metrics."""
    cfg.check()
    threads_before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads or default_threads())
    try:
        return _train(cfg)
    finally:
        torch.set_num_threads(threads_before)


def _train(cfg: TrainConfig) -> dict[str, Any]:
    data_meta = read_meta(cfg.data)
    train_set = SynthDataset.for_training(cfg.data, cfg.task, cfg.size, cfg.zoom, cfg.seed)
    val_set = SynthDataset.for_validation(cfg.data, cfg.task)
    meta = model_meta(cfg, data_meta)

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    model = create_model(cfg.arch, task=cfg.task, num_classes=meta["num_classes"], width=cfg.width).to(cfg.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupPoly(min(cfg.warmup_iters, total // 4), total))
    start_epoch, history = 0, []
    if cfg.resume:
        start_epoch, history = _resume(cfg, model, optimizer, scheduler)
        log.info("resumed %s after epoch %d of %d", cfg.resume, start_epoch, cfg.epochs)
    log.info("training %s/%s on %d images (%d val), %d steps/epoch, %d threads",
             cfg.arch, cfg.task, len(train_set), len(val_set), steps_per_epoch, torch.get_num_threads())

    metric_name = TASK_METRICS[cfg.task].primary
    result: dict[str, Any] = history[-1] if history else {}
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.monotonic()
        train_set.set_epoch(epoch)
        # The order depends on (seed, epoch) only, never on RNG state carried across epochs.
        order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
        loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=order.tolist())
        model.train()
        bar = Progress(steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", unit="step", enabled=cfg.progress)
        losses, skipped = [], 0
        for images, targets in loader:
            loss = train_step(model, images.to(cfg.device), targets.to(cfg.device), cfg.task, optimizer, cfg.clip_grad)
            scheduler.step()  # also after a skipped batch: the schedule follows the step count
            if loss is None:
                skipped += 1
            else:
                losses.append(loss)
            bar.update(postfix=f"loss {np.mean(losses[-20:]) if losses else float('nan'):.4f}")
        bar.close()
        metrics = validate(model, val_set, cfg.task, meta, (cfg.size, cfg.size), device=cfg.device)
        result = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else float("nan"),
                  "skipped_batches": skipped, "seconds": time.monotonic() - t0, **metrics}
        history.append(result)
        log.info("epoch %d/%d  loss %.4f  val %s %.4f  (%.1fs%s)", epoch + 1, cfg.epochs, result["train_loss"],
                 metric_name, metrics[metric_name], result["seconds"], f", {skipped} skipped" if skipped else "")
        save_checkpoint(cfg.out, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "epoch": epoch + 1, "rng": rng_state(), "meta": meta, "config": _config_record(cfg),
            "history": history,
        })
        if cfg.stop_after and epoch + 1 >= cfg.stop_after and epoch + 1 < cfg.epochs:
            log.info("stopping after epoch %d as asked; continue with --resume %s", epoch + 1, cfg.out)
            break
    return {"metric": metric_name, "higher_is_better": TASK_METRICS[cfg.task].higher_is_better, **result}
