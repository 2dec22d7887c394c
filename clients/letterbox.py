"""Letterbox: the resize-and-pad that prepares an image for a model, recorded so it can be undone.

One `Letterbox` per image holds the geometry (scale, offset, original/resized/padded sizes);
the same object maps the image forward, label maps forward and both back to the original size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from .contract import Resize

HW = tuple[int, int]


def _round_div(num: int, den: int) -> int:
    """round(num / den) for non-negative ints, half up, in exact integer arithmetic."""
    return (2 * num + den) // (2 * den)


def _fit_inside(orig: HW, box: HW) -> tuple[HW, float]:
    """The largest (h, w) with orig's aspect ratio inside box, and the scale. The limiting side
    fills the box exactly (integer maths, no float rounding); the other is rounded, at least 1."""
    (h, w), (bh, bw) = orig, box
    if bh * w <= bw * h:  # height limits: scale = bh / h
        return (bh, max(1, min(bw, _round_div(w * bh, h)))), bh / h
    return (max(1, min(bh, _round_div(h * bw, w))), bw), bw / w


def resize_nearest(arr: np.ndarray, hw: HW) -> np.ndarray:
    """Nearest-neighbour resize of a label map (any dtype, (H, W) or (H, W, C)).

    Pixel-centre aligned, src = floor((dst + 0.5) * src_size / dst_size), in exact integer
    maths. Why not cv2.INTER_NEAREST: it maps with floor(dst * scale), half a pixel off from the
    INTER_LINEAR/INTER_AREA image it labels, and enlarge-then-shrink does not give the map
    back. cv2.INTER_NEAREST_EXACT has the right rule but 16-bit fixed point, which drifts by
    a pixel on large images. This one is exact, so enlarging and inverting is lossless.
    """
    h, w = hw
    src_h, src_w = arr.shape[:2]
    if (src_h, src_w) == (h, w):
        return arr
    rows = ((2 * np.arange(h, dtype=np.int64) + 1) * src_h) // (2 * h)
    cols = ((2 * np.arange(w, dtype=np.int64) + 1) * src_w) // (2 * w)
    return arr.take(rows, axis=0).take(cols, axis=1)


def _resize_linear(arr: np.ndarray, hw: HW) -> np.ndarray:
    """Bilinear resize of a float map (H, W) or (H, W, C); cv2's dsize is (w, h)."""
    if arr.shape[:2] == hw:
        return arr
    if arr.ndim == 3 and arr.shape[2] > 4:  # cv2 handles few channels per call; go one by one
        return np.stack([_resize_linear(arr[..., c], hw) for c in range(arr.shape[2])], axis=-1)
    out = cv2.resize(arr, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)
    return out.reshape(hw + arr.shape[2:])  # cv2 drops a trailing channel of 1


