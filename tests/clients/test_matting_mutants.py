"""Exact checks on clients/metrics/matting.py that mutation testing showed were missing.

Each test pins a behaviour a surviving mutmut mutant changed (`make mutation`, docs/testing.md):
alpha input rules at their edges, the trimap's kernel shape, iterations and dtype, the filter's
size and sign, the connectivity error on alphas that sit exactly on its threshold levels
(against the loop reference in test_metrics_matting.py), and the JSON state.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_metrics_matting import ref_connectivity_error

from clients.metrics import MattingMetrics, make_trimap
from clients.metrics.matting import (connectivity_error, gauss_filters, gauss_gradient, gradient_error,
                                     matting_errors, to_unit_alpha)


def test_unit_alpha_shapes_dtypes_and_edges():
    assert to_unit_alpha(np.array([[[0], [255]]], np.uint8)).tolist() == [[0.0, 1.0]]
    assert to_unit_alpha(np.array([[0.25, 0.5]], np.float32)).tolist() == [[0.25, 0.5]]
    assert to_unit_alpha(np.array([[-1e-6, 1 + 1e-6]])).tolist() == [[0.0, 1.0]]  # tolerance, then clipped
    assert to_unit_alpha(np.array([[-5e-7, 1 + 5e-7]])).tolist() == [[0.0, 1.0]]
    with pytest.raises(ValueError, match=r"^alpha must be \(H, W\), got shape \(1, 2, 2\)$"):
        to_unit_alpha(np.zeros((1, 2, 2), np.uint8))
    with pytest.raises(ValueError, match=r"^alpha must be uint8 \(0\.\.255\) or float \(0\.\.1\), got int32$"):
        to_unit_alpha(np.zeros((2, 2), np.int32))
    for bad in (-0.5, 1.5):
        with pytest.raises(ValueError, match=r"^float alpha must lie in \[0, 1\] \(got .*\); pass uint8 for a 0\.\.255 matte$"):
            to_unit_alpha(np.array([[0.5, bad]]))


def test_matting_errors_name_the_bad_input_and_accept_a_channel_trimap():
    with pytest.raises(ValueError, match=r"^pred_alpha must be \(H, W\)"):
        matting_errors(np.zeros((1, 2, 2)), np.zeros((2, 2)), np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match=r"^gt_alpha must be \(H, W\)"):
        matting_errors(np.zeros((2, 2)), np.zeros((1, 2, 2)), np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match=r"^pred \(2, 2\), gt \(2, 2\) and trimap \(2, 3\) must be the same \(H, W\)$"):
        matting_errors(np.zeros((2, 2)), np.zeros((2, 2)), np.zeros((2, 3), np.uint8))
    pred, gt = np.array([[0.5, 1.0]]), np.array([[0.0, 1.0]])
    res = matting_errors(pred, gt, np.array([[[128], [128]]], np.uint8))  # (H, W, 1) as read from a file
    assert res["sad"] == pytest.approx(0.5 / 1000) and res["mse"] == pytest.approx(0.25 / 2)


def test_no_unknown_pixel_gives_zero_mse():
    res = matting_errors(np.array([[0.5, 1.0]]), np.array([[0.0, 1.0]]), np.array([[0, 255]], np.uint8))
    assert res["mse"] == 0.0 and res["sad"] == 0.0


def test_trimap_argument_checks_and_no_erosion():
    with pytest.raises(ValueError, match=r"^need kernel_size >= 1 and iterations >= 0, got 0, 1$"):
        make_trimap(np.zeros((3, 3)), kernel_size=0)
    with pytest.raises(ValueError, match=r"^need kernel_size >= 1 and iterations >= 0, got 3, -1$"):
        make_trimap(np.zeros((3, 3)), kernel_size=3, iterations=-1)
    alpha = np.array([[0.0, 0.5, 1.0]])
    for k, it in [(1, 1), (3, 0)]:  # a 1x1 kernel or no iteration erodes nothing
        assert make_trimap(alpha, kernel_size=k, iterations=it).tolist() == [[0, 128, 255]]
    assert make_trimap(alpha, 1).dtype == np.uint8


def _diamond(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[0:9, 0:9]
    return (abs(yy - 4) + abs(xx - 4)) <= radius


@pytest.mark.parametrize("iterations", [1, 2])
def test_trimap_kernel_is_an_ellipse_and_iterations_count(iterations):
    # a 3x3 ellipse is a cross: each iteration grows a one-pixel hole by a diamond step (a square would
    # grow a square)
    hole = np.ones((9, 9))
    hole[4, 4] = 0.0
    expected = np.where(_diamond(iterations), 128, 255)
    np.testing.assert_array_equal(make_trimap(hole, kernel_size=3, iterations=iterations), expected)
    dot = np.zeros((9, 9))
    dot[4, 4] = 1.0
    expected = np.where(_diamond(iterations), 128, 0)
    np.testing.assert_array_equal(make_trimap(dot, kernel_size=3, iterations=iterations), expected)


def test_default_trimap_band_on_a_hard_edge():
    alpha = np.zeros((30, 40), np.uint8)
    alpha[:, 20:] = 255
    tri = make_trimap(alpha)
    assert ((tri == 128).sum(axis=1) == 9).all()  # kernel_size 10: k - 1 unknown columns across
    np.testing.assert_array_equal(tri, make_trimap(alpha, 10, 1))
    assert MattingMetrics().settings() == (10, 1)


def test_gradient_filter_size_and_sign():
    fx, fy = gauss_filters(1.4)
    assert fx.shape == (9, 9)  # half = ceil(1.4 * sqrt(-2 ln(sqrt(2 pi) * 1.4 * 0.01))) = 4
    assert gauss_filters(3.0)[0].shape == (15, 15)  # half = 7
    assert gauss_filters(1.6)[0].shape == (11, 11)  # 1.6 * sqrt(-2 ln(sqrt(2 pi) * 0.016)) = 4.06: half = 5
    assert fx[4, 5] < 0 < fx[4, 3]  # derivative of a Gaussian: -x g(x)
    np.testing.assert_array_equal(fy, fx.T)
    assert np.sum(fx ** 2) == pytest.approx(1.0)


def test_gradient_defaults_and_sigma_reach_both_sides():
    rng = np.random.default_rng(0)
    img = rng.random((12, 12))
    np.testing.assert_array_equal(gauss_gradient(img), gauss_gradient(img, 1.4))
    assert gradient_error(img, img, np.ones_like(img), sigma=3.0) == 0.0


@pytest.mark.parametrize("seed", range(6))
def test_connectivity_on_threshold_levels_matches_the_loop_reference(seed):
    rng = np.random.default_rng(seed)
    levels = np.concatenate([np.arange(0, 1.1, 0.1), [0.25]])  # the levels themselves, and 0.25 - 0.1 == 0.15
    gt = levels[rng.integers(0, len(levels), (12, 12))]
    pred = np.where(rng.random((12, 12)) < 0.5, gt, levels[rng.integers(0, len(levels), (12, 12))])
    trimap = np.full((12, 12), 128, np.uint8)
    assert connectivity_error(pred, gt, trimap == 128) == pytest.approx(ref_connectivity_error(pred, gt, trimap),
                                                                        abs=1e-12)


def test_update_builds_the_trimap_with_its_settings_and_json_keeps_them():
    alpha = np.zeros((20, 20))
    alpha[5:15, 5:15] = 1.0
    alpha[5:15, 5] = 0.5
    pred = np.clip(alpha + 0.1, 0, 1)
    m = MattingMetrics(trimap_kernel=3, trimap_iterations=2)
    assert m.update(pred, alpha, key="a") == matting_errors(pred, alpha, make_trimap(alpha, 3, 2))
    state = json.loads(json.dumps(m.to_json()))
    assert state["trimap_kernel"] == 3 and state["trimap_iterations"] == 2
    assert MattingMetrics.from_json(state).settings() == (3, 2)
    bare = {k: v for k, v in state.items() if k not in ("trimap_kernel", "trimap_iterations")}
    assert MattingMetrics.from_json(bare).settings() == (10, 1)
    with pytest.raises(ValueError, match=r"^not a matting metrics state \(type='depth'\)$"):
        MattingMetrics.from_json({"type": "depth"})
