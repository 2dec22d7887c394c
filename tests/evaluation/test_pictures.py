"""Pictures that scale: the most confused classes when there are many, overlays with a wrong-pixel
column and a legend, and no pictures at all when nothing was evaluated."""

from __future__ import annotations

import numpy as np

from evaluation.report import (legend_classes, most_confused_classes, plot_confusion, render_markdown,
                               top_confusions, wrong_pixels, write_report)


def report_with(cm: np.ndarray, names=None) -> dict:
    n = len(cm)
    names = names or [f"c{i}" for i in range(n)]
    return {"model": "m", "backend": "onnx", "task": "segmentation", "confusion_matrix": cm.tolist(),
            "per_class": [{"class": c, "IoU": 0.5, "Acc": 0.5, "Dice": 0.5, "Fscore": 0.5, "Precision": 0.5,
                           "Recall": 0.5, "gt_pixels": 1, "pred_pixels": 1} for c in names],
            "metrics": {"mIoU": 0.5}, "dataset": {"root": "/d", "split": "val", "layout": "ade20k"},
            "shard": "0/1", "num_images": 1, "num_evaluated": 1, "num_failed": 0, "failed": [],
            "palette": [[i, i, i] for i in range(n)], "metric_settings": {"ignore_index": 255}}


def test_top_confusions_and_most_confused_classes():
    cm = np.diag([100] * 6).astype(np.int64)
    cm[1, 4] = 30  # 30 % of class 1 predicted as 4
    cm[5, 2] = 10
    cm[0, 3] = 1
    assert top_confusions(cm, 2) == [(1, 4, 30, 30 / 130), (5, 2, 10, 10 / 110)]
    assert most_confused_classes(cm, 4).tolist() == [1, 2, 4, 5]
    assert len(top_confusions(np.eye(3, dtype=np.int64))) == 0


def test_150_classes_show_the_20_most_confused(tmp_path):
    rng = np.random.default_rng(0)
    cm = np.diag(rng.integers(50, 100, 150)).astype(np.int64)
    hot = [3, 17, 42, 99, 149]
    for g, p in zip(hot, hot[1:]):
        cm[g, p] = 500
    names = [f"class {i}" for i in range(150)]
    shown = plot_confusion(report_with(cm, names), tmp_path / "cm.png")
    assert len(shown) == 20 and all(f"class {i}" in shown for i in hot)
    md = render_markdown(report_with(cm, names))
    assert "## Most confused (ground truth -> prediction)" in md and "| class 3 | class 17 | 500 |" in md
    small = plot_confusion(report_with(np.eye(5, dtype=np.int64) * 9), tmp_path / "cm5.png")
    assert len(small) == 5


def test_wrong_pixel_column_and_legend():
    image = np.full((2, 3, 3), 100, np.uint8)
    target = np.array([[0, 1, 255], [2, 2, 7]])
    pred = np.array([[0, 2, 0], [2, 1, 7]])
    out = wrong_pixels(image, target, pred, num_classes=3, ignore_index=255)
    red, blue = (230, 30, 30), (20, 30, 90)
    assert tuple(out[0, 1]) == red and tuple(out[1, 1]) == red
    assert tuple(out[0, 2]) == blue and tuple(out[1, 2]) == blue  # ignore index and an unknown id
    assert tuple(out[0, 0]) == tuple(out[1, 0]) == (125, 125, 125)  # right: the image in grey
    samples = [{"target": target, "pred": pred}]
    assert legend_classes(samples, 3) == [2, 0, 1]  # by pixels shown: 2 (4 px), 0 (2 px), 1 (2 px)


def test_sample_overlays_are_drawn_with_the_legend(tmp_path):
    cm = np.eye(3, dtype=np.int64) * 10
    report = report_with(cm)
    (tmp_path / "samples").mkdir()
    np.savez(tmp_path / "samples" / "a.npz", id="a", image=np.zeros((8, 8, 3), np.uint8),
             target=np.zeros((8, 8), np.int32), pred=np.ones((8, 8), np.int32))
    paths = write_report(report, str(tmp_path))
    assert any(p.endswith("sample_overlays.png") for p in paths)
    nothing = dict(report, num_evaluated=0)
    assert write_report(nothing, str(tmp_path / "empty"))[2:] == []
