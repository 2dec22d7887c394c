"""Write predictions as files people and tools can open.

segmentation: `<stem>.png` label map (uint8; uint16 past 255 classes) and, on request,
`<stem>_overlay.png` in the model's palette; depth: `<stem>.png` 16-bit millimetres (0 = no
depth; relative depth and disparity, which have no unit, stretched over 16 bits) and
`<stem>_preview.png` colour-mapped, near bright; matting: `<stem>.png` 8-bit alpha.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from .contract import ModelContract, checked_palette
from .files import atomic_write
from .prediction import Prediction


def write_png(path: Path, array: np.ndarray, rgb: bool = False) -> Path:
    """Encode and write atomically (temp file + rename): a crash never leaves half a PNG."""
    if rgb:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)  # cv2 writes BGR
    ok, encoded = cv2.imencode(".png", array)
    if not ok:
        raise ValueError(f"cannot encode {array.dtype} array of shape {array.shape} as PNG")
    return atomic_write(path, encoded.tobytes())


def label_image(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Class ids as a PNG-able array: uint8 up to 255 classes, uint16 beyond."""
    if num_classes <= 255:
        return labels.astype(np.uint8, copy=False)
    if num_classes > 65535:
        raise ValueError(f"{num_classes} classes do not fit a 16-bit PNG")
    return labels.astype(np.uint16)


def colorize(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(h, w) class ids -> (h, w, 3) RGB; ids outside the palette (e.g. ignore) are black."""
    lut = np.concatenate([palette.astype(np.uint8), np.zeros((1, 3), np.uint8)])
    return lut[np.where((labels >= 0) & (labels < len(palette)), labels, len(palette))]


def overlay(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """Blend the class colours over the RGB image; ids outside the palette stay unblended."""
    colours = colorize(labels, palette)
    blended = cv2.addWeighted(image, 1.0 - opacity, colours, opacity, 0.0)
    known = ((labels >= 0) & (labels < len(palette)))[..., None]
    return np.where(known, blended, image)


def depth_millimetres(depth: np.ndarray, relative: bool = False) -> np.ndarray:
    """Metres -> uint16 millimetres (0 = invalid, clipped at 65.535 m). Relative depth has no
    unit, so it is stretched over the full 16-bit range instead."""
    valid = np.isfinite(depth) & (depth > 0)
    if relative:
        lo, hi = (float(depth[valid].min()), float(depth[valid].max())) if valid.any() else (0.0, 1.0)
        scaled = (depth - lo) / max(hi - lo, 1e-12) * 65534.0 + 1.0
    else:
        scaled = depth * 1000.0
    return np.where(valid, np.clip(np.rint(scaled), 1, 65535), 0).astype(np.uint16)


def depth_preview(depth: np.ndarray, disparity: bool = False) -> np.ndarray:
    """(h, w) depth -> (h, w, 3) RGB colour map of inverse depth (near is bright), stretched
    between the 2nd and 98th percentiles so one outlier does not flatten the picture. A disparity
    map already is inverse depth: it is drawn as it is, so near is bright for every depth kind."""
    valid = np.isfinite(depth) & (depth > 0)
    inv = np.zeros(depth.shape, np.float32)
    inv[valid] = depth[valid] if disparity else 1.0 / depth[valid]
    if valid.any():
        lo, hi = np.percentile(inv[valid], [2, 98])
        inv = np.clip((inv - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    grey = np.where(valid, np.rint(inv * 255), 0).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(grey, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)


def alpha_image(alpha: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(alpha, 0.0, 1.0) * 255).astype(np.uint8)


def write_prediction(pred: Prediction, contract: ModelContract, stem: Path,
                     image: Optional[np.ndarray] = None, with_overlay: bool = False) -> list[Path]:
    """Write one image's result next to `stem` (a path without suffix); returns the files."""
    stem = Path(stem)
    main = stem.with_name(stem.name + ".png")
    if pred.task == "segmentation":
        written = [write_png(main, label_image(pred.labels, contract.num_classes))]
        if with_overlay:
            if image is None:
                raise ValueError("an overlay needs the input image")
            palette = np.asarray(checked_palette(contract.palette, contract.num_classes))
            written.append(write_png(stem.with_name(stem.name + "_overlay.png"),
                                     overlay(image, pred.labels, palette), rgb=True))
        return written
    if pred.task == "depth":
        # Only metric depth has a unit; relative depth and disparity are stretched over 16 bits.
        unitless = contract.depth_kind != "metric"
        return [write_png(main, depth_millimetres(pred.depth, unitless)),
                write_png(stem.with_name(stem.name + "_preview.png"),
                          depth_preview(pred.depth, disparity=contract.depth_kind == "disparity"), rgb=True)]
    return [write_png(main, alpha_image(pred.alpha))]
