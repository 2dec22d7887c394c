"""MattingMetrics against hand-computed cases and independent loop implementations of mmagic's
published gradient and connectivity errors (no cv2 in the references)."""

from __future__ import annotations

import json
from collections import deque

import numpy as np
import pytest

from clients.metrics import MattingMetrics, make_trimap, metrics_from_json
from clients.metrics.matting import connectivity_error, gradient_error


def ref_gradient_error(pred, gt, trimap, sigma=1.4):
    def gauss(x):
        return np.exp(-x ** 2 / (2 * sigma ** 2)) / (sigma * np.sqrt(2 * np.pi))

    half = int(np.ceil(sigma * np.sqrt(-2 * np.log(np.sqrt(2 * np.pi) * sigma * 1e-2))))
    size = 2 * half + 1
    fx = np.zeros((size, size))
    for i in range(size):
        for j in range(size):
            fx[i, j] = gauss(i - half) * (-(j - half) * gauss(j - half) / sigma ** 2)
    fx /= np.sqrt((fx ** 2).sum())
    fy = fx.T

    def grad(img):
        img = (img - img.min()) / (img.max() - img.min()) if img.max() > img.min() else np.zeros_like(img)
        h, w = img.shape
        out = np.zeros_like(img)
        for y in range(h):
            for x in range(w):
                gx = gy = 0.0
                for i in range(size):
                    for j in range(size):
                        v = img[min(max(y + i - half, 0), h - 1), min(max(x + j - half, 0), w - 1)]
                        gx += fx[i, j] * v
                        gy += fy[i, j] * v
                out[y, x] = np.hypot(gx, gy)
        return out

    return float(((grad(gt) - grad(pred)) ** 2 * (trimap == 128)).sum() / 1000)


def largest_component(mask):
    """4-connected largest component by BFS; ties go to the first found in raster order."""
    h, w = mask.shape
    seen = np.zeros_like(mask, bool)
    best = np.zeros_like(mask, bool)
    best_n = 0
    for y in range(h):
        for x in range(w):
            if mask[y, x] and not seen[y, x]:
                comp = []
                q = deque([(y, x)])
                seen[y, x] = True
                while q:
                    cy, cx = q.popleft()
                    comp.append((cy, cx))
                    for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                        if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                            seen[ny, nx] = True
                            q.append((ny, nx))
                if len(comp) > best_n:
                    best_n = len(comp)
                    best = np.zeros_like(mask, bool)
                    for cy, cx in comp:
                        best[cy, cx] = True
    return best


def ref_connectivity_error(pred, gt, trimap, step=0.1):
    levels = np.arange(0, 1 + step, step)
    h, w = gt.shape
    err = 0.0
    lvl = np.ones_like(gt)
    done = np.zeros_like(gt, bool)
    for i in range(1, len(levels)):
        comp = largest_component((gt >= levels[i]) & (pred >= levels[i]))
        newly = ~done & ~comp
        lvl[newly] = levels[i - 1]
        done |= newly
    for y in range(h):
        for x in range(w):
            if trimap[y, x] == 128:
                dg, dp = gt[y, x] - lvl[y, x], pred[y, x] - lvl[y, x]
                phi_g = 1 - (dg if dg >= 0.15 else 0)
                phi_p = 1 - (dp if dp >= 0.15 else 0)
                err += abs(phi_g - phi_p)
    return err / 1000


def soft_disc(h, w, cy, cx, r, soft):
    yy, xx = np.mgrid[0:h, 0:w]
    d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    return np.clip((r - d) / soft + 0.5, 0, 1)


def test_make_trimap_values_and_band():
    alpha = np.zeros((40, 40), np.uint8)
    alpha[10:30, 10:30] = 255
    alpha[10:30, 10] = 128  # a soft column is always unknown
    tri = make_trimap(alpha, kernel_size=5, iterations=1)
    assert set(np.unique(tri)) == {0, 128, 255}
    assert tri[20, 20] == 255 and tri[0, 0] == 0 and tri[20, 10] == 128
    assert tri[20, 29] == 128 and tri[20, 30] == 128  # both sides of a hard edge become unknown
    assert (make_trimap(alpha, kernel_size=9) == 128).sum() > (tri == 128).sum()


