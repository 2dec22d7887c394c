"""Fidelity: the served model (real Triton, fp32) scores what the in-process PyTorch checkpoint
scores on the synthetic val split: mIoU within 0.1 points, depth abs_rel within 1 % relative."""

from __future__ import annotations

import json

import pytest

from clients.__main__ import main
from clients.contract import CONFIG_FILE, ModelContract, read_config_file
from evaluation.evaluate import EvalSettings, evaluate
from evaluation.predictors import OnnxPredictor, TorchPredictor, TritonPredictor

# model -> (metric, tolerance, relative?)
CHECKS = {"seg_unet": ("mIoU", 0.001, False), "depth_unet": ("abs_rel", 0.01, True),
          "matting_unet": ("sad", 0.01, True)}


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("name", list(CHECKS))
def test_served_model_scores_like_in_process_pytorch(name, triton_server, zoo_repository, zoo_checkpoints,
                                                     zoo_dataset, tmp_path):
    settings = EvalSettings(data=str(zoo_dataset), split="val", concurrency=2)
    served_contract = ModelContract.from_model_config(read_config_file(str(zoo_repository / name / CONFIG_FILE)))
    triton = TritonPredictor(triton_server.grpc_url, name)
    try:
        served = evaluate(triton, settings)
    finally:
        triton.close()
    # PyTorch gets the served contract, so both see the same letterbox; only the backend differs.
    torch_report = evaluate(TorchPredictor(str(zoo_checkpoints[name]), contract=served_contract), settings)
    onnx_report = evaluate(OnnxPredictor(str(zoo_repository / name)), settings)
    metric, tol, relative = CHECKS[name]
    a, b, c = (r["metrics"][metric] for r in (served, torch_report, onnx_report))
    print(f"\n{name} {metric}: triton {a!r}  pytorch {b!r}  onnxruntime {c!r}")
    for report in (served, torch_report, onnx_report):
        assert report["num_failed"] == 0 and report["num_evaluated"] == report["num_images"] > 0
    diff = abs(a - b) / abs(b) if relative else abs(a - b)
    assert diff <= tol, f"{name}: served {metric} {a} vs PyTorch {b}"
    # Triton runs the same model.onnx through onnxruntime: only batching may differ.
    onnx_diff = abs(a - c) / abs(c) if relative else abs(a - c)
    assert onnx_diff <= tol / 10, f"{name}: served {metric} {a} vs onnxruntime {c}"
    # The CLI over gRPC writes the same numbers as the API.
    out = tmp_path / "cli"
    assert main(["eval", "--backend", "triton", "--url", triton_server.grpc_url, "--model", name,
                 "--data", str(zoo_dataset), "--split", "val", "--out", str(out)]) == 0
    cli = json.loads((out / "report.json").read_text())
    assert cli["metrics"] == served["metrics"] and cli["num_failed"] == 0