@dataclass(frozen=True)
class Letterbox:
    """Keep the aspect ratio, resize to `resized`, pad to `padded` with the content centred.

    `offset` is (top, left) of the content inside the padded canvas. `scale` is the nominal
    resize factor; the exact per-axis sizes are `resized`, which is what the maps use.
    """

    scale: float
    offset: HW
    original: HW
    resized: HW
    padded: HW

    def __post_init__(self) -> None:
        (top, left), (rh, rw), (ph, pw) = self.offset, self.resized, self.padded
        if min(self.original) < 1 or min(self.resized) < 1:
            raise ValueError(f"letterbox sizes must be positive: {self}")
        if top < 0 or left < 0 or top + rh > ph or left + rw > pw:
            raise ValueError(f"letterbox content {self.resized} at {self.offset} does not fit in {self.padded}")

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def fit(cls, original: HW, target: Optional[HW] = None, stride: Optional[int] = None,
            max_side: Optional[int] = None) -> "Letterbox":
        """Letterbox `original` (h, w) into a fixed `target` (H, W), or (with `stride`) keep the
        size, shrinking only if the longer side exceeds `max_side`, and pad to a multiple of
        `stride`. Exactly one of target / stride."""
        h, w = (int(v) for v in original)
        if h < 1 or w < 1:
            raise ValueError(f"cannot letterbox an empty image of size {h}x{w}")
        if (target is None) == (stride is None):
            raise ValueError("Letterbox.fit needs exactly one of target=(H, W) or stride=N")
        if target is not None:
            th, tw = (int(v) for v in target)
            if th < 1 or tw < 1:
                raise ValueError(f"letterbox target must be positive, got {th}x{tw}")
            resized, scale = _fit_inside((h, w), (th, tw))
            padded = (th, tw)
        else:
            if stride < 1:
                raise ValueError(f"stride must be positive, got {stride}")
            resized, scale = (h, w), 1.0
            if max_side is not None and max(h, w) > max_side:
                resized, scale = _fit_inside((h, w), (max_side, max_side))
            padded = tuple(-(-side // stride) * stride for side in resized)
        offset = ((padded[0] - resized[0]) // 2, (padded[1] - resized[1]) // 2)
        return cls(scale, offset, (h, w), resized, padded)

    @classmethod
    def for_resize(cls, original: HW, resize: Resize, max_side: Optional[int] = None) -> "Letterbox":
        """The letterbox a model's resize policy (from its contract) asks for."""
        if resize.mode == "letterbox":
            return cls.fit(original, target=(resize.height, resize.width))
        return cls.fit(original, stride=resize.stride, max_side=max_side)

    # ---- geometry -------------------------------------------------------------------------
    @property
    def content(self) -> tuple[slice, slice]:
        """Row and column slices of the image content inside the padded canvas."""
        (top, left), (rh, rw) = self.offset, self.resized
        return slice(top, top + rh), slice(left, left + rw)

    @property
    def shrinks(self) -> bool:
        return self.resized[0] * self.resized[1] < self.original[0] * self.original[1]

    def _check(self, arr: np.ndarray, hw: HW, what: str) -> None:
        if arr.ndim not in (2, 3) or tuple(arr.shape[:2]) != tuple(hw):
            raise ValueError(f"{what} has shape {arr.shape}, expected {hw[0]}x{hw[1]} (H, W[, C])")

    def _pad(self, arr: np.ndarray, value: float) -> np.ndarray:
        out = np.full(self.padded + arr.shape[2:], value, dtype=arr.dtype)
        out[self.content] = arr
        return out

    # ---- forward --------------------------------------------------------------------------
    def apply_image(self, image: np.ndarray, pad_value: int = 0) -> np.ndarray:
        """(h, w[, C]) image -> (H, W[, C]): INTER_AREA when shrinking, INTER_LINEAR when
        enlarging, padded with `pad_value`."""
        self._check(image, self.original, "image")
        if self.resized != self.original:
            interp = cv2.INTER_AREA if self.shrinks else cv2.INTER_LINEAR
            resized = cv2.resize(image, (self.resized[1], self.resized[0]), interpolation=interp)
            image = resized.reshape(self.resized + image.shape[2:])
        return self._pad(image, pad_value)

    def apply_labels(self, labels: np.ndarray, ignore_index: int = 255) -> np.ndarray:
        """(h, w) label map -> (H, W): nearest neighbour, padded with the ignore index, never a
        class id, so padding counts neither in the loss nor in the metrics."""
        self._check(labels, self.original, "label map")
        if not np.can_cast(np.min_scalar_type(ignore_index), labels.dtype):
            raise ValueError(f"ignore index {ignore_index} does not fit label dtype {labels.dtype}")
        return self._pad(resize_nearest(labels, self.resized), ignore_index)

    # ---- inverse --------------------------------------------------------------------------
    def invert_labels(self, labels: np.ndarray) -> np.ndarray:
        """(H, W) label map at the padded size -> (h, w): crop the padding, nearest back."""
        self._check(labels, self.padded, "label map")
        return resize_nearest(labels[self.content], self.original)

    def invert_map(self, values: np.ndarray) -> np.ndarray:
        """(H, W[, C]) float map (depth, alpha, confidence, logits) -> (h, w[, C]): crop, then
        bilinear back to the original size."""
        self._check(values, self.padded, "map")
        return _resize_linear(np.ascontiguousarray(values[self.content]), self.original)
