"""Alpha-matting metrics with mmagic's conventions (SAD, MSE, gradient and connectivity errors).

All four errors are taken over the trimap's unknown region, as the DIM benchmark defines them.
Alphas may be float in [0, 1] or uint8 in [0, 255]; trimaps are uint8 0 (background),
128 (unknown) and 255 (foreground): the dataset's own files where it has them, else built from
the ground truth by `make_trimap`.
Per-image values are averaged over images, as mmagic does. cv2 (filters, erosion, connected
components) is imported inside the functions, so segmentation and depth metrics stay numpy-only.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np

from .common import PerImageMetrics, PerImageTable

MATTING_KEYS = ("sad", "mse", "grad", "conn")
UNKNOWN = 128
NORM_CONST = 1000.0  # mmagic divides SAD, gradient and connectivity errors by 1000


def to_unit_alpha(alpha: np.ndarray, name: str = "alpha") -> np.ndarray:
    """float64 alpha in [0, 1] from uint8 [0, 255] or float [0, 1]."""
    a = np.asarray(alpha)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        raise ValueError(f"{name} must be (H, W), got shape {a.shape}")
    if a.dtype == np.uint8:
        return a.astype(np.float64) / 255.0
    if np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
        if a.size and (np.nanmin(a) < -1e-6 or np.nanmax(a) > 1 + 1e-6):
            raise ValueError(
                f"float {name} must lie in [0, 1] (got {np.nanmin(a):.3g}..{np.nanmax(a):.3g}); "
                "pass uint8 for a 0..255 matte"
            )
        return np.clip(a, 0.0, 1.0)
    raise ValueError(f"{name} must be uint8 (0..255) or float (0..1), got {a.dtype}")


def make_trimap(alpha: np.ndarray, kernel_size: int = 10, iterations: int = 1) -> np.ndarray:
    """Trimap from alpha (mmagic's GenerateTrimap): the fully opaque and fully transparent regions,
    each eroded by an elliptic kernel, are 255 and 0; everything else is 128 (unknown). Eroding the
    background is dilating the non-zero alpha, so this is the usual erode/dilate band: a hard edge
    gets kernel_size - 1 unknown pixels across (k // 2 on each side, for odd k)."""
    if kernel_size < 1 or iterations < 0:
        raise ValueError(f"need kernel_size >= 1 and iterations >= 0, got {kernel_size}, {iterations}")
    import cv2

    a = np.rint(to_unit_alpha(alpha) * 255).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel_size, kernel_size))
    fg = cv2.erode((a == 255).astype(np.uint8), kernel, iterations=iterations)
    bg = cv2.erode((a == 0).astype(np.uint8), kernel, iterations=iterations)
    trimap = np.full(a.shape, UNKNOWN, np.uint8)
    trimap[fg >= 1] = 255
    trimap[bg >= 1] = 0
    return trimap


def _gauss(x: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-x ** 2 / (2 * sigma ** 2)) / (sigma * np.sqrt(2 * np.pi))


