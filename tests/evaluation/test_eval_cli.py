"""`python -m evaluation eval | merge | compare` end to end, including a SIGKILLed run that resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evaluation.__main__ import main
from evalkit import make_pixelport, publish_toy

ROOT = Path(__file__).resolve().parents[2]


def without_run(report):
    return {k: v for k, v in report.items() if k != "run"}


def read(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    return publish_toy(root / "repo", "seg", "segmentation"), make_pixelport(root / "data", n=24, sizes=(20, 28))


def test_eval_shards_merge_and_compare(setup, tmp_path, capsys):
    model_dir, data = setup
    base = ["eval", "--backend", "onnx", "--model-dir", str(model_dir), "--data", str(data), "--pictures", "3"]
    assert main(base + ["--out", str(tmp_path / "all")]) == 0
    for i in range(2):
        assert main(base + ["--shard", f"{i}/2", "--out", str(tmp_path / f"s{i}")]) == 0
    assert main(["merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "merged"),
                 "--pictures", "3"]) == 0
    whole, merged = read(tmp_path / "all"), read(tmp_path / "merged")
    assert merged["confusion_matrix"] == whole["confusion_matrix"]
    assert without_run(merged) == without_run(whole)
    for name in ("report.md", "confusion_matrix.png", "per_class_iou.png", "sample_overlays.png"):
        assert (tmp_path / "merged" / name).is_file(), name
    assert len(list((tmp_path / "merged" / "samples").glob("*.npz"))) == 3
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "all"), str(tmp_path / "merged")]) == 0
    table = capsys.readouterr().out
    assert "| model | task | metric | onnx |" in table and "| seg | segmentation | mIoU | 100.00 |" in table


def test_cli_errors_become_exit_codes(setup, tmp_path, capsys):
    model_dir, data = setup
    assert main(["eval", "--backend", "onnx", "--data", str(data), "--out", str(tmp_path)]) == 2
    assert "--model-dir" in capsys.readouterr().err
    assert main(["eval", "--backend", "onnx", "--model-dir", str(model_dir), "--data", str(tmp_path),
                 "--out", str(tmp_path / "o")]) == 1
    assert "pass --layout" in capsys.readouterr().err
    assert main(["eval", "--backend", "onnx", "--model-dir", str(model_dir), "--data", str(data), "--shard", "2/2",
                 "--out", str(tmp_path / "o")]) == 2
    assert "0 <= i < n" in capsys.readouterr().err
    assert main(["merge", str(tmp_path / "nothing"), "--out", str(tmp_path / "m")]) == 1
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_sigkilled_eval_resumes_to_the_same_report(setup, tmp_path):
    model_dir, data = setup
    cmd = [sys.executable, "-m", "evaluation", "eval", "--backend", "onnx", "--model-dir", str(model_dir),
           "--data", str(data), "--pictures", "2"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run(cmd + ["--out", str(tmp_path / "ref")], check=True, cwd=ROOT, env=env, capture_output=True, timeout=300)

    state = tmp_path / "state.json"
    # --max-rate keeps the run slow enough to be killed mid-way; --state-every 0 saves after each image.
    resumable = cmd + ["--state", str(state), "--state-every", "0", "--max-rate", "8", "--out", str(tmp_path / "out")]
    proc = subprocess.Popen(resumable, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                saved = json.loads(state.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                saved = {"done": []}
            if len(saved["done"]) >= 5:
                break
            assert proc.poll() is None, "eval ended before it could be killed"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    killed_at = json.loads(state.read_text())
    assert not killed_at["complete"] and 5 <= len(killed_at["done"]) < 24
    assert not (tmp_path / "out" / "report.json").exists()

    done = subprocess.run(resumable, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    resumed = read(tmp_path / "out")
    assert resumed["run"]["resumed"] and resumed["run"]["evaluated_this_run"] == 24 - len(killed_at["done"])
    assert without_run(resumed) == without_run(read(tmp_path / "ref"))
    assert "img/s" in done.stderr  # the progress bar


def test_clients_eval_alias_forwards_for_one_release(setup, tmp_path, caplog):
    from clients.__main__ import main as clients_main

    model_dir, data = setup
    out = tmp_path / "alias"
    assert clients_main(["eval", "--backend", "onnx", "--model-dir", str(model_dir), "--data", str(data),
                         "--out", str(out)]) == 0
    assert read(out)["metrics"]["mIoU"] > 0.99
    assert "moved to `python -m evaluation eval`" in caplog.text
