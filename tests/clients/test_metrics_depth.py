"""DepthMetrics against hand-computed cases and BTS's compute_errors written out in the test."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clients.metrics import DepthMetrics, metrics_from_json
from clients.metrics.depth import crop_mask


def bts_errors(gt, pred):
    """BTS eval's compute_errors, as published."""
    thresh = np.maximum((gt / pred), (pred / gt))
    d1 = (thresh < 1.25).mean()
    d2 = (thresh < 1.25 ** 2).mean()
    d3 = (thresh < 1.25 ** 3).mean()
    rms = np.sqrt(((gt - pred) ** 2).mean())
    log_rms = np.sqrt(((np.log(gt) - np.log(pred)) ** 2).mean())
    abs_rel = np.mean(np.abs(gt - pred) / gt)
    sq_rel = np.mean(((gt - pred) ** 2) / gt)
    err = np.log(pred) - np.log(gt)
    silog = np.sqrt(np.mean(err ** 2) - np.mean(err) ** 2) * 100
    log10 = np.mean(np.abs(np.log10(pred) - np.log10(gt)))
    return dict(abs_rel=abs_rel, sq_rel=sq_rel, rmse=rms, rmse_log=log_rms, log10=log10,
                delta1=d1, delta2=d2, delta3=d3, silog=silog)


def test_hand_computed_constant_error():
    m = DepthMetrics(min_depth=1e-3, max_depth=10)
    res = m.update(np.full((3, 4), 2.0), np.full((3, 4), 2.5))
    assert res["abs_rel"] == pytest.approx(0.2)
    assert res["sq_rel"] == pytest.approx(0.25 / 2.5)
    assert res["rmse"] == pytest.approx(0.5)
    assert res["delta1"] == 0.0 and res["delta2"] == 1.0  # 2.5/2 = 1.25 is not < 1.25
    assert res["silog"] == pytest.approx(0.0, abs=1e-6)  # a pure scale error has zero silog


def test_mask_clip_and_skipped_image():
    m = DepthMetrics(min_depth=0.1, max_depth=10)
    gt = np.array([[0.0, 2.0], [12.0, 4.0]])  # 0 (invalid) and 12 (beyond max) are masked out
    pred = np.array([[5.0, 50.0], [1.0, 4.0]])  # 50 is clipped to 10
    res = m.update(pred, gt, key="a")
    ref = bts_errors(np.array([2.0, 4.0]), np.array([10.0, 4.0]))
    for k, v in ref.items():
        assert res[k] == pytest.approx(v), k
    assert m.update(np.ones((2, 2)), np.zeros((2, 2)), key="empty") is None
    assert m.num_images == 1 and "empty" in m.table.skipped
    assert m.compute()["abs_rel"] == pytest.approx(ref["abs_rel"])  # the skipped image is not a NaN


@pytest.mark.parametrize("seed", range(3))
def test_matches_bts_reference_and_averages_over_images(seed):
    rng = np.random.default_rng(seed)
    m = DepthMetrics(min_depth=1e-3, max_depth=10)
    per_image = []
    for i in range(4):
        gt = rng.uniform(0.5, 12, (20, 30))
        gt[rng.random(gt.shape) < 0.2] = 0
        pred = np.clip(gt * rng.uniform(0.7, 1.3, gt.shape), 0, None)
        pred[0, :3] = [np.inf, np.nan, 0.0]
        m.update(pred, gt, key=str(i))
        mask = (gt > 1e-3) & (gt < 10)
        p = pred.copy()
        p[np.isinf(p)] = 10
        p[np.isnan(p)] = 1e-3
        p = np.clip(p, 1e-3, 10)
        per_image.append(bts_errors(gt[mask], p[mask]))
    res = m.compute()
    for k in per_image[0]:
        assert res[k] == pytest.approx(np.mean([r[k] for r in per_image]), rel=1e-12), k


def test_median_alignment_removes_scale():
    rng = np.random.default_rng(0)
    gt = rng.uniform(1, 5, (16, 16))
    res = DepthMetrics(alignment="median").update(gt * 0.37, gt)
    assert res["abs_rel"] == pytest.approx(0, abs=1e-12) and res["delta1"] == 1.0


