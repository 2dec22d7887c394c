"""Exact checks on clients/metrics/segmentation.py that mutation testing showed were missing.

Each test pins a behaviour a surviving mutmut mutant changed (`make mutation`, docs/testing.md):
the integer confusion state, boundaries at exactly C, one-pixel totals, warning-free NaNs, the
direct `reduce_zero_label`, and the JSON state field by field. Expected values are written out by
hand, not computed by the code under test.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from clients.metrics import SegmentationMetrics, metrics_from_confusion
from clients.metrics.segmentation import apply_label_map, reduce_zero_label


def hand_case() -> SegmentationMetrics:
    """4 classes; class 2 predicted only, class 3 absent, one out-of-range prediction (7)."""
    m = SegmentationMetrics(4, class_names=["bg", "a", "b", "c"])
    gt = np.array([[0, 0, 1, 1], [0, 255, 1, 1]], np.uint8)
    pred = np.array([[0, 2, 1, 7], [0, 1, 1, 1]], np.uint8)
    m.update(pred, gt)
    return m


def test_reduce_zero_label_maps_each_id():
    gt = np.array([0, 1, 2, 150, 254, 255], np.uint8)
    assert reduce_zero_label(gt).tolist() == [255, 0, 1, 149, 253, 255]
    assert reduce_zero_label(gt.astype(np.int32)).tolist() == [255, 0, 1, 149, 253, 255]


def test_reduce_zero_label_leaves_no_invalid_pixel():
    m = SegmentationMetrics(3, reduce_zero_label=True)
    m.update(np.array([[0, 0, 1, 2]]), np.array([[0, 1, 2, 255]]))  # 0 and 255 -> ignore
    assert m.invalid_gt == 0 and m.unknown_ids == {}
    assert m.confusion.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]


def test_label_map_reads_the_original_ids():
    gt = np.array([1, 2, 3], np.int64)
    out = apply_label_map(gt, {1: 2, 2: 3})
    assert out.tolist() == [2, 3, 3] and gt.tolist() == [1, 2, 3]  # input untouched


def test_state_is_integer_and_json_is_exact():
    m = hand_case()
    assert m.confusion.dtype == np.int64 and m.out_of_range.dtype == np.int64
    assert m.to_json() == {
        "type": "segmentation", "num_classes": 4, "ignore_index": 255, "reduce_zero_label": False,
        "label_map": {}, "class_names": ["bg", "a", "b", "c"], "num_images": 1,
        "confusion_matrix": [[2, 0, 1, 0], [0, 3, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
        "out_of_range": [0, 1, 0, 0], "invalid_gt": 0, "unknown_ids": {},
    }
    assert all(type(v) is int for row in m.to_json()["confusion_matrix"] for v in row)


def test_json_round_trip_keeps_every_setting_and_count():
    m = SegmentationMetrics(3, ignore_index=9, reduce_zero_label=True, label_map={4: 1}, class_names=["x", "y", "z"])
    m.update(np.array([[0, 1, 5, 0]]), np.array([[1, 4, 2, 7]]))  # 4 -> 1 -> 0; 7 -> 6 unknown
    state = json.loads(json.dumps(m.to_json()))
    assert state["label_map"] == {"4": 1} and state["unknown_ids"] == {"6": 1}
    back = SegmentationMetrics.from_json(state)
    assert back.to_json() == m.to_json()
    assert (back.num_classes, back.ignore_index, back.reduce_zero_label, back.label_map) == (3, 9, True, {4: 1})
    assert back.class_names == ("x", "y", "z") and back.num_images == 1
    assert back.invalid_gt == 1 and back.unknown_ids == {6: 1}
    assert back.confusion.dtype == np.int64 and back.out_of_range.dtype == np.int64
    assert back.out_of_range.tolist() == [0, 1, 0]


def test_from_json_fills_defaults_for_optional_fields():
    state = {"type": "segmentation", "num_classes": 2, "ignore_index": 255, "reduce_zero_label": False,
             "confusion_matrix": [[3, 1], [0, 2]]}
    m = SegmentationMetrics.from_json(state)
    assert m.label_map == {} and m.class_names == ("class_0", "class_1")
    assert m.out_of_range.tolist() == [0, 0] and m.out_of_range.dtype == np.int64
    assert m.invalid_gt == 0 and m.unknown_ids == {} and m.num_images == 0
    assert m.confusion.tolist() == [[3, 1], [0, 2]]


def test_from_json_refuses_other_types_and_shapes():
    with pytest.raises(ValueError, match=r"not a segmentation metrics state \(type='depth'\)"):
        SegmentationMetrics.from_json({"type": "depth"})
    with pytest.raises(ValueError, match=r"confusion matrix is \(1, 2\), expected \(2, 2\)"):
        SegmentationMetrics.from_json({"type": "segmentation", "num_classes": 2, "ignore_index": 255,
                                       "reduce_zero_label": False, "confusion_matrix": [[1, 2]]})


def test_class_count_bounds_and_messages():
    assert SegmentationMetrics(1).confusion.shape == (1, 1)  # one class is a valid (if odd) setting
    with pytest.raises(ValueError, match="num_classes must be positive, got 0"):
        SegmentationMetrics(0)
    with pytest.raises(ValueError, match="3 class names for 2 classes"):
        SegmentationMetrics(2, class_names=["a", "b", "c"])
    assert SegmentationMetrics(2, class_names=[]).class_names == ("class_0", "class_1")


def test_gt_and_prediction_equal_to_num_classes_are_outside():
    m = SegmentationMetrics(3)
    m.update(np.array([[0, 1, 3, 3]]), np.array([[3, 0, 0, 2]]))  # gt 3 unknown; pred 3 out of range
    assert m.unknown_ids == {3: 1} and m.invalid_gt == 1
    assert m.confusion.tolist() == [[0, 1, 0], [0, 0, 0], [0, 0, 0]]
    assert m.out_of_range.tolist() == [1, 0, 1]


def test_counts_accumulate_over_updates():
    m = SegmentationMetrics(2)
    m.update(np.zeros((1, 3)), np.array([[7, 7, 0]]))
    m.update(np.zeros((1, 2)), np.array([[7, 9]]))
    assert m.unknown_ids == {7: 3, 9: 1} and m.invalid_gt == 4 and m.num_images == 2


def test_merge_adds_every_count():
    a, b = hand_case(), SegmentationMetrics(4, class_names=["bg", "a", "b", "c"])
    b.update(np.array([[5, 3]]), np.array([[3, 9]]))
    a.merge(b)
    assert a.confusion.tolist() == [[2, 0, 1, 0], [0, 3, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert a.out_of_range.tolist() == [0, 1, 0, 1] and a.invalid_gt == 1 and a.unknown_ids == {9: 1}
    assert a.num_images == 2
    a.merge(b)
    assert a.unknown_ids == {9: 2} and a.invalid_gt == 2 and a.num_images == 3


def test_one_pixel_totals():
    res = metrics_from_confusion(np.array([[1, 0], [0, 0]]))
    assert res["aAcc"] == 1.0 and res["FWIoU"] == 1.0 and res["mIoU"] == 1.0


def test_without_out_of_range_counts_equals_zero_counts():
    cm = np.array([[3, 1, 0], [2, 4, 0], [0, 0, 0]])
    plain, zeros = metrics_from_confusion(cm), metrics_from_confusion(cm, np.zeros(3, np.int64))
    for key in ("IoU", "Acc", "area_label", "area_pred"):
        np.testing.assert_array_equal(plain[key], zeros[key], err_msg=key)
    assert plain["area_label"].tolist() == [4.0, 6.0, 0.0] and plain["area_pred"].tolist() == [5.0, 5.0, 0.0]


def test_areas_and_fwiou_by_hand():
    res = hand_case().compute()
    assert res["area_intersect"].tolist() == [2.0, 3.0, 0.0, 0.0]
    assert res["area_pred"].tolist() == [2.0, 3.0, 1.0, 0.0]
    assert res["area_label"].tolist() == [3.0, 4.0, 0.0, 0.0]
    assert res["area_union"].tolist() == [3.0, 4.0, 1.0, 0.0]
    # only classes present in gt count: 3/7 * 2/3 + 4/7 * 3/4 (class 2's IoU 0 and class 3's NaN drop out)
    assert res["FWIoU"] == pytest.approx(3 / 7 * 2 / 3 + 4 / 7 * 3 / 4, rel=1e-12)


def test_nothing_labelled_gives_nulls_without_warnings():
    m = SegmentationMetrics(3)
    m.update(np.zeros((2, 2)), np.full((2, 2), 255))
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")  # NaN is the answer here, not a numpy warning
        res = m.compute()
        summary = m.summary()
    assert all(v is None for v in summary.values()), summary
    assert math.isnan(res["FWIoU"]) and math.isnan(res["aAcc"])


def test_per_class_rows_by_hand():
    rows = hand_case().per_class()
    assert [r["class"] for r in rows] == ["bg", "a", "b", "c"]
    assert [r["gt_pixels"] for r in rows] == [3, 4, 0, 0] and [r["pred_pixels"] for r in rows] == [2, 3, 1, 0]
    assert rows[0]["IoU"] == pytest.approx(2 / 3) and rows[0]["Precision"] == 1.0 and rows[0]["Recall"] == pytest.approx(2 / 3)
    assert rows[1]["Acc"] == pytest.approx(3 / 4) and rows[1]["Dice"] == pytest.approx(6 / 7)
    assert rows[1]["Fscore"] == pytest.approx(6 / 7)
    assert rows[2] == {"class": "b", "IoU": 0.0, "Acc": None, "Dice": 0.0, "Fscore": None, "Precision": 0.0,
                       "Recall": None, "gt_pixels": 0, "pred_pixels": 1}
    assert rows[3]["IoU"] is None and rows[3]["Dice"] is None
    assert json.loads(json.dumps(rows)) == rows
