"""Reports know what produced them: model (weights, config, version) and settings fingerprints, and
a merge that refuses shards produced by different ones, naming the field."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from evaluation.__main__ import main
from evaluation.evaluate import EvalSettings, evaluate, merge_reports
from evaluation.predictors import OnnxPredictor
from evalkit import make_pixelport, publish_toy


def republish_with_other_weights(model_dir):
    """Same name, same config, different weights: the depth toy's offset b 0.5 -> 0.7."""
    path = model_dir / "1" / "model.onnx"
    model = onnx.load(str(path))
    for init in model.graph.initializer:
        if init.name == "b":
            init.CopyFrom(numpy_helper.from_array(np.array(0.7, np.float32), "b"))
    onnx.save_model(model, str(path))


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("fp")
    a = publish_toy(root / "repo_a", "depth", "depth")
    b = publish_toy(root / "repo_b", "depth", "depth")
    republish_with_other_weights(b)
    return a, b, make_pixelport(root / "data", n=4)


def test_report_carries_the_model_and_settings_fingerprint(two_models, tmp_path):
    a, _, data = two_models
    report = evaluate(OnnxPredictor(str(a)), EvalSettings(data=str(data)))
    fp = report["fingerprint"]
    onnx_sha = hashlib.sha256((a / "1" / "model.onnx").read_bytes()).hexdigest()
    files_digest = hashlib.sha256(json.dumps([["model.onnx", onnx_sha]]).encode()).hexdigest()
    assert fp["model"]["weights_sha256"] == files_digest and fp["model"]["version"] == 1
    assert fp["model"]["config_sha256"] == hashlib.sha256((a / "config.pbtxt").read_bytes()).hexdigest()
    assert fp["settings"]["inference"] == {"mode": "whole", "crop": None, "stride": None, "flip": False,
                                           "scales": [1.0]}
    assert fp["settings"]["metrics"]["alignment"] == "none" and fp["settings"]["dataset"]["layout"] == "pixelport"


def test_merge_refuses_shards_of_different_weights_under_one_name(two_models, tmp_path, capsys):
    a, b, data = two_models
    base = ["eval", "--backend", "onnx", "--data", str(data), "--pictures", "0"]
    assert main(base + ["--model-dir", str(a), "--shard", "0/2", "--out", str(tmp_path / "s0")]) == 0
    assert main(base + ["--model-dir", str(b), "--shard", "1/2", "--out", str(tmp_path / "s1")]) == 0
    capsys.readouterr()
    assert main(["merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "m")]) == 1
    [line] = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert line.startswith("error: cannot merge: the shards differ in fingerprint.model.weights_sha256: ")
    assert "in shard 0/2" in line and "in shard 1/2" in line
    assert not (tmp_path / "m" / "report.json").exists()
    md = (tmp_path / "s1" / "report.md").read_text()
    assert "Produced by: model `depth` version 1, weights `" in md and "inference whole." in md


def test_resuming_with_other_weights_is_refused(two_models, tmp_path):
    a, b, data = two_models
    state = str(tmp_path / "state.json")
    evaluate(OnnxPredictor(str(a)), EvalSettings(data=str(data), state=state))
    with pytest.raises(ValueError, match="different run .*produced_by"):
        evaluate(OnnxPredictor(str(b)), EvalSettings(data=str(data), state=state))


class Sliding(OnnxPredictor):
    def inference_settings(self):
        return {"mode": "slide", "crop": [16, 16], "stride": [8, 8]}


def test_merge_names_the_differing_setting(two_models):
    a, _, data = two_models
    whole = evaluate(OnnxPredictor(str(a)), EvalSettings(data=str(data), shard=(0, 2)))
    slide = evaluate(Sliding(str(a)), EvalSettings(data=str(data), shard=(1, 2)))
    assert slide["fingerprint"]["settings"]["inference"]["mode"] == "slide"
    with pytest.raises(ValueError, match=r"differ in fingerprint\.settings\.inference\.crop \(and 2 more fields\)"):
        merge_reports([whole, slide])
    other_range = evaluate(OnnxPredictor(str(a)), EvalSettings(data=str(data), shard=(1, 2), max_depth=5.0))
    with pytest.raises(ValueError, match=r"fingerprint\.settings\.metrics\.max_depth: 4\.6 in shard 0/2, 5\.0"):
        merge_reports([whole, other_range])


def test_a_sliding_window_predictor_is_fingerprinted_from_its_window():
    from types import SimpleNamespace

    from evaluation.fingerprint import inference_settings

    window = SimpleNamespace(crop=(512, 1024), stride=(341, 683), flip=True, scales=(0.5, 1.0))
    assert inference_settings(SimpleNamespace(window=window)) == {
        "mode": "slide", "crop": [512, 1024], "stride": [341, 683], "flip": True, "scales": [0.5, 1.0]}
    assert inference_settings(SimpleNamespace(window=None))["mode"] == "whole"


@pytest.mark.integration
def test_served_model_fingerprint_comes_from_the_server(two_models, tmp_path, own_server):
    from evaluation.predictors import TritonPredictor

    a, _, data = two_models
    server = own_server(a.parent)
    served = TritonPredictor(server.grpc_url, "depth")
    try:
        report = evaluate(served, EvalSettings(data=str(data)))
    finally:
        served.close()
    local = evaluate(OnnxPredictor(str(a)), EvalSettings(data=str(data)))
    fp, lfp = report["fingerprint"]["model"], local["fingerprint"]["model"]
    assert fp["name"] == "depth" and fp["version"] == 1 and len(fp["config_sha256"]) == 64
    assert fp["contract_sha256"] == lfp["contract_sha256"]  # the same contract, read from the server
    assert report["fingerprint"]["settings"] == local["fingerprint"]["settings"]
