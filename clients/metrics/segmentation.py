"""Semantic-segmentation metrics from one int64 confusion matrix, with mmsegmentation's semantics.

`SegmentationMetrics` accumulates `bincount(C*gt + pred)` over the valid pixels of each image;
every number (aAcc, IoU, Acc, Dice, F-score, precision, recall, FWIoU) is derived from it, so
shards merge exactly by adding matrices.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np

from .common import nan_to_none

# The summary keys of compute(), in report order; all fractions in [0, 1] (NaN when undefined).
SUMMARY_KEYS = ("aAcc", "mIoU", "mAcc", "mDice", "mFscore", "mPrecision", "mRecall", "FWIoU")
PER_CLASS_KEYS = ("IoU", "Acc", "Dice", "Fscore", "Precision", "Recall")


def reduce_zero_label(gt: np.ndarray) -> np.ndarray:
    """mmseg's `reduce_zero_label`: 0 (ADE20K's "other") -> 255, 255 stays 255, every other id - 1.

    mmseg does this on uint8 (0 -> 255 -> 254 -> 255 and 255 -> 254 -> 255); the result here is the
    same for any integer dtype."""
    out = gt.astype(np.int64) - 1
    out[(gt == 0) | (gt == 255)] = 255
    return out


def apply_label_map(gt: np.ndarray, label_map: Mapping[int, int]) -> np.ndarray:
    """Map old ids to new ids, reading from the original so chains (1->2, 2->3) never compound."""
    out = gt.astype(np.int64, copy=True)
    for old, new in label_map.items():
        out[gt == old] = new
    return out


def metrics_from_confusion(confusion: np.ndarray, out_of_range: Optional[np.ndarray] = None) -> dict[str, Any]:
    """All metrics from a (C, C) confusion matrix (rows = ground truth, columns = prediction).

    `out_of_range[c]` counts pixels of gt class c whose prediction was outside [0, C): they add to
    the class's ground-truth area (a miss) and to no predicted area, as mmseg's histc drops them."""
    cm = np.asarray(confusion, dtype=np.int64)
    extra = np.zeros(cm.shape[0], np.int64) if out_of_range is None else np.asarray(out_of_range, np.int64)
    intersect = np.diag(cm).astype(np.float64)
    area_pred = cm.sum(axis=0).astype(np.float64)
    area_label = (cm.sum(axis=1) + extra).astype(np.float64)
    union = area_pred + area_label - intersect
    with np.errstate(divide="ignore", invalid="ignore"):
        # 0/0 -> NaN: a class absent from both gt and prediction is undefined, not 0 or 1.
        iou = intersect / union
        acc = intersect / area_label
        dice = 2 * intersect / (area_pred + area_label)
        precision = intersect / area_pred
        recall = acc
        # mmseg's f_score with beta = 1 (NaN where precision + recall is 0/0 or undefined).
        fscore = 2 * precision * recall / (precision + recall)
        total = area_label.sum()
        aacc = intersect.sum() / total if total > 0 else np.nan
        freq = area_label / total if total > 0 else np.zeros_like(area_label)
    seen = freq > 0
    fwiou = float((freq[seen] * iou[seen]).sum()) if seen.any() else np.nan
    per_class = {"IoU": iou, "Acc": acc, "Dice": dice, "Fscore": fscore, "Precision": precision, "Recall": recall}
    summary = {"aAcc": float(aacc), "FWIoU": fwiou}
    for key, mean_key in (("IoU", "mIoU"), ("Acc", "mAcc"), ("Dice", "mDice"), ("Fscore", "mFscore"),
                          ("Precision", "mPrecision"), ("Recall", "mRecall")):
        values = per_class[key]
        summary[mean_key] = float(np.nanmean(values)) if np.isfinite(values).any() else np.nan
    out: dict[str, Any] = {k: summary[k] for k in SUMMARY_KEYS}
    out.update(per_class)
    out["area_intersect"], out["area_union"] = intersect, union
    out["area_pred"], out["area_label"] = area_pred, area_label
    return out


class SegmentationMetrics:
    """Accumulates a confusion matrix over a dataset; `compute()` gives mmseg-equivalent numbers.

    Valid pixels: after `label_map` then `reduce_zero_label`, gt != ignore_index and 0 <= gt < C.
    Other gt values are a data error; they are dropped whole (as torchvision's ConfusionMatrix
    does; mmseg would still count their predictions as false positives) and counted in
    `invalid_gt` (and by id in `unknown_ids`) so a report can flag them and a CI run can fail on
    them. A prediction outside [0, C) on a valid pixel is a miss for its gt class (see
    `metrics_from_confusion`)."""

    def __init__(self, num_classes: int, ignore_index: int = 255, reduce_zero_label: bool = False,
                 label_map: Optional[Mapping[int, int]] = None,
                 class_names: Optional[Sequence[str]] = None) -> None:
        if num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if class_names is not None and len(class_names) and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.reduce_zero_label = bool(reduce_zero_label)
        self.label_map = {int(k): int(v) for k, v in (label_map or {}).items()}
        self.class_names = tuple(class_names) if class_names else tuple(f"class_{i}" for i in range(num_classes))
        self.confusion = np.zeros((num_classes, num_classes), np.int64)
        self.out_of_range = np.zeros(num_classes, np.int64)
        self.invalid_gt = 0  # pixels whose gt is neither the ignore index nor in [0, C)
        self.unknown_ids: dict[int, int] = {}  # those pixels by gt id (after label_map/reduce_zero_label)
        self.num_images = 0

    def prepare_gt(self, gt: np.ndarray) -> np.ndarray:
        """The ground truth as the metric sees it (label_map, then reduce_zero_label), int64."""
        out = np.asarray(gt).astype(np.int64)
        if self.label_map:
            out = apply_label_map(out, self.label_map)
        if self.reduce_zero_label:
            out = reduce_zero_label(out)
        return out

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        pred, gt = np.asarray(pred), np.asarray(gt)
        if pred.shape != gt.shape or pred.ndim != 2:
            raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} must be the same (H, W)")
        n = self.num_classes
        g = self.prepare_gt(gt)
        labelled = g != self.ignore_index
        valid = labelled & (g >= 0) & (g < n)
        unknown = labelled & ~valid
        if unknown.any():
            ids, counts = np.unique(g[unknown], return_counts=True)
            for i, c in zip(ids.tolist(), counts.tolist()):
                self.unknown_ids[i] = self.unknown_ids.get(i, 0) + c
            self.invalid_gt += int(counts.sum())
        g = g[valid]
        p = pred[valid].astype(np.int64)
        inside = (p >= 0) & (p < n)
        # (H*W,) -> (C*C,) -> (C, C): rows are ground truth, columns prediction (torchvision style).
        self.confusion += np.bincount(n * g[inside] + p[inside], minlength=n * n).reshape(n, n)
        self.out_of_range += np.bincount(g[~inside], minlength=n)
        self.num_images += 1

    def _check_compatible(self, other: "SegmentationMetrics") -> None:
        mine = (self.num_classes, self.ignore_index, self.reduce_zero_label, self.label_map)
        theirs = (other.num_classes, other.ignore_index, other.reduce_zero_label, other.label_map)
        if mine != theirs:
            raise ValueError(f"cannot merge segmentation metrics with different settings: {mine} vs {theirs}")

    def merge(self, other: "SegmentationMetrics") -> "SegmentationMetrics":
        """Add another accumulator's counts into this one (shards of one dataset); returns self."""
        self._check_compatible(other)
        self.confusion += other.confusion
        self.out_of_range += other.out_of_range
        self.invalid_gt += other.invalid_gt
        for i, c in other.unknown_ids.items():
            self.unknown_ids[i] = self.unknown_ids.get(i, 0) + c
        self.num_images += other.num_images
        return self

    def compute(self) -> dict[str, Any]:
        return metrics_from_confusion(self.confusion, self.out_of_range)

    def summary(self) -> dict[str, Optional[float]]:
        """The headline numbers only, JSON-ready (NaN -> None)."""
        res = self.compute()
        return {k: nan_to_none(res[k]) for k in SUMMARY_KEYS}

    def per_class(self) -> list[dict[str, Any]]:
        res = self.compute()
        rows = []
        for i, name in enumerate(self.class_names):
            row: dict[str, Any] = {"class": name}
            row.update({k: nan_to_none(res[k][i]) for k in PER_CLASS_KEYS})
            row["gt_pixels"] = int(res["area_label"][i])
            row["pred_pixels"] = int(res["area_pred"][i])
            rows.append(row)
        return rows

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "segmentation",
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "reduce_zero_label": self.reduce_zero_label,
            "label_map": {str(k): v for k, v in self.label_map.items()},
            "class_names": list(self.class_names),
            "num_images": self.num_images,
            "confusion_matrix": self.confusion.tolist(),
            "out_of_range": self.out_of_range.tolist(),
            "invalid_gt": self.invalid_gt,
            "unknown_ids": {str(k): v for k, v in sorted(self.unknown_ids.items())},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "SegmentationMetrics":
        if data.get("type") != "segmentation":
            raise ValueError(f"not a segmentation metrics state (type={data.get('type')!r})")
        m = cls(data["num_classes"], data["ignore_index"], data["reduce_zero_label"],
                {int(k): int(v) for k, v in data.get("label_map", {}).items()}, data.get("class_names"))
        cm = np.asarray(data["confusion_matrix"], np.int64)
        if cm.shape != m.confusion.shape:
            raise ValueError(f"confusion matrix is {cm.shape}, expected {m.confusion.shape}")
        m.confusion = cm
        m.out_of_range = np.asarray(data.get("out_of_range", [0] * m.num_classes), np.int64)
        m.invalid_gt = int(data.get("invalid_gt", 0))
        m.unknown_ids = {int(k): int(v) for k, v in data.get("unknown_ids", {}).items()}
        m.num_images = int(data.get("num_images", 0))
        return m


__all__ = ["SegmentationMetrics", "metrics_from_confusion", "reduce_zero_label", "apply_label_map",
           "SUMMARY_KEYS", "PER_CLASS_KEYS"]
