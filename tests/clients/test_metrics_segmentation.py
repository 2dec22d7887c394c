"""SegmentationMetrics against hand-computed cases and an independent per-class implementation."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from clients.metrics import SegmentationMetrics, metrics_from_json


def reference(preds, gts, num_classes, ignore_index=255, reduce_zero_label=False, label_map=None):
    """mmseg's intersect_and_union + total_area_to_metrics, written as plain per-class loops."""
    inter = np.zeros(num_classes)
    union = np.zeros(num_classes)
    area_pred = np.zeros(num_classes)
    area_label = np.zeros(num_classes)
    for pred, gt in zip(preds, gts):
        gt = gt.astype(np.int64).copy()
        if label_map:
            orig = gt.copy()
            for old, new in label_map.items():
                gt[orig == old] = new
        if reduce_zero_label:
            gt = gt.astype(np.uint8)  # mmseg works on uint8 here
            gt[gt == 0] = 255
            gt = gt - 1
            gt[gt == 254] = 255
            gt = gt.astype(np.int64)
        keep = gt != ignore_index
        p, g = pred[keep].astype(np.int64), gt[keep]
        for c in range(num_classes):
            i = np.sum((p == c) & (g == c))
            inter[c] += i
            area_pred[c] += np.sum(p == c)
            area_label[c] += np.sum(g == c)
    union = area_pred + area_label - inter
    out = {"aAcc": inter.sum() / area_label.sum() if area_label.sum() else math.nan}
    per = {k: [] for k in ("IoU", "Acc", "Dice", "Precision", "Recall", "Fscore")}
    for c in range(num_classes):
        div = lambda a, b: a / b if b else math.nan  # noqa: E731
        prec, rec = div(inter[c], area_pred[c]), div(inter[c], area_label[c])
        per["IoU"].append(div(inter[c], union[c]))
        per["Acc"].append(rec)
        per["Dice"].append(div(2 * inter[c], area_pred[c] + area_label[c]))
        per["Precision"].append(prec)
        per["Recall"].append(rec)
        per["Fscore"].append(math.nan if math.isnan(prec) or math.isnan(rec) or prec + rec == 0
                             else 2 * prec * rec / (prec + rec))
    for key, mean_key in (("IoU", "mIoU"), ("Acc", "mAcc"), ("Dice", "mDice"), ("Fscore", "mFscore"),
                          ("Precision", "mPrecision"), ("Recall", "mRecall")):
        vals = [v for v in per[key] if not math.isnan(v)]
        out[mean_key] = sum(vals) / len(vals) if vals else math.nan
        out[key] = np.array(per[key])
    total = area_label.sum()
    out["FWIoU"] = sum(area_label[c] / total * per["IoU"][c] for c in range(num_classes) if area_label[c])
    return out


def assert_same(res, ref):
    for key, value in ref.items():
        np.testing.assert_allclose(res[key], value, rtol=1e-12, atol=1e-15, equal_nan=True, err_msg=key)


def test_hand_computed_absent_predicted_only_ignore_out_of_range():
    m = SegmentationMetrics(4)
    gt = np.array([[0, 0, 1, 1],
                   [0, 255, 1, 1]], np.uint8)
    pred = np.array([[0, 2, 1, 7],     # 2: predicted-only class; 7: outside [0, 4)
                     [0, 1, 1, 1]], np.uint8)
    m.update(pred, gt)
    m.update(np.zeros((2, 2), np.uint8), np.full((2, 2), 255, np.uint8))  # all-ignore image: no effect
    res = m.compute()
    # class 0: gt 3 px, pred 2 px (both hits) -> I=2, U=3; class 1: gt 4, pred 3 hits... see below
    assert res["IoU"][0] == pytest.approx(2 / 3)
    # class 1: gt = 4 px; predictions on them: 1, 7(out of range), 1, 1 -> I = 3; pred area 3 -> U = 4
    assert res["IoU"][1] == pytest.approx(3 / 4)
    assert res["Acc"][1] == pytest.approx(3 / 4)  # the out-of-range pixel is a miss of class 1
    assert res["IoU"][2] == 0.0  # predicted but absent from gt: IoU 0 ...
    assert math.isnan(res["Acc"][2])  # ... and Acc 0/0 = NaN, as mmseg
    assert math.isnan(res["IoU"][3])  # absent from gt and prediction: NaN, excluded from the mean
    assert res["mIoU"] == pytest.approx((2 / 3 + 3 / 4 + 0) / 3)
    assert res["aAcc"] == pytest.approx(5 / 7)
    assert m.confusion.sum() == 6 and m.out_of_range.tolist() == [0, 1, 0, 0]
    assert m.num_images == 2