def test_scale_shift_alignment_recovers_affine_disparity():
    rng = np.random.default_rng(1)
    gt = rng.uniform(1, 5, (16, 16))
    pred_disparity = 3.0 / gt + 0.2  # an affine function of the true disparity
    res = DepthMetrics(alignment="scale_shift").update(1.0 / pred_disparity, gt)
    assert res["abs_rel"] == pytest.approx(0, abs=1e-9)
    assert DepthMetrics(alignment="none").update(1.0 / pred_disparity, gt)["abs_rel"] > 0.1


def test_crops():
    nyu = crop_mask((480, 640), "eigen_nyu")
    assert nyu.sum() == (471 - 45) * (601 - 41) and nyu[45, 41] and not nyu[44, 41] and not nyu[471, 600]
    garg = crop_mask((375, 1242), "garg")
    rows = np.where(garg.any(axis=1))[0]
    assert rows[0] == int(0.40810811 * 375) and rows[-1] == int(0.99189189 * 375) - 1
    with pytest.raises(ValueError, match="known"):
        crop_mask((4, 4), "bogus")


def test_merge_json_round_trip_and_overlap():
    rng = np.random.default_rng(3)
    data = [(rng.uniform(1, 9, (8, 8)), rng.uniform(1, 9, (8, 8))) for _ in range(5)]
    whole, a, b = DepthMetrics(), DepthMetrics(), DepthMetrics()
    for i, (p, g) in enumerate(data):
        whole.update(p, g, key=f"img{i}")
        (a if i < 2 else b).update(p, g, key=f"img{i}")
    merged = b.merge(a)  # merge order does not matter: means are taken in sorted-id order
    assert merged.compute() == whole.compute()
    back = metrics_from_json(json.loads(json.dumps(whole.to_json())))
    assert back.compute() == whole.compute()
    with pytest.raises(ValueError, match="both"):
        merged.merge(DepthMetrics().merge(a))
    with pytest.raises(ValueError, match="different settings"):
        DepthMetrics(max_depth=80).merge(DepthMetrics())


def test_disparity_prediction_is_fitted_in_disparity_space():
    rng = np.random.default_rng(2)
    gt = rng.uniform(0.5, 9, (24, 32))
    disparity = 2.5 / gt + 0.7  # relative inverse depth, an exact affine map of 1/gt (MiDaS-style output)
    res = DepthMetrics(alignment="scale_shift", prediction="disparity").update(disparity, gt)
    assert res["abs_rel"] < 1e-9 and res["delta1"] == 1.0
    # The same numbers read as depth (the default) are a different, wrong model.
    assert DepthMetrics(alignment="scale_shift").update(disparity, gt)["abs_rel"] > 0.05
    # Median alignment of a disparity scores 1/disparity up to scale: exact when there is no shift.
    assert DepthMetrics(alignment="median", prediction="disparity").update(4.0 / gt, gt)["abs_rel"] < 1e-12
    with pytest.raises(ValueError, match="no metric scale"):
        DepthMetrics(prediction="disparity")
    with pytest.raises(ValueError, match="different settings"):
        DepthMetrics(alignment="scale_shift", prediction="disparity").merge(DepthMetrics(alignment="scale_shift"))
    back = metrics_from_json(json.loads(json.dumps(DepthMetrics(alignment="median", prediction="disparity").to_json())))
    assert back.prediction == "disparity"


def test_aligned_depth_is_what_the_metrics_score():
    rng = np.random.default_rng(4)
    gt = rng.uniform(1, 6, (10, 12))
    gt[0, 0] = 0  # invalid: still gets the image's fit
    m = DepthMetrics(max_depth=10, alignment="scale_shift", prediction="disparity")
    aligned = m.aligned_depth(0.5 / np.where(gt > 0, gt, 1) + 0.1, gt)
    np.testing.assert_allclose(aligned[gt > 0], gt[gt > 0], rtol=1e-9)
    assert aligned[0, 0] == pytest.approx(1.0)
    plain = DepthMetrics(max_depth=5)
    np.testing.assert_array_equal(plain.aligned_depth(gt * 2, gt), np.clip(gt * 2, 1e-3, 5))


def test_every_contract_depth_kind_has_its_scoring():
    from clients.contract import DEPTH_KINDS
    from clients.metrics.tasks import DEPTH_KIND_SCORING, depth_scoring

    assert set(DEPTH_KIND_SCORING) == set(DEPTH_KINDS)
    assert depth_scoring("disparity") == ("scale_shift", "disparity")
    assert depth_scoring("relative", "median") == ("median", "depth") and depth_scoring("metric")[0] == "none"
    with pytest.raises(ValueError, match="known"):
        depth_scoring("inverse")
