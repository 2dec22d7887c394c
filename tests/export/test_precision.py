"""fp16 and int8 variants: same I/O types as fp32, their own gate, and a metric check against fp32."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto

from clients.contract import ONNX_FILE
from export import ExportSettings, export_model
from export_helpers import USER_MODELS
from models.synth import synthesize


def _io(path) -> tuple[list[int], list[int]]:
    graph = onnx.load(str(path)).graph
    return ([i.type.tensor_type.elem_type for i in graph.input], [o.type.tensor_type.elem_type for o in graph.output])


@pytest.mark.slow
def test_fp16_keeps_io_types_and_reports_the_miou_change(tmp_path):
    result = export_model(ExportSettings(name="tiny16", repository=str(tmp_path / "repo"),
                                         module=f"{USER_MODELS}:TinyNet", num_classes=3, resize="letterbox:64x64",
                                         fp16=True, samples=4))
    model = result.version_dir / ONNX_FILE
    assert _io(model) == ([TensorProto.UINT8], [TensorProto.UINT8])
    assert any(t.data_type == TensorProto.FLOAT16 for t in onnx.load(str(model)).graph.initializer)
    assert result.contract.precision == "fp16" and result.parity.precision == "fp16" and result.parity.passed
    metric = result.parity.metric
    assert metric["metric"] == "mIoU" and metric["reference"] == "ground truth" and metric["images"] == 4
    assert (metric["baseline"], metric["candidate"]) == ("fp32", "fp16")
    assert abs(metric["change"]) <= 0.01


@pytest.mark.slow
def test_int8_calibrates_on_a_folder_and_reports_the_abs_rel_change(tmp_path):
    data = synthesize(tmp_path / "calib", n_train=0, n_val=4, size=64, seed=1)
    result = export_model(ExportSettings(name="tiny8", repository=str(tmp_path / "repo"),
                                         module=f"{USER_MODELS}:TinyNet", task="depth", resize="letterbox:64x64",
                                         int8=True, calibration=str(data)))
    model = result.version_dir / ONNX_FILE
    assert _io(model) == ([TensorProto.UINT8], [TensorProto.FLOAT])
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in onnx.load(str(model)).graph.node}
    assert result.contract.precision == "int8" and result.parity.passed
    metric = result.parity.metric
    assert metric["metric"] == "abs_rel" and metric["images"] == 4 and metric["drop"] <= 0.03