def test_gt_outside_classes_is_dropped_and_counted():
    m = SegmentationMetrics(2)
    m.update(np.array([[0, 1, 1]]), np.array([[0, 9, 1]]))  # 9 is neither a class nor ignore
    assert m.invalid_gt == 1
    assert m.confusion.tolist() == [[1, 0], [0, 1]]
    assert m.compute()["mIoU"] == 1.0


def test_all_ignore_only_gives_null_not_zero():
    m = SegmentationMetrics(3)
    m.update(np.zeros((3, 3), np.uint8), np.full((3, 3), 255, np.uint8))
    summary = m.summary()
    assert summary["aAcc"] is None and summary["mIoU"] is None
    assert json.loads(json.dumps(summary))["mIoU"] is None


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("reduce_zero", [False, True])
def test_matches_independent_reference(seed, reduce_zero):
    rng = np.random.default_rng(seed)
    c = 6
    label_map = {5: 3, 3: 5} if seed % 2 else None  # a swap: must not compound
    preds, gts = [], []
    m = SegmentationMetrics(c, reduce_zero_label=reduce_zero, label_map=label_map)
    for _ in range(3):
        h, w = rng.integers(5, 30, 2)
        # reduce_zero_label maps 0..c to {255, 0..c-1}; without it gt stays in [0, c)
        gt = rng.integers(0, c + 1 if reduce_zero else c, (h, w)).astype(np.uint8)
        gt[rng.random((h, w)) < 0.1] = 255
        pred = rng.integers(0, c, (h, w)).astype(np.uint8)
        pred[gt == 1] = 1  # some agreement so IoUs are not all tiny
        pred[rng.random((h, w)) < 0.05] = 200  # out-of-range predictions
        m.update(pred, gt)
        preds.append(pred)
        gts.append(gt)
    assert_same(m.compute(), reference(preds, gts, c, reduce_zero_label=reduce_zero, label_map=label_map))


def test_merge_of_shards_equals_one_pass_and_json_round_trip():
    rng = np.random.default_rng(7)
    pairs = [(rng.integers(0, 5, (9, 11)), rng.integers(0, 5, (9, 11))) for _ in range(6)]
    whole = SegmentationMetrics(5, class_names=list("abcde"))
    shards = [SegmentationMetrics(5, class_names=list("abcde")) for _ in range(2)]
    for i, (p, g) in enumerate(pairs):
        whole.update(p, g)
        shards[i % 2].update(p, g)
    merged = shards[0].merge(shards[1])
    np.testing.assert_array_equal(merged.confusion, whole.confusion)
    assert merged.compute()["mIoU"] == whole.compute()["mIoU"]
    back = metrics_from_json(json.loads(json.dumps(whole.to_json())))
    np.testing.assert_array_equal(back.confusion, whole.confusion)
    assert back.class_names == tuple("abcde") and back.num_images == 6
    assert back.per_class() == whole.per_class()


def test_merge_refuses_different_settings_and_bad_shapes():
    with pytest.raises(ValueError, match="different settings"):
        SegmentationMetrics(3).merge(SegmentationMetrics(4))
    with pytest.raises(ValueError, match="same"):
        SegmentationMetrics(3).update(np.zeros((2, 2)), np.zeros((2, 3)))


def test_segmentation_and_depth_metrics_need_only_numpy():
    code = ("import sys; sys.modules['cv2'] = sys.modules['torch'] = None; "
            "from clients.metrics import SegmentationMetrics, DepthMetrics; import numpy as np; "
            "m = SegmentationMetrics(2); m.update(np.zeros((2, 2)), np.zeros((2, 2))); "
            "DepthMetrics().update(np.ones((2, 2)), np.ones((2, 2)))")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_unknown_ids_are_counted_by_id_and_merge():
    gt = np.array([[0, 1, 7], [9, 7, 255]])
    pred = np.zeros_like(gt)
    a, b = SegmentationMetrics(3), SegmentationMetrics(3)
    a.update(pred, gt)
    b.update(np.zeros((1, 2), np.int64), np.full((1, 2), 7))
    assert a.unknown_ids == {7: 2, 9: 1} and a.invalid_gt == 3
    merged = metrics_from_json(json.loads(json.dumps(a.merge(b).to_json())))
    assert merged.unknown_ids == {7: 4, 9: 1} and merged.invalid_gt == 5
