"""Evaluation metrics (numpy only, plus cv2 for matting): segmentation from one confusion matrix,
per-image depth errors, and mmagic's matting errors. Every metric object has `update`, `merge`,
`compute`, `to_json` and `from_json`, so shards and resumed runs combine exactly."""

from __future__ import annotations

from typing import Any, Mapping, Union

from .depth import DEPTH_KEYS, DepthMetrics
from .matting import MATTING_KEYS, MattingMetrics, make_trimap
from .segmentation import PER_CLASS_KEYS, SUMMARY_KEYS, SegmentationMetrics, metrics_from_confusion

Metrics = Union[SegmentationMetrics, DepthMetrics, MattingMetrics]
_TYPES = {"segmentation": SegmentationMetrics, "depth": DepthMetrics, "matting": MattingMetrics}


def metrics_from_json(data: Mapping[str, Any]) -> Metrics:
    """Rebuild whichever metric object a `to_json()` dict came from."""
    kind = data.get("type")
    if kind not in _TYPES:
        raise ValueError(f"unknown metrics type {kind!r}; known: {', '.join(_TYPES)}")
    return _TYPES[kind].from_json(data)


__all__ = ["SegmentationMetrics", "DepthMetrics", "MattingMetrics", "make_trimap", "metrics_from_json",
           "metrics_from_confusion", "Metrics", "SUMMARY_KEYS", "PER_CLASS_KEYS", "DEPTH_KEYS", "MATTING_KEYS"]
