"""The gate's metric half: a candidate that scores worse than its baseline on the sample images is
refused and nothing is published, for fp32 (vs PyTorch), fp16 and int8 (vs the fp32 graph).

The planted candidate is the real exported graph with its labels rotated by one class, so the
shape-by-shape parity half passes (it runs the graph itself) and only the metric can refuse it.
One real export per module; `export_onnx` then hands out copies of it.
"""

from __future__ import annotations

import json
import shutil
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from export import ExportSettings, ParityError, export_model
from export import api
from export_helpers import USER_MODELS, assert_repository_consistent

NUM_CLASSES = 3


@pytest.fixture(scope="module")
def calibration(tmp_path_factory) -> Path:
    """A plain folder of images: no ground truth, so the baseline's own predictions are the reference
    and a candidate that disagrees with them must lose mIoU."""
    root = tmp_path_factory.mktemp("calib")
    rng = np.random.default_rng(0)
    for i in range(4):
        image = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (40, 30), interpolation=cv2.INTER_LINEAR)
        cv2.imwrite(str(root / f"{i}.png"), image)
    return root


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("ref") / "repo"
    result = export_model(_settings(repo, "ref"))
    return result.version_dir / "model.onnx"


def _settings(repo: Path, name: str, calibration: Path | None = None, **flags) -> ExportSettings:
    return ExportSettings(name=name, repository=str(repo), module=f"{USER_MODELS}:TinyNet", num_classes=NUM_CLASSES,
                          resize="letterbox:32x32", max_batch=2, min_size=(32, 32), max_size=(64, 64),
                          calibration=str(calibration) if calibration else None, samples=4, **flags)


def _worse_runners(bad_file: str):
    """api's view of the accuracy module, whose onnx_runner rotates the labels of `bad_file`."""
    real = api.accuracy

    def onnx_runner(path: Path):
        run = real.onnx_runner(path)
        if Path(path).name != bad_file:
            return run
        return lambda batch: {k: ((v + 1) % NUM_CLASSES).astype(v.dtype) if k == "labels" else v
                              for k, v in run(batch).items()}

    view = types.SimpleNamespace(**{n: getattr(real, n) for n in dir(real) if not n.startswith("__")})
    view.onnx_runner = onnx_runner
    return view


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_a_candidate_that_scores_worse_is_refused_and_nothing_is_published(tmp_path, monkeypatch, exported,
                                                                          calibration, precision):
    monkeypatch.setattr(api, "export_onnx", lambda served, contract, profile, path, opset=None:
                        shutil.copyfile(exported, path) and 0.0)
    monkeypatch.setattr(api, "accuracy", _worse_runners(f"{precision}.onnx"))
    repo, report = tmp_path / "repo", tmp_path / "parity.json"
    flags = {"fp16": precision == "fp16", "int8": precision == "int8"}
    with pytest.raises(ParityError) as caught:
        export_model(_settings(repo, f"worse_{precision}", calibration, report=str(report), **flags))
    baseline = "pytorch" if precision == "fp32" else "fp32"
    assert f"parity gate failed ({precision}): mIoU drops by" in str(caught.value)
    assert f"from {baseline} to {precision}" in str(caught.value) and "nothing was published" in str(caught.value)
    metric = json.loads(report.read_text())["metric"]
    assert metric["reference"] == f"{baseline} predictions" and metric[baseline] == 1.0
    assert metric["drop"] > 0.5 and metric[precision] < 0.5
    assert assert_repository_consistent(repo) == [] and not (repo / f"worse_{precision}").exists()


@pytest.mark.slow
def test_the_same_candidate_unplanted_is_published(tmp_path, monkeypatch, exported, calibration):
    """The control: with the real runners the same export passes, so the refusals above are the metric's."""
    monkeypatch.setattr(api, "export_onnx", lambda served, contract, profile, path, opset=None:
                        shutil.copyfile(exported, path) and 0.0)
    result = export_model(_settings(tmp_path / "repo", "fine", calibration, fp16=True))
    assert result.parity.metric["drop"] <= 0.01 and result.version == 1
