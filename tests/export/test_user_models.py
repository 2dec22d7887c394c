"""User models through `--module`: rewrites make them exportable with dynamic H/W; the gate
catches an export that bakes in the traced size, names the module, and publishes nothing."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
from torch import nn

from clients.contract import CONFIG_FILE, ONNX_FILE
from export import ExportSettings
from export.__main__ import main
from export.sources import load_model
from export_helpers import USER_MODELS, assert_repository_consistent, parse_config
from user_models import PoolNet


def test_module_factory_may_be_a_class_or_a_function(tmp_path):
    torch.save({"model": PoolNet(num_classes=5).state_dict()}, tmp_path / "w.pt")
    for factory in ("PoolNet", "build_pool_net"):
        settings = ExportSettings(name="m", repository=str(tmp_path / "r"), module=f"{USER_MODELS}:{factory}",
                                  num_classes=5, checkpoint=str(tmp_path / "w.pt"))
        loaded = load_model(settings)
        assert type(loaded.module).__name__ == "PoolNet" and loaded.module.head.out_channels == 5
        assert any(isinstance(m, nn.SyncBatchNorm) for m in loaded.module.modules())


@pytest.mark.slow
def test_pool_net_with_sync_bn_and_adaptive_pooling_exports_dynamic_and_matches(tmp_path, capsys):
    repo, report = tmp_path / "repo", tmp_path / "parity.json"
    code = main(["--name", "poolnet", "--repository", str(repo), "--module", f"{USER_MODELS}:PoolNet",
                 "--num-classes", "4", "--resize", "letterbox:64x80", "--output", "labels+confidence",
                 "--report", str(report)])
    assert code == 0, capsys.readouterr().err
    data = json.loads(report.read_text())
    assert data["passed"] and len(data["cases"]) >= 8
    shapes = {tuple(c["hw"]) for c in data["cases"]}
    assert {(64, 80), (97, 131), (250, 333), (161, 67)} <= shapes  # neither 2 nor 3 divides 97/4 or 131/4
    for case in data["cases"]:
        outputs = {o["name"]: o for o in case["outputs"]}
        assert outputs["labels"]["agreement"] >= 0.999
        assert outputs["confidence"]["outliers"] == 0.0 and outputs["confidence"]["max_abs"] < 1e-4
    graph = onnx.load(str(repo / "poolnet" / "1" / ONNX_FILE)).graph
    assert [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim] == ["batch", "height", "width", ""]
    assert {"AdaptiveAveragePool", "GlobalAveragePool"}.isdisjoint(n.op_type for n in graph.node)
    assert [o.name for o in parse_config(repo / "poolnet" / CONFIG_FILE).output] == ["labels", "confidence"]
    assert assert_repository_consistent(repo) == [("poolnet", 1)]


@pytest.mark.slow
def test_letterbox_mode_falls_back_to_a_fixed_size_graph_when_the_dynamic_one_fails(tmp_path, capsys, caplog):
    repo, report = tmp_path / "repo", tmp_path / "parity.json"
    caplog.set_level("INFO", logger="export.api")
    code = main(["--name", "broken", "--repository", str(repo), "--module", f"{USER_MODELS}:BrokenNet",
                 "--num-classes", "3", "--resize", "letterbox:64x64", "--max-batch", "4", "--report", str(report)])
    assert code == 0, capsys.readouterr().err
    lines = [r.getMessage() for r in caplog.records if "dynamic-size graph failed" in r.getMessage()]
    assert len(lines) == 1, "one log line says why"
    # the dynamic graph's failure is still found and located, then replaced by a 64x64 graph
    assert "at batch 1 at 97x131" in lines[0] and "first diverging module: head (SizeDependentHead)" in lines[0]
    assert "a fixed-size graph with a dynamic batch replaces it, gated at batch 1 and 4" in lines[0]
    data = json.loads(report.read_text())
    assert data["passed"] and "97x131" in data["fallback"]
    assert sorted((c["batch"], tuple(c["hw"])) for c in data["cases"]) == [(1, (64, 64)), (4, (64, 64))]
    graph = onnx.load(str(repo / "broken" / "1" / ONNX_FILE)).graph
    assert [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == ["batch", 64, 64, 3]
    assert list(parse_config(repo / "broken" / CONFIG_FILE).input[0].dims) == [64, 64, 3]
    assert assert_repository_consistent(repo) == [("broken", 1)]


@pytest.mark.slow
def test_stride_mode_refuses_a_model_that_bakes_in_its_size_naming_the_guard_and_line(tmp_path, capsys):
    repo, report = tmp_path / "repo", tmp_path / "parity.json"
    code = main(["--name", "broken", "--repository", str(repo), "--module", f"{USER_MODELS}:BrokenNet",
                 "--num-classes", "3", "--resize", "stride:32", "--report", str(report)])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1, err
    assert err.startswith("export: error: stride mode serves any size, but the model's code fixes its input size: "
                          "torch.export guard width > 100 at ")
    assert "user_models.py:" in err and "in forward: `if x.shape[-1] > 100:" in err
    assert err.endswith("nothing was published")
    assert not (repo / "broken").exists() and assert_repository_consistent(repo) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parity.json", "repo"], "no staging leftovers"
    data = json.loads(report.read_text())
    assert data["passed"] is False and "torch.export guard width > 100" in data["error"]


@pytest.mark.slow
def test_static_export_fixes_h_w_keeps_the_batch_dynamic_and_checks_that_shape(tmp_path):
    from export import export_model

    result = export_model(ExportSettings(name="tiny_static", repository=str(tmp_path / "repo"),
                                         module=f"{USER_MODELS}:TinyNet", num_classes=3, resize="letterbox:48x40",
                                         static=True, max_batch=2))
    graph = onnx.load(str(result.version_dir / ONNX_FILE)).graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 48, 40, 3]
    assert list(parse_config(result.model_dir / CONFIG_FILE).input[0].dims) == [48, 40, 3]
    assert result.parity.shapes == [(48, 40)] and {c.batch for c in result.parity.cases} == {1, 2}
