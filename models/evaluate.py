"""Validation for the trainer: mIoU (segmentation), abs_rel (depth), SAD (matting) on a val split.

Each image is letterboxed to the training size exactly as a client does (clients.letterbox), and
the metrics (clients.metrics) are taken on the letterboxed content, padding cropped away. The
full evaluation harness, at the original image size through Triton, lives in evaluation/.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from clients.letterbox import Letterbox, resize_nearest
from clients.metrics.tasks import make_metrics

from .data import PAD_VALUE, SynthDataset, to_tensor


def _metrics(task: str, meta: dict):
    return make_metrics(task, num_classes=meta.get("num_classes", 0), ignore_index=meta.get("ignore_index", 255),
                        depth_range=meta.get("depth_range"))


def _batches(dataset: SynthDataset, size: tuple[int, int], batch_size: int) -> Iterator[tuple[torch.Tensor, list, list]]:
    """(images (B, 3, H, W), [Letterbox], [target resized to the content]) per batch."""
    images, boxes, targets = [], [], []
    for image, target in zip(dataset.images, dataset.targets):
        box = Letterbox.fit(image.shape[:2], target=size)
        images.append(to_tensor(box.apply_image(image, PAD_VALUE)))
        boxes.append(box)
        # Nearest: labels keep their ids, depth keeps its invalid zeros unblended.
        targets.append(resize_nearest(target, box.resized))
        if len(images) == batch_size:
            yield torch.stack(images), boxes, targets
            images, boxes, targets = [], [], []
    if images:
        yield torch.stack(images), boxes, targets


@torch.inference_mode()
def validate(model: nn.Module, dataset: SynthDataset, task: str, meta: dict, size: tuple[int, int], batch_size: int = 8,
             device: str = "cpu") -> dict[str, float]:
    """{metric: value} over the dataset's raw images letterboxed to `size` (H, W); the task's
    task's primary metric (clients.metrics.tasks) included."""
    was_training = model.training
    model.eval()
    metrics = _metrics(task, meta)
    for images, boxes, targets in _batches(dataset, size, batch_size):
        out = model(images.to(device)).float().cpu().numpy()  # (B, C, H, W)
        for pred, box, target in zip(out, boxes, targets):
            rows, cols = box.content
            if task == "segmentation":
                metrics.update(pred[:, rows, cols].argmax(0), target)  # (C, h, w) -> (h, w)
            else:
                metrics.update(pred[0, rows, cols], target)
    model.train(was_training)
    result = metrics.compute()
    keys = ("mIoU", "aAcc") if task == "segmentation" else ("abs_rel", "rmse", "delta1") if task == "depth" \
        else ("sad", "mse")
    return {k: float(result[k]) for k in keys}


def validate_checkpoint(checkpoint: str, data: str, split: str = "val", device: str = "cpu") -> dict[str, float]:
    """Rebuild the model a trainer checkpoint describes and validate it on `split` of `data`."""
    from .checkpoint import CheckpointError, load_weights, read_checkpoint
    from .registry import create_model

    state, meta, _ = read_checkpoint(checkpoint)
    missing = [k for k in ("arch", "task", "num_classes", "input_size") if k not in meta]
    if missing:
        raise CheckpointError(f"{checkpoint!r} has no trainer meta ({', '.join(missing)} missing); "
                              "validate needs a checkpoint written by `python -m models train`")
    model = create_model(meta["arch"], task=meta["task"], num_classes=meta["num_classes"],
                         width=int(meta.get("width", 16)))
    load_weights(model, state, hint=f"meta says arch={meta['arch']!r}, width={meta.get('width', 16)}")
    dataset = SynthDataset.for_validation(data, meta["task"], split=split)
    size = (int(meta["input_size"][0]), int(meta["input_size"][1]))
    return validate(model.to(device), dataset, meta["task"], meta, size, device=device)
