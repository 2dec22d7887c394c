"""The evaluation harness in-process: accounting for every input, shards, resume, aborts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evaluation.evaluate import BackendError, EvalSettings, evaluate, merge_reports
from evaluation.predictors import OnnxPredictor
from evaluation.report import write_report
from evalkit import make_pixelport, publish_toy, write_png


def without_run(report):
    return {k: v for k, v in report.items() if k != "run"}


@pytest.fixture(scope="module")
def toys(tmp_path_factory):
    root = tmp_path_factory.mktemp("toys")
    repo = root / "repo"
    for name, task in (("seg", "segmentation"), ("depth", "depth"), ("matting", "matting")):
        publish_toy(repo, name, task)
    data = make_pixelport(root / "data", n=9)
    return repo, data


def predictor(toys, name="seg"):
    return OnnxPredictor(str(toys[0] / name))


def test_a_bad_dataset_finishes_and_lists_each_failure_with_its_reason(tmp_path):
    data = make_pixelport(tmp_path / "data", n=5)
    repo = tmp_path / "repo"
    publish_toy(repo, "seg", "segmentation")
    (data / "labels" / "val" / "0001.png").unlink()  # missing label
    write_png(data / "labels" / "val" / "0002.png", np.zeros((7, 5), np.uint8))  # size mismatch
    (data / "images" / "val" / "0003.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # corrupt image
    report = evaluate(OnnxPredictor(str(repo / "seg")), EvalSettings(data=str(data), out=str(tmp_path / "out")))
    assert report["num_images"] == 5 and report["num_evaluated"] == 2 and report["num_failed"] == 3
    reasons = {Path(f["path"]).name: f["error"] for f in report["failed"]}
    assert "missing labels file" in reasons["0001.png"]
    assert "labels is 5x7 but the image is" in reasons["0002.png"]
    assert "0003.png" in reasons and reasons["0003.png"]
    assert report["evaluated_ids"] == ["0000", "0004"]
    paths = write_report(report, str(tmp_path / "out"))
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Failed (3)" in md and "missing labels file" in md
    assert json.loads((tmp_path / "out" / "report.json").read_text())["num_failed"] == 3
    assert any(p.endswith("sample_overlays.png") for p in paths)


@pytest.mark.parametrize("name", ["seg", "depth", "matting"])
def test_two_shards_merged_equal_the_unsharded_run(toys, tmp_path, name):
    data = str(toys[1])
    whole = evaluate(predictor(toys, name), EvalSettings(data=data))
    shards = [evaluate(predictor(toys, name), EvalSettings(data=data, shard=(i, 2), concurrency=2)) for i in (1, 0)]
    assert shards[0]["num_images"] + shards[1]["num_images"] == whole["num_images"] == 9
    merged = merge_reports(shards)
    assert without_run(merged) == without_run(whole)  # the confusion matrix to the last digit, too
    with pytest.raises(ValueError, match="overlap"):
        merge_reports([shards[0], shards[0]])


def test_concurrency_does_not_change_the_report(toys):
    one = evaluate(predictor(toys), EvalSettings(data=str(toys[1]), concurrency=1))
    four = evaluate(predictor(toys), EvalSettings(data=str(toys[1]), concurrency=4))
    assert without_run(one) == without_run(four)
    assert one["metrics"]["mIoU"] > 0.95  # the toy model is right wherever resampling leaves a cell intact


class Interrupted(OnnxPredictor):
    """A real predictor that is stopped (Ctrl-C) after `left` images."""

    def __init__(self, model_dir: str, left: int) -> None:
        super().__init__(model_dir)
        self.left = left

    def predict_batch(self, images):
        self.left -= 1
        if self.left < 0:
            raise KeyboardInterrupt
        return super().predict_batch(images)


def test_interrupted_run_resumes_to_the_same_report(toys, tmp_path):
    state = str(tmp_path / "state.json")
    reference = evaluate(predictor(toys, "depth"), EvalSettings(data=str(toys[1])))
    with pytest.raises(KeyboardInterrupt):
        evaluate(Interrupted(str(toys[0] / "depth"), left=4), EvalSettings(data=str(toys[1]), state=state))
    saved = json.loads(Path(state).read_text())
    assert not saved["complete"] and 1 <= len(saved["done"]) <= 4
    resumed = evaluate(predictor(toys, "depth"), EvalSettings(data=str(toys[1]), state=state))
    assert resumed["run"]["resumed"] and resumed["run"]["evaluated_this_run"] == 9 - len(saved["done"])
    assert without_run(resumed) == without_run(reference)
    with pytest.raises(ValueError, match="different run"):
        evaluate(predictor(toys, "depth"), EvalSettings(data=str(toys[1]), state=state, shard=(0, 3)))


class Down(OnnxPredictor):
    def predict_batch(self, images):
        raise ConnectionError("server unavailable")


def test_a_backend_that_always_fails_stops_the_run_and_is_retried_on_resume(toys, tmp_path):
    state = str(tmp_path / "state.json")
    settings = EvalSettings(data=str(toys[1]), state=state, abort_after=3)
    with pytest.raises(BackendError, match="server unavailable"):
        evaluate(Down(str(toys[0] / "seg")), settings)
    report = evaluate(predictor(toys), settings)  # backend failures are retried, not final
    assert report["num_failed"] == 0 and report["num_evaluated"] == 9


def test_depth_images_without_valid_pixels_are_skipped_not_nan(tmp_path):
    data = make_pixelport(tmp_path / "data", n=3)
    write_png(data / "depth" / "val" / "0001.png", np.zeros_like(
        __import__("cv2").imread(str(data / "depth" / "val" / "0001.png"), -1)))
    publish_toy(tmp_path / "repo", "depth", "depth")
    report = evaluate(OnnxPredictor(str(tmp_path / "repo" / "depth")), EvalSettings(data=str(data)))
    assert [s["id"] for s in report["skipped"]] == ["0001"]
    assert report["num_evaluated"] == 3 and report["metrics"]["abs_rel"] < 0.05


def test_task_without_targets_in_the_layout_is_a_clear_error(tmp_path, toys):
    root = tmp_path / "mm"
    write_png(root / "img_dir" / "val" / "a.png", np.zeros((4, 4, 3), np.uint8))
    write_png(root / "ann_dir" / "val" / "a.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="no depth targets"):
        evaluate(predictor(toys, "depth"), EvalSettings(data=str(root)))
