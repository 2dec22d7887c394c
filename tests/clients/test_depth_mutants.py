"""Exact checks on clients/metrics/depth.py that mutation testing showed were missing.

Each test pins a behaviour a surviving mutmut mutant changed (`make mutation`, docs/testing.md):
the crop regions to the pixel, the range ends (excluded), thresholds hit exactly (1.25^2 and
1.25^3 are exact binary fractions), what non-finite predictions become, a fit with det == 1,
warning-free NaN handling, and the JSON state. Expected values are written out by hand.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from clients.metrics import DepthMetrics
from clients.metrics.depth import crop_mask, depth_errors, scale_shift_disparity

KNOWN_CROPS = "garg, eigen_kitti, eigen_nyu"


def box(shape, rows, cols) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[rows[0]:rows[1], cols[0]:cols[1]] = True
    return mask


@pytest.mark.parametrize("crop, rows, cols", [
    ("garg", (40, 99), (7, 192)),         # 0.40810811 * 100 .. 0.99189189 * 100, 0.03594771 * 200 .. 0.96405229 * 200
    ("eigen_kitti", (33, 91), (7, 192)),  # 0.3324324 * 100 .. 0.91351351 * 100, same columns
    ("eigen_nyu", (9, 98), (12, 187)),    # [45:471, 41:601] scaled from 480x640 to 100x200
])
def test_crop_regions_to_the_pixel(crop, rows, cols):
    np.testing.assert_array_equal(crop_mask((100, 200), crop), box((100, 200), rows, cols))
    m = DepthMetrics(crop=crop)
    assert m.crop == crop
    np.testing.assert_array_equal(m.valid_mask(np.ones((100, 200))), box((100, 200), rows, cols))


def test_unknown_names_are_refused_with_the_known_ones():
    with pytest.raises(ValueError, match=rf"^unknown depth crop 'x'; known: {KNOWN_CROPS} \(or none\)$"):
        crop_mask((4, 4), "x")
    with pytest.raises(ValueError, match=rf"^unknown depth crop 'x'; known: {KNOWN_CROPS} \(or none\)$"):
        DepthMetrics(crop="x")
    with pytest.raises(ValueError, match=r"^unknown depth alignment 'x'; known: none, median, scale_shift$"):
        DepthMetrics(alignment="x")
    with pytest.raises(ValueError, match=r"^unknown depth prediction kind 'x'; known: depth, disparity$"):
        DepthMetrics(prediction="x")
    with pytest.raises(ValueError, match=r"^a disparity prediction has no metric scale; use alignment "
                                         r"'scale_shift' \(MiDaS\) or 'median'$"):
        DepthMetrics(prediction="disparity")
    with pytest.raises(ValueError, match=r"^need 0 <= min_depth < max_depth, got 2.0, 2.0$"):
        DepthMetrics(min_depth=2.0, max_depth=2.0)
    from clients.metrics.depth import fit_alignment
    with pytest.raises(ValueError, match=r"^unknown depth alignment 'x'; known: none, median, scale_shift$"):
        fit_alignment(np.ones(2), np.ones(2), "x", 10.0)


def test_min_depth_zero_is_allowed_and_range_ends_are_excluded():
    assert DepthMetrics(min_depth=0.0).min_depth == 0.0
    m = DepthMetrics(min_depth=1.0, max_depth=4.0)
    gt = np.array([[1.0, 4.0, 2.0]])
    assert m.valid_mask(gt).tolist() == [[False, False, True]]
    assert m.update(np.full((1, 2), 3.0), np.array([[1.0, 4.0]])) is None  # nothing strictly inside
    assert m.table.skipped == {"00000000": "no ground-truth pixel in (1.0, 4.0)"}


def test_shapes_must_match_with_a_clear_error():
    with pytest.raises(ValueError, match=r"^prediction \(2, 2\) and ground truth \(2, 3\) must be the same \(H, W\)$"):
        DepthMetrics().image_errors(np.ones((2, 2)), np.ones((2, 3)))


def test_delta_thresholds_are_strict():
    gt = np.ones(4)
    pred = np.array([1.25, 1.5625, 1.953125, 1.0])  # 1.25, 1.25^2, 1.25^3 exactly, and a hit
    errors = depth_errors(pred, gt)
    assert errors["delta1"] == 0.25 and errors["delta2"] == 0.5 and errors["delta3"] == 0.75


def test_scale_shift_fit_with_unit_determinant_and_singular():
    # x = [0, 1]: a00 = 1, a01 = 1, a11 = 2, det = 1; 1/gt = 2x + 3 exactly
    s, t = scale_shift_disparity(np.array([0.0, 1.0]), 1 / np.array([3.0, 5.0]), prediction="disparity")
    assert (s, t) == pytest.approx((2.0, 3.0), abs=1e-12)
    assert scale_shift_disparity(np.full(3, 2.0), np.array([1.0, 2.0, 4.0]), prediction="disparity") == (0.0, 0.0)


@pytest.mark.parametrize("prediction, alignment, min_depth, expected", [
    # depth: NaN -> min_depth, +inf -> max_depth; clamped to min_depth only when an alignment divides
    ("depth", "none", 1e-3, [1e-3, 10.0, -1.0, 2.0]),
    ("depth", "median", 1e-3, [1e-3, 10.0, 1e-3, 2.0]),
    # disparity: NaN -> 0 (no signal), +inf -> 1/min_depth (nearest); clamped to 1/max_depth for median
    ("disparity", "scale_shift", 1e-3, [0.0, 1000.0, -1.0, 2.0]),
    ("disparity", "scale_shift", 0.0, [0.0, 1e12, -1.0, 2.0]),
    ("disparity", "median", 1e-3, [0.1, 1000.0, 0.1, 2.0]),
])
def test_non_finite_predictions_become_range_ends(prediction, alignment, min_depth, expected):
    m = DepthMetrics(min_depth=min_depth, max_depth=10.0, alignment=alignment, prediction=prediction)
    got = m._sanitize(np.array([np.nan, np.inf, -1.0, 2.0]))
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_aligned_depth_without_valid_pixels_is_not_aligned():
    m = DepthMetrics(alignment="median")
    out = m.aligned_depth(np.full((2, 2), 2.0), np.zeros((2, 2)))  # no valid gt: nothing to fit
    assert out.tolist() == [[2.0, 2.0], [2.0, 2.0]]


def test_aligned_depth_turns_an_undefined_fit_into_max_depth_silently():
    # min_depth 0 lets a 0 prediction through: 1/0 = inf in the fit, whose determinant is then NaN
    m = DepthMetrics(min_depth=0.0, max_depth=10.0, alignment="scale_shift")
    with np.errstate(all="raise"):
        out = m.aligned_depth(np.array([[0.0, 1.0], [2.0, 3.0]]), np.array([[1.0, 2.0], [3.0, 4.0]]))
    assert out.tolist() == [[10.0, 10.0], [10.0, 10.0]]


def test_json_keeps_crop_and_prediction():
    m = DepthMetrics(min_depth=0.5, max_depth=20.0, alignment="scale_shift", crop="garg", prediction="disparity")
    m.update(np.full((20, 20), 0.5), np.full((20, 20), 2.0), key="a")
    state = json.loads(json.dumps(m.to_json()))
    assert {k: state[k] for k in ("type", "min_depth", "max_depth", "alignment", "crop", "prediction")} == {
        "type": "depth", "min_depth": 0.5, "max_depth": 20.0, "alignment": "scale_shift", "crop": "garg",
        "prediction": "disparity"}
    back = DepthMetrics.from_json(state)
    assert back.settings() == (0.5, 20.0, "scale_shift", "garg", "disparity")
    older = {k: v for k, v in state.items() if k != "prediction"}
    older["alignment"] = "median"
    assert DepthMetrics.from_json(older).prediction == "depth"  # states from before the field
    with pytest.raises(ValueError, match=r"^not a depth metrics state \(type='matting'\)$"):
        DepthMetrics.from_json({"type": "matting"})
    assert not math.isnan(back.table.rows["a"][0])


def test_defaults_are_nyu_range_depth_without_alignment():
    assert DepthMetrics().settings() == (1e-3, 10.0, "none", None, "depth")


def test_aligned_depth_with_a_singular_fit_and_a_zero_prediction_is_silent():
    # constant valid predictions: det == 0, so (s, t) = (0, 0); the 0 prediction outside the valid
    # region makes 1/0 = inf, and 0 * inf = NaN: both stay inside aligned_depth's errstate
    m = DepthMetrics(min_depth=0.0, max_depth=10.0, alignment="scale_shift")
    with np.errstate(all="raise"):
        out = m.aligned_depth(np.array([[2.0, 2.0], [2.0, 0.0]]), np.array([[1.0, 1.0], [1.0, 0.0]]))
    assert out.tolist() == [[10.0, 10.0], [10.0, 10.0]]
