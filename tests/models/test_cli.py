"""The `python -m models` command line: JSON on stdout, clear errors as exit codes."""

from __future__ import annotations

import json

import pytest

from models.__main__ import main


def test_synth_train_validate(tmp_path, capsys):
    data, ckpt = tmp_path / "data", tmp_path / "m.pt"
    assert main(["synth", "--out", str(data), "--n-train", "4", "--n-val", "2", "--size", "32"]) == 0
    assert json.loads(capsys.readouterr().out)["n_train"] == 4
    assert main(["train", "--task", "depth", "--data", str(data), "--epochs", "1", "--out", str(ckpt),
                 "--size", "32", "--width", "4", "--batch-size", "2", "--threads", "1", "--no-progress"]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["metric"] == "abs_rel" and trained["epoch"] == 1 and trained["checkpoint"] == str(ckpt)
    assert main(["validate", "--checkpoint", str(ckpt), "--data", str(data)]) == 0
    # Same number up to float noise (the trainer ran on 1 thread, validate on the default count).
    assert json.loads(capsys.readouterr().out)["abs_rel"] == pytest.approx(trained["abs_rel"], rel=1e-5)


def test_errors_become_exit_codes(tmp_path, capsys):
    assert main(["validate", "--checkpoint", str(tmp_path / "none.pt"), "--data", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "nodata"), "--out", str(tmp_path / "x.pt")]) == 2
    assert "python -m models synth" in capsys.readouterr().err
