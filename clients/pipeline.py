"""Pre- and post-processing around a served model, driven only by its contract.

`preprocess` letterboxes images into the tensor the model takes (uint8 NHWC, or normalised
float32 NCHW); `postprocess` turns the output tensors back into per-image Predictions at each
image's original size. The client, the in-process reference and the evaluators share these.

Batching: in letterbox mode every image becomes the same HxW, so any batch stacks. In stride
mode each image keeps its own size (padded to a stride multiple); images share a batch only
when their padded sizes agree, and the clients send stride-mode images one per request rather
than padding them to a common size, which would change what the model sees.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from .contract import ModelContract
from .letterbox import Letterbox
from .prediction import Prediction


def check_image(image: object, name: str = "image") -> np.ndarray:
    """Accept an RGB uint8 (H, W, 3) or grayscale uint8 (H, W) array; return (H, W, 3)."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array, got {type(image).__name__}; "
                         "decode files with clients.load_image")
    ok_shape = image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)
    if image.dtype != np.uint8 or not ok_shape or min(image.shape[:2], default=0) < 1:
        raise ValueError(
            f"{name}: got {image.dtype} array of shape {image.shape}; expected uint8 RGB (H, W, 3) "
            "or grayscale (H, W). Convert with clients.load_image (handles RGBA, 16-bit, BGR files) "
            "or arr.astype(np.uint8)"
        )
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return image


def letterbox_for(image_hw: tuple[int, int], contract: ModelContract, max_side: Optional[int] = None) -> Letterbox:
    return Letterbox.for_resize(image_hw, contract.resize, max_side=max_side)


def normalise(batch: np.ndarray, contract: ModelContract) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32, x = (img / 255 - mean) / std: the raw form."""
    mean = np.asarray(contract.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(contract.std, np.float32).reshape(1, 3, 1, 1)
    x = batch.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray((x - mean) / std)


def preprocess(images: Sequence[np.ndarray], contract: ModelContract,
               max_side: Optional[int] = None) -> tuple[np.ndarray, list[Letterbox]]:
    """Images -> (the model's input batch, one Letterbox per image).

    uint8 models get (N, H, W, 3) uint8; float32 models get (N, 3, H, W) normalised float32
    (padding normalised like any pixel of value `pad_value`). `max_side` caps the longer side
    in stride mode (downscaling larger images); letterbox mode has a fixed size anyway.
    """
    if len(images) == 0:
        raise ValueError("preprocess needs at least one image")
    checked = [check_image(img, f"image {i}") for i, img in enumerate(images)]
    transforms = [letterbox_for(img.shape[:2], contract, max_side) for img in checked]
    sizes = {t.padded for t in transforms}
    if len(sizes) > 1:
        raise ValueError(
            f"stride-mode images pad to different sizes {sorted(sizes)} and cannot share a batch; "
            "send them one per request (DenseClient.predict_batch does)"
        )
    batch = np.stack([t.apply_image(img, contract.pad_value) for t, img in zip(transforms, checked)])
    if contract.input_dtype == "float32":
        batch = normalise(batch, contract)
    return batch, transforms


def _per_image(outputs: Mapping[str, np.ndarray], name: str, transforms: Sequence[Letterbox],
               lead: tuple[int, ...] = ()) -> np.ndarray:
    """Check that output `name` is (N, *lead, H, W) at the padded size."""
    if name not in outputs:
        raise ValueError(f"model output {name!r} is missing; got {sorted(outputs)}")
    arr = outputs[name]
    expect = (len(transforms),) + lead + transforms[0].padded
    if arr.ndim != len(expect) or arr.shape[0] != expect[0] or tuple(arr.shape[-2:]) != expect[-2:]:
        raise ValueError(f"model output {name!r} has shape {arr.shape}, expected {expect} "
                         "(batch, ..., padded H, padded W)")
    return arr


def postprocess(outputs: Mapping[str, np.ndarray], transforms: Sequence[Letterbox],
                contract: ModelContract) -> list[Prediction]:
    """Output tensors (each with the batch dimension first) -> one Prediction per image at its
    original size: labels by nearest inverse, float maps (depth in metres, alpha, confidence,
    logits) by bilinear inverse."""
    preds = [Prediction(task=contract.task, transform=t, depth_kind=contract.depth_kind) for t in transforms]
    if contract.task == "segmentation":
        if contract.output_kind != "logits":
            labels = _per_image(outputs, "labels", transforms)
        else:  # only logits served: argmax at network resolution, as the in-graph argmax does
            logits = _per_image(outputs, "logits", transforms, (contract.num_classes,))
            labels = logits.argmax(axis=1).astype(contract.label_dtype)  # (N, C, H, W) -> (N, H, W)
        for p, t, lab in zip(preds, transforms, labels):
            p.labels = t.invert_labels(lab)
        if "confidence" in outputs:
            conf = _per_image(outputs, "confidence", transforms)
            for p, t, c in zip(preds, transforms, conf):
                p.confidence = t.invert_map(c.astype(np.float32, copy=False))
        if "logits" in outputs:
            logits = _per_image(outputs, "logits", transforms, (contract.num_classes,))
            for p, t, lg in zip(preds, transforms, logits):
                p.logits = np.ascontiguousarray(t.invert_map(lg.astype(np.float32).transpose(1, 2, 0)).transpose(2, 0, 1))
    elif contract.task == "depth":
        depth = _per_image(outputs, "depth", transforms).astype(np.float32) * np.float32(contract.depth_scale)
        for p, t, d in zip(preds, transforms, depth):
            p.depth = t.invert_map(d)
    else:
        alpha = _per_image(outputs, "alpha", transforms)
        alpha = alpha.astype(np.float32) / (255.0 if alpha.dtype == np.uint8 else 1.0)
        for p, t, a in zip(preds, transforms, alpha):
            p.alpha = np.clip(t.invert_map(a), 0.0, 1.0)
    return preds
