"""Exit codes a CI can trust: every way an eval or merge can fail has its code and its one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evaluation.__main__ import main
from evalkit import make_pixelport, publish_toy, write_png


def errors(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return publish_toy(tmp_path_factory.mktemp("repo"), "seg", "segmentation")


def run(model_dir, data, out, *extra):
    return main(["eval", "--backend", "onnx", "--model-dir", str(model_dir), "--data", str(data),
                 "--out", str(out), "--pictures", "2", *extra])


def test_clean_run_exits_0(model_dir, tmp_path, capsys):
    data = make_pixelport(tmp_path / "data", n=3)
    assert run(model_dir, data, tmp_path / "out") == 0
    assert errors(capsys) == []


def test_a_failed_input_exits_3_unless_allowed(model_dir, tmp_path, capsys):
    data = make_pixelport(tmp_path / "data", n=4)
    (data / "labels" / "val" / "0001.png").unlink()
    assert run(model_dir, data, tmp_path / "out") == 3
    [line] = errors(capsys)
    assert line.startswith("error: 1 of 4 images failed (first: ") and "0001.png: missing labels file" in line
    assert line.endswith("; see report.md, or pass --allow-failures")
    report = json.loads((tmp_path / "out" / "report.json").read_text())  # written all the same
    assert report["num_failed"] == 1 and report["num_evaluated"] == 3
    assert run(model_dir, data, tmp_path / "out2", "--allow-failures") == 0
    assert errors(capsys) == []


def test_nothing_evaluated_exits_4_and_draws_no_pictures(model_dir, tmp_path, capsys):
    data = make_pixelport(tmp_path / "data", n=2)
    for p in (data / "labels" / "val").iterdir():
        p.unlink()
    out = tmp_path / "out"
    assert run(model_dir, data, out, "--allow-failures") == 4  # --allow-failures does not cover "none at all"
    [line] = errors(capsys)
    assert line.startswith("error: no image was evaluated: all 2 failed (first: ") and "missing labels file" in line
    assert not list(out.glob("*.png"))
    assert "**No image was evaluated" in (out / "report.md").read_text()


def test_an_empty_shard_exits_4(model_dir, tmp_path, capsys):
    data = make_pixelport(tmp_path / "data", n=1)
    assert run(model_dir, data, tmp_path / "out", "--shard", "1/2") == 4
    assert errors(capsys) == ["error: no image was evaluated: shard 1/2 of split 'val' holds no image"]


def _with_unknown_id(tmp_path: Path) -> Path:
    data = make_pixelport(tmp_path / "data", n=3)
    path = data / "labels" / "val" / "0002.png"
    import cv2

    labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    labels[:2, :3] = 7  # the model has classes 0..2
    write_png(path, labels)
    return data


def test_ground_truth_ids_the_model_cannot_predict_exit_5_unless_ignored(model_dir, tmp_path, capsys):
    data = _with_unknown_id(tmp_path)
    assert run(model_dir, data, tmp_path / "out") == 5
    assert errors(capsys) == ["error: ground truth holds ids the model cannot predict (it has classes 0..2): "
                              "7 (6 px); map them with --label-map FILE, or pass --ignore-unknown-ids"]
    md = (tmp_path / "out" / "report.md").read_text()
    assert "**Ground truth holds ids the model cannot predict: 7 (6 px)." in md.split("## Metrics")[0]

    assert run(model_dir, data, tmp_path / "ok", "--ignore-unknown-ids") == 0
    assert errors(capsys) == []
    report = json.loads((tmp_path / "ok" / "report.json").read_text())
    assert report["ignore_unknown_ids"] and report["unknown_ids"] == {"7": 6}
    headline = (tmp_path / "ok" / "report.md").read_text().split("## Metrics")[0]
    assert "**Ground-truth ids the model cannot predict were ignored (--ignore-unknown-ids): 7 (6 px)." in headline

    # A label map that folds the stray id onto a class leaves nothing unknown.
    (tmp_path / "map.json").write_text(json.dumps({"7": 255}))
    assert run(model_dir, data, tmp_path / "mapped", "--label-map", str(tmp_path / "map.json")) == 0


def test_merge_exit_codes(model_dir, tmp_path, capsys):
    data = make_pixelport(tmp_path / "data", n=4)
    (data / "labels" / "val" / "0002.png").unlink()  # in shard 0/2
    assert run(model_dir, data, tmp_path / "s0", "--shard", "0/2") == 3
    assert run(model_dir, data, tmp_path / "s1", "--shard", "1/2") == 0
    capsys.readouterr()
    assert main(["merge", str(tmp_path / "s1"), "--out", str(tmp_path / "m")]) == 1
    assert errors(capsys) == ["error: the shards do not cover the split (missing: 0/2); merge all of them, "
                              "or pass --allow-partial"]
    assert main(["merge", str(tmp_path / "s1"), "--allow-partial", "--out", str(tmp_path / "m")]) == 0
    assert main(["merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "m2")]) == 3
    [line] = errors(capsys)
    assert line.startswith("error: 1 of 4 images failed (first: ") and "0002.png" in line
    assert main(["merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--allow-failures",
                 "--out", str(tmp_path / "m3")]) == 0


def test_bad_label_map_and_class_names_are_usage_errors(model_dir, tmp_path, capsys):
    data = make_pixelport(tmp_path / "data", n=1)
    (tmp_path / "bad.json").write_text("[1, 2]")
    assert run(model_dir, data, tmp_path / "o", "--label-map", str(tmp_path / "bad.json")) == 2
    [line] = errors(capsys)
    assert line.startswith("error: --label-map ") and "expected a JSON object of ids" in line
    (tmp_path / "names.txt").write_text("a\nb\n")
    assert run(model_dir, data, tmp_path / "o", "--class-names", str(tmp_path / "names.txt")) == 1
    assert errors(capsys) == ["error: --class-names gives 2 names but model 'seg' predicts 3 classes"]
    (tmp_path / "names.txt").write_text("rouge\nvert\nbleu\n")
    assert run(model_dir, data, tmp_path / "named", "--class-names", str(tmp_path / "names.txt")) == 0
    report = json.loads((tmp_path / "named" / "report.json").read_text())
    assert [r["class"] for r in report["per_class"]] == ["rouge", "vert", "bleu"]


def test_a_missing_dataset_is_named_before_any_connection(tmp_path, capsys):
    import time

    start = time.monotonic()  # a dead server behind it: the client would retry for about 20 s
    code = main(["eval", "--backend", "triton", "--url", "127.0.0.1:1", "--model", "seg",
                 "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert code == 2 and time.monotonic() - start < 10
    assert errors(capsys) == [f"error: --data {tmp_path / 'nope'}: no such directory (the dataset root)"]


def test_every_message_is_one_line():
    from evaluation.evaluate import check_report

    report = {"num_evaluated": 1, "num_images": 2, "num_failed": 1, "shard": "0/1", "dataset": {"split": "val"},
              "failed": [{"path": "/d/a.png", "error": "cannot read:\n  truncated\tfile"}],
              "unknown_ids": {"7": 3}, "per_class": [{}] * 3}
    problems = check_report(report)
    assert [p.kind for p in problems] == ["unknown_ids", "failed_inputs"]
    assert all("\n" not in p.message for p in problems)
    assert "(first: /d/a.png: cannot read: truncated file)" in problems[1].message
