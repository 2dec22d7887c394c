"""One table per task: its primary metric, which way is better, its default depth range, and the
metric object that scores it. The trainer, the export gate, the evaluator, reports and compare
all read it, so a task is scored the same way everywhere."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .depth import DEPTH_KEYS, DepthMetrics
from .matting import MATTING_KEYS, MattingMetrics
from .segmentation import SUMMARY_KEYS, SegmentationMetrics

# Metres. KITTI's cap (80 m) holds indoor and outdoor scenes alike; a dataset that knows its own
# range (NYU: 10 m) overrides it.
DEFAULT_DEPTH_RANGE = (1e-3, 80.0)


@dataclass(frozen=True)
class TaskMetrics:
    task: str
    primary: str  # the headline metric
    higher_is_better: bool  # of the primary metric
    keys: tuple[str, ...]  # every summary metric, report order
    better_up: frozenset[str]  # the summary metrics where higher is better


TASK_METRICS = {
    "segmentation": TaskMetrics("segmentation", "mIoU", True, SUMMARY_KEYS, frozenset(SUMMARY_KEYS)),
    "depth": TaskMetrics("depth", "abs_rel", False, DEPTH_KEYS, frozenset(("delta1", "delta2", "delta3"))),
    # SAD over the trimap's unknown region is the DIM benchmark's headline number
    "matting": TaskMetrics("matting", "sad", False, MATTING_KEYS, frozenset()),
}


# How a depth model's output is scored, by the contract's depth kind: (alignment, prediction).
# Metric depth is scored as is; relative depth and disparity (relative inverse depth: MiDaS, DPT,
# Depth Anything) are aligned per image by MiDaS' least-squares scale and shift in disparity space.
DEPTH_KIND_SCORING = {"metric": ("none", "depth"), "relative": ("scale_shift", "depth"),
                      "disparity": ("scale_shift", "disparity")}


def depth_scoring(depth_kind: str, alignment: Optional[str] = None) -> tuple[str, str]:
    """(alignment, prediction) for a depth kind; an explicit alignment overrides the default."""
    if depth_kind not in DEPTH_KIND_SCORING:
        raise ValueError(f"unknown depth kind {depth_kind!r}; known: {', '.join(DEPTH_KIND_SCORING)}")
    default, prediction = DEPTH_KIND_SCORING[depth_kind]
    return alignment or default, prediction


def higher_is_better(task: str, key: str) -> bool:
    return key in TASK_METRICS[task].better_up


def make_metrics(task: str, *, num_classes: int = 0, ignore_index: int = 255,
                 depth_range: Optional[tuple[float, float]] = None, alignment: str = "none",
                 crop: Optional[str] = None, depth_prediction: str = "depth", trimap_kernel: Optional[int] = None,
                 **segmentation_options):
    """The metric object that scores `task`, with the defaults above."""
    if task == "segmentation":
        return SegmentationMetrics(num_classes, ignore_index=ignore_index, **segmentation_options)
    if task == "depth":
        lo, hi = depth_range or DEFAULT_DEPTH_RANGE
        return DepthMetrics(lo, hi, alignment, crop, depth_prediction)
    if task == "matting":
        return MattingMetrics() if trimap_kernel is None else MattingMetrics(trimap_kernel=trimap_kernel)
    raise ValueError(f"unknown task {task!r}; known: {', '.join(TASK_METRICS)}")