def gauss_filters(sigma: float, epsilon: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
    """mmagic's `gauss_filter`: a Gaussian x derivative-of-Gaussian kernel (unit L2 norm) and its
    transpose, sized where the Gaussian falls below `epsilon`."""
    half = float(np.ceil(sigma * np.sqrt(-2 * np.log(np.sqrt(2 * np.pi) * sigma * epsilon))))
    offsets = np.arange(int(2 * half + 1)) - half
    g = _gauss(offsets, sigma)
    dg = -offsets * g / sigma ** 2
    filter_x = np.outer(g, dg)  # [i, j] = gauss(i - half) * dgauss(j - half)
    filter_x /= np.sqrt((filter_x ** 2).sum())
    return filter_x, filter_x.T.copy()


def gauss_gradient(img: np.ndarray, sigma: float = 1.4) -> np.ndarray:
    import cv2

    fx, fy = gauss_filters(sigma)
    gx = cv2.filter2D(img, -1, fx, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.filter2D(img, -1, fy, borderType=cv2.BORDER_REPLICATE)
    return np.sqrt(gx ** 2 + gy ** 2)


def gradient_error(pred: np.ndarray, gt: np.ndarray, unknown: np.ndarray, sigma: float = 1.4) -> float:
    """Sum over the unknown region of (|grad gt| - |grad pred|)^2 / 1000, each alpha first min-max
    normalised to [0, 1] (cv2.normalize NORM_MINMAX, as mmagic)."""
    import cv2

    gt_n, pred_n = np.zeros_like(gt), np.zeros_like(pred)
    cv2.normalize(gt, gt_n, 1.0, 0.0, cv2.NORM_MINMAX)
    cv2.normalize(pred, pred_n, 1.0, 0.0, cv2.NORM_MINMAX)
    diff = gauss_gradient(gt_n, sigma) - gauss_gradient(pred_n, sigma)
    return float((diff ** 2 * unknown).sum() / NORM_CONST)


def connectivity_error(pred: np.ndarray, gt: np.ndarray, unknown: np.ndarray, step: float = 0.1) -> float:
    """mmagic's connectivity error: for each threshold level, the largest 4-connected component
    of (gt >= t) & (pred >= t); l = the last level at which a pixel still belonged to it;
    phi = 1 - d * (d >= 0.15) with d = alpha - l; sum |phi_gt - phi_pred| over unknown / 1000."""
    import cv2

    steps = np.arange(0, 1 + step, step)
    round_down = -np.ones_like(gt)
    for i in range(1, len(steps)):
        inter = ((gt >= steps[i]) & (pred >= steps[i])).astype(np.uint8)
        _, comp, stats, _ = cv2.connectedComponentsWithStats(inter, connectivity=4)
        sizes = stats[1:, -1]  # row 0 is the background
        omega = np.zeros_like(gt)
        if len(sizes):
            omega[comp == np.argmax(sizes) + 1] = 1
        fresh = (round_down == -1) & (omega == 0)
        round_down[fresh] = steps[i - 1]
    round_down[round_down == -1] = 1
    gt_d, pred_d = gt - round_down, pred - round_down
    gt_phi = 1 - gt_d * (gt_d >= 0.15)
    pred_phi = 1 - pred_d * (pred_d >= 0.15)
    return float((np.abs(gt_phi - pred_phi) * unknown).sum() / NORM_CONST)


def matting_errors(pred_alpha: np.ndarray, gt_alpha: np.ndarray, trimap: np.ndarray) -> dict[str, float]:
    pred = to_unit_alpha(pred_alpha, "pred_alpha")
    gt = to_unit_alpha(gt_alpha, "gt_alpha")
    trimap = np.asarray(trimap)
    if pred.shape != gt.shape or trimap.shape[:2] != gt.shape:
        raise ValueError(f"pred {pred.shape}, gt {gt.shape} and trimap {trimap.shape} must be the same (H, W)")
    unknown = (trimap.reshape(gt.shape) == UNKNOWN).astype(np.float64)
    n_unknown = unknown.sum()
    # The DIM benchmark (Xu et al.'s compute_sad_loss / compute_mse_loss) sums both over the
    # trimap's unknown region: SAD / 1000, MSE / the unknown area. (mmagic sums over the whole
    # image, but its prediction is first clamped to the trimap's known values, which is the same.)
    mse = float(((pred - gt) ** 2 * unknown).sum() / n_unknown) if n_unknown else 0.0
    return {
        "sad": float((np.abs(pred - gt) * unknown).sum() / NORM_CONST),
        "mse": mse,
        "grad": gradient_error(pred, gt, unknown),
        "conn": connectivity_error(pred, gt, unknown),
    }


class MattingMetrics(PerImageMetrics):
    """Per-image SAD, MSE, gradient and connectivity errors, averaged over images."""

    def __init__(self, trimap_kernel: int = 10, trimap_iterations: int = 1) -> None:
        self.trimap_kernel, self.trimap_iterations = trimap_kernel, trimap_iterations
        self.table = PerImageTable(MATTING_KEYS)

    @property
    def num_images(self) -> int:
        return len(self.table.rows)

    def update(self, pred_alpha: np.ndarray, gt_alpha: np.ndarray, trimap: Optional[np.ndarray] = None,
               key: Optional[str] = None) -> dict[str, float]:
        if trimap is None:
            trimap = make_trimap(gt_alpha, self.trimap_kernel, self.trimap_iterations)
        errors = matting_errors(pred_alpha, gt_alpha, trimap)
        self.table.add(key, errors)
        return errors

    def settings(self) -> tuple:
        return (self.trimap_kernel, self.trimap_iterations)

    def to_json(self) -> dict[str, Any]:
        return {"type": "matting", "trimap_kernel": self.trimap_kernel,
                "trimap_iterations": self.trimap_iterations, **self.table.to_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "MattingMetrics":
        if data.get("type") != "matting":
            raise ValueError(f"not a matting metrics state (type={data.get('type')!r})")
        m = cls(int(data.get("trimap_kernel", 10)), int(data.get("trimap_iterations", 1)))
        m.table = PerImageTable.from_json(dict(data), MATTING_KEYS)
        return m
