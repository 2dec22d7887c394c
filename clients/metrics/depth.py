"""Monocular-depth metrics with the Eigen / monodepth2 / BTS conventions, averaged over images.

Per image: valid mask `min_depth < gt < max_depth` (and an optional Garg/Eigen crop), optional
alignment (median scaling, or MiDaS least-squares scale+shift in disparity space), predictions
clipped to [min_depth, max_depth], then abs_rel, sq_rel, rmse, rmse_log, log10, delta1..3, silog.
The prediction is depth (default) or disparity (relative inverse depth, as MiDaS, DPT and Depth
Anything output); a disparity is aligned in its own space and scored as the depth it implies.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import numpy as np

from .common import PerImageMetrics, PerImageTable

DEPTH_KEYS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "delta1", "delta2", "delta3", "silog")
# Lower is better for errors, higher for the delta accuracies (used by reports).
HIGHER_IS_BETTER = ("delta1", "delta2", "delta3")
ALIGNMENTS = ("none", "median", "scale_shift")
PREDICTIONS = ("depth", "disparity")  # what the model outputs
CROPS = ("garg", "eigen_kitti", "eigen_nyu")


def crop_mask(shape: tuple[int, int], crop: Optional[str]) -> np.ndarray:
    """Boolean (H, W) evaluation region: the whole image, or a published crop."""
    h, w = shape
    mask = np.zeros((h, w), bool)
    if crop is None:
        mask[:] = True
    elif crop == "garg":  # Garg et al. (KITTI), as in BTS/monodepth2
        mask[int(0.40810811 * h):int(0.99189189 * h), int(0.03594771 * w):int(0.96405229 * w)] = True
    elif crop == "eigen_kitti":
        mask[int(0.3324324 * h):int(0.91351351 * h), int(0.0359477 * w):int(0.96405229 * w)] = True
    elif crop == "eigen_nyu":
        # [45:471, 41:601] on NYU's 480x640; scaled in integer arithmetic for other sizes.
        mask[45 * h // 480:471 * h // 480, 41 * w // 640:601 * w // 640] = True
    else:
        raise ValueError(f"unknown depth crop {crop!r}; known: {', '.join(CROPS)} (or none)")
    return mask


def scale_shift_disparity(pred: np.ndarray, gt: np.ndarray, prediction: str = "depth") -> tuple[float, float]:
    """MiDaS `compute_scale_and_shift`: (s, t) minimising sum (s*x + t - 1/gt)^2 (1-D arrays), where
    x is the predicted disparity: `pred` itself, or 1/pred for a depth prediction. A singular
    system (e.g. a constant prediction) gives (0, 0), as in MiDaS."""
    x = pred if prediction == "disparity" else 1.0 / pred
    y = 1.0 / gt
    a00, a01, a11 = float((x * x).sum()), float(x.sum()), float(x.size)
    b0, b1 = float((x * y).sum()), float(y.sum())
    det = a00 * a11 - a01 * a01
    if det == 0:
        return 0.0, 0.0
    return (a11 * b0 - a01 * b1) / det, (-a01 * b0 + a00 * b1) / det


def fit_alignment(pred: np.ndarray, gt: np.ndarray, alignment: str, max_depth: float,
                  prediction: str = "depth") -> Callable[[np.ndarray], np.ndarray]:
    """Fit the alignment on valid-pixel arrays (1-D); returns the map from a prediction (any shape)
    to aligned depth, before clipping."""
    if alignment == "scale_shift":
        # Fit in disparity space, cap the disparity at 1/max_depth (MiDaS' depth cap), back to depth.
        s, t = scale_shift_disparity(pred, gt, prediction)

        def to_depth(p: np.ndarray) -> np.ndarray:
            x = p if prediction == "disparity" else 1.0 / p
            return 1.0 / np.maximum(s * x + t, 1.0 / max_depth)

        return to_depth
    # A scale-only alignment of 1/disparity is a depth up to scale.
    as_depth: Callable[[np.ndarray], np.ndarray] = (lambda p: 1.0 / p) if prediction == "disparity" else (lambda p: p)
    if alignment == "none":
        return as_depth
    if alignment == "median":  # monodepth2: pred *= median(gt) / median(pred)
        k = np.median(gt) / np.median(as_depth(pred))
        return lambda p: as_depth(p) * k
    raise ValueError(f"unknown depth alignment {alignment!r}; known: {', '.join(ALIGNMENTS)}")


def align(pred: np.ndarray, gt: np.ndarray, alignment: str, max_depth: float,
          prediction: str = "depth") -> np.ndarray:
    """Align valid-pixel predictions (1-D) to the ground truth before clipping; returns depth."""
    return fit_alignment(pred, gt, alignment, max_depth, prediction)(pred)


def depth_errors(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """BTS `compute_errors` on matching 1-D arrays of positive depths."""
    thresh = np.maximum(gt / pred, pred / gt)
    err = np.log(pred) - np.log(gt)
    # mean(e^2) - mean(e)^2 can round to a hair below 0 for a near-perfect prediction.
    silog_var = max(float(np.mean(err ** 2) - np.mean(err) ** 2), 0.0)
    return {
        "abs_rel": float(np.mean(np.abs(gt - pred) / gt)),
        "sq_rel": float(np.mean((gt - pred) ** 2 / gt)),
        "rmse": float(np.sqrt(np.mean((gt - pred) ** 2))),
        "rmse_log": float(np.sqrt(np.mean(err ** 2))),
        "log10": float(np.mean(np.abs(np.log10(pred) - np.log10(gt)))),
        "delta1": float(np.mean(thresh < 1.25)),
        "delta2": float(np.mean(thresh < 1.25 ** 2)),
        "delta3": float(np.mean(thresh < 1.25 ** 3)),
        "silog": 100.0 * float(np.sqrt(silog_var)),
    }


class DepthMetrics(PerImageMetrics):
    """Per-image depth errors, averaged over images (images without a valid pixel are skipped)."""

    def __init__(self, min_depth: float = 1e-3, max_depth: float = 10.0, alignment: str = "none",
                 crop: Optional[str] = None, prediction: str = "depth") -> None:
        if not 0 <= min_depth < max_depth:
            raise ValueError(f"need 0 <= min_depth < max_depth, got {min_depth}, {max_depth}")
        if alignment not in ALIGNMENTS:
            raise ValueError(f"unknown depth alignment {alignment!r}; known: {', '.join(ALIGNMENTS)}")
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown depth prediction kind {prediction!r}; known: {', '.join(PREDICTIONS)}")
        if prediction == "disparity" and alignment == "none":
            raise ValueError("a disparity prediction has no metric scale; use alignment 'scale_shift' "
                             "(MiDaS) or 'median'")
        self.prediction = prediction
        if crop is not None and crop not in CROPS:
            raise ValueError(f"unknown depth crop {crop!r}; known: {', '.join(CROPS)} (or none)")
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.alignment, self.crop = alignment, crop
        self.table = PerImageTable(DEPTH_KEYS)

    @property
    def num_images(self) -> int:
        return len(self.table.rows)

    def valid_mask(self, gt: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return (gt > self.min_depth) & (gt < self.max_depth) & crop_mask(gt.shape, self.crop)

    def image_errors(self, pred: np.ndarray, gt: np.ndarray) -> Optional[dict[str, float]]:
        """The errors of one image, or None when it has no valid ground-truth pixel."""
        pred = np.asarray(pred, np.float64)
        gt = np.asarray(gt, np.float64)
        if pred.shape != gt.shape or pred.ndim != 2:
            raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} must be the same (H, W)")
        mask = self.valid_mask(gt)
        if not mask.any():
            return None
        p, g = self._sanitize(pred[mask]), gt[mask]
        p = align(p, g, self.alignment, self.max_depth, self.prediction)
        p = np.clip(p, self.min_depth, self.max_depth)
        return depth_errors(p, g)

    def _sanitize(self, p: np.ndarray) -> np.ndarray:
        """BTS: non-finite predictions become the range ends instead of poisoning the mean."""
        if self.prediction == "disparity":
            # Disparity: NaN is "no signal" (0), +inf is nearest (1/min_depth); the scale-shift fit
            # takes any value, but 1/disparity (median alignment) needs it positive.
            p = np.where(np.isnan(p), 0.0, np.where(np.isinf(p), 1.0 / max(self.min_depth, 1e-12), p))
            return np.maximum(p, 1.0 / self.max_depth) if self.alignment == "median" else p
        p = np.where(np.isnan(p), self.min_depth, np.where(np.isinf(p), self.max_depth, p))
        return np.maximum(p, self.min_depth) if self.alignment != "none" else p  # 1/pred, ratios need > 0

    def aligned_depth(self, pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
        """The whole prediction as the metrics score it (for pictures): depth, aligned with the fit
        on the valid pixels, clipped to the range. Without a valid pixel, alignment is skipped."""
        pred = self._sanitize(np.asarray(pred, np.float64))
        gt = np.asarray(gt, np.float64)
        mask = self.valid_mask(gt)
        alignment = self.alignment if mask.any() else "none"
        with np.errstate(divide="ignore", invalid="ignore"):
            to_depth = fit_alignment(pred[mask], gt[mask], alignment, self.max_depth, self.prediction)
            return np.clip(np.nan_to_num(to_depth(pred), nan=self.max_depth, posinf=self.max_depth),
                           self.min_depth, self.max_depth)

    def update(self, pred: np.ndarray, gt: np.ndarray, key: Optional[str] = None) -> Optional[dict[str, float]]:
        errors = self.image_errors(pred, gt)
        if errors is None:
            self.table.skip(key, f"no ground-truth pixel in ({self.min_depth}, {self.max_depth})")
        else:
            self.table.add(key, errors)
        return errors

    def settings(self) -> tuple:
        return (self.min_depth, self.max_depth, self.alignment, self.crop, self.prediction)

    def to_json(self) -> dict[str, Any]:
        return {"type": "depth", "min_depth": self.min_depth, "max_depth": self.max_depth,
                "alignment": self.alignment, "crop": self.crop, "prediction": self.prediction,
                **self.table.to_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "DepthMetrics":
        if data.get("type") != "depth":
            raise ValueError(f"not a depth metrics state (type={data.get('type')!r})")
        m = cls(data["min_depth"], data["max_depth"], data["alignment"], data.get("crop"),
                data.get("prediction", "depth"))
        m.table = PerImageTable.from_json(dict(data), DEPTH_KEYS)
        return m