def test_hand_computed_sad_mse_and_uint8_float_agree():
    gt = np.zeros((4, 5), np.uint8)
    gt[:, 2:] = 255
    pred = gt.astype(np.float64) / 255
    pred[0, 0] = 0.5  # one pixel off by 0.5 (in the background)
    pred[1, 2] = 0.75  # one pixel off by 0.25 (in the unknown band)
    trimap = np.zeros((4, 5), np.uint8)
    trimap[:, 1:3] = 128
    trimap[:, 3:] = 255
    res = MattingMetrics().update(pred, gt, trimap)
    assert res["sad"] == pytest.approx(0.25 / 1000)  # over the unknown band only: [0, 0] is background
    assert res["mse"] == pytest.approx(0.25 ** 2 / 8)  # over the 8 unknown pixels only
    again = MattingMetrics().update((pred * 255).round().astype(np.uint8), gt, trimap)
    assert again["sad"] == pytest.approx(res["sad"], abs=2 / 255 / 1000)
    perfect = MattingMetrics().update(gt, gt, trimap)
    assert perfect == {"sad": 0.0, "mse": 0.0, "grad": 0.0, "conn": 0.0}
    with pytest.raises(ValueError, match="0, 1"):
        MattingMetrics().update(pred * 255, gt, trimap)


@pytest.mark.parametrize("seed", range(2))
def test_gradient_and_connectivity_match_loop_references(seed):
    rng = np.random.default_rng(seed)
    gt = soft_disc(18, 20, 9, 10, 5, 3.0)
    pred = np.clip(gt + rng.normal(0, 0.15, gt.shape), 0, 1)
    pred[2:5, 2:5] = 0.9  # a disconnected blob: connectivity must penalise it
    tri = make_trimap(gt, kernel_size=3)
    unknown = (tri == 128).astype(np.float64)
    assert unknown.sum() > 20
    assert gradient_error(pred, gt, unknown) == pytest.approx(ref_gradient_error(pred, gt, tri), rel=1e-9)
    assert connectivity_error(pred, gt, unknown) == pytest.approx(ref_connectivity_error(pred, gt, tri), rel=1e-9)
    assert connectivity_error(pred, gt, unknown) > 0


def test_default_trimap_merge_and_json_round_trip():
    gts = [soft_disc(24, 24, 12, 12, r, 2.0) for r in (5, 7, 9)]
    whole, a, b = MattingMetrics(), MattingMetrics(), MattingMetrics()
    for i, g in enumerate(gts):
        p = np.clip(g * 0.9 + 0.05, 0, 1)
        whole.update(p, g, key=str(i))
        (a if i == 0 else b).update(p, g, key=str(i))
    assert a.merge(b).compute() == whole.compute()
    back = metrics_from_json(json.loads(json.dumps(whole.to_json())))
    assert back.compute() == whole.compute() and back.num_images == 3


def test_sad_and_mse_are_dims_unknown_region_sums():
    """DIM's compute_sad_loss and compute_mse_loss, written as loops over the trimap."""
    rng = np.random.default_rng(7)
    gt = rng.integers(0, 256, (9, 11)).astype(np.uint8)
    pred = rng.random((9, 11))
    trimap = rng.choice(np.array([0, 128, 255], np.uint8), size=(9, 11))
    sad = sq = n = 0.0
    for y in range(9):
        for x in range(11):
            if trimap[y, x] == 128:
                d = pred[y, x] - gt[y, x] / 255
                sad, sq, n = sad + abs(d), sq + d * d, n + 1
    res = MattingMetrics().update(pred, gt, trimap)
    assert res["sad"] == pytest.approx(sad / 1000, rel=1e-12)
    assert res["mse"] == pytest.approx(sq / n, rel=1e-12)


@pytest.mark.parametrize("kernel", [3, 5, 9])
def test_generated_trimap_band_across_a_hard_edge(kernel):
    alpha = np.zeros((30, 40), np.uint8)
    alpha[:, 20:] = 255
    row = make_trimap(alpha, kernel_size=kernel)[15]
    unknown = np.flatnonzero(row == 128)
    # erode the foreground and dilate the non-zero alpha by kernel // 2 each: kernel - 1 pixels
    assert unknown.tolist() == list(range(20 - kernel // 2, 20 + kernel // 2))
    assert (row[: unknown[0]] == 0).all() and (row[unknown[-1] + 1:] == 255).all()
