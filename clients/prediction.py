"""What a dense model returns for one image, at that image's original size."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .letterbox import Letterbox


@dataclass
class Prediction:
    """One image's result. Which fields are set depends on the task and the served outputs:
    segmentation -> labels (+ confidence, + logits), depth -> depth, matting -> alpha."""

    task: str
    labels: Optional[np.ndarray] = None  # (h, w) class ids, uint8 (int32 past 255 classes)
    confidence: Optional[np.ndarray] = None  # (h, w) float32, max softmax probability
    logits: Optional[np.ndarray] = None  # (C, h, w) float32
    depth: Optional[np.ndarray] = None  # (h, w) float32: metres, depth up to scale, or disparity (depth_kind)
    alpha: Optional[np.ndarray] = None  # (h, w) float32 in [0, 1]
    transform: Optional[Letterbox] = None  # how the input was letterboxed
    depth_kind: str = "metric"  # what `depth` holds: the served contract's DEPTH_KINDS entry

    @property
    def primary(self) -> np.ndarray:
        """The task's main map: labels, depth or alpha."""
        value = {"segmentation": self.labels, "depth": self.depth, "matting": self.alpha}[self.task]
        assert value is not None, f"{self.task} prediction without its main map"
        return value

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.primary.shape[-2:])
