"""Every config.pbtxt the exporter can write parses with Triton's schema and round-trips."""

from __future__ import annotations

from dataclasses import replace

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from clients.contract import ModelContract
from export import ExportSettings
from export.metadata import build_contract
from export.parity import gate_cases, gate_shapes
from export.settings import Profile
from export_helpers import zoo_meta

VARIANTS = {
    "labels": dict(),
    "labels+confidence": dict(output="labels+confidence"),
    "logits-float-input": dict(output="logits", input="float"),
    "static-gpu": dict(static=True, gpu=True, max_batch=16, instances=2),
    "tensorrt": dict(tensorrt=True, static=True, fp16=True),
    "int8-stride": dict(int8=True, calibration="d", resize="stride:32"),
    "no-dynamic-batching": dict(dynamic_batching=False, max_batch=1),
}


def _contract(task: str, classes: int = 5, **flags) -> ModelContract:
    settings = ExportSettings(name=f"m_{task}", repository="r", arch="unet", checkpoint="c.pt", **flags)
    settings.check()
    return build_contract(settings, zoo_meta("unet", task, classes), task, classes if task == "segmentation" else 1)


def _round_trip(contract: ModelContract) -> model_config_pb2.ModelConfig:
    text = contract.to_pbtxt()
    msg = model_config_pb2.ModelConfig()
    text_format.Parse(text, msg)  # Triton's own schema: unknown fields or bad enums raise
    assert ModelContract.from_model_config(msg) == contract
    assert text_format.MessageToString(msg) == text
    return msg


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("task", ["segmentation", "depth", "matting"])
def test_config_parses_with_tritons_schema_and_round_trips(task, variant):
    contract = _contract(task, **VARIANTS[variant])
    msg = _round_trip(contract)
    assert msg.input[0].name == "image" and len(msg.model_warmup) == 1
    params = {k: v.string_value for k, v in msg.parameters.items()}
    assert params["pixelport.task"] == task and params["pixelport.pad_value"] == "114"


def test_flags_land_in_the_config():
    seg = _round_trip(_contract("segmentation", **VARIANTS["static-gpu"]))
    assert seg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert seg.instance_group[0].count == 2 and seg.max_batch_size == 16
    assert list(seg.input[0].dims) == [64, 64, 3]
    assert seg.optimization.execution_accelerators.gpu_execution_accelerator[0].name == "tensorrt"
    trt = _round_trip(_contract("depth", **VARIANTS["tensorrt"]))
    assert trt.platform == "tensorrt_plan" and trt.default_model_filename == "model.plan"
    assert trt.parameters["pixelport.precision"].string_value == "fp16"
    raw = _round_trip(_contract("segmentation", **VARIANTS["logits-float-input"]))
    assert raw.input[0].data_type == model_config_pb2.TYPE_FP32 and list(raw.input[0].dims) == [3, -1, -1]
    assert [o.name for o in raw.output] == ["logits"] and list(raw.output[0].dims) == [5, -1, -1]
    many = _round_trip(_contract("segmentation", classes=300))
    assert many.output[0].data_type == model_config_pb2.TYPE_INT32  # uint8 holds 255 classes at most


def test_the_gate_covers_the_required_shapes():
    contract = _contract("segmentation")
    profile = Profile.for_contract(contract, ExportSettings(name="m", repository="r", arch="unet", checkpoint="c"))
    assert profile.min_hw == (32, 32) and profile.opt_hw == (64, 64) and profile.max_hw == (384, 384)
    shapes = gate_shapes(profile)
    assert shapes == [(64, 64), (97, 131), (250, 333), (161, 67), (32, 32), (384, 384)]
    assert {b for b, _ in gate_cases(profile)} == {1, 4}
    static = Profile.for_contract(replace(contract, static_shape=(64, 64)),
                                  ExportSettings(name="m", repository="r", arch="unet", checkpoint="c", static=True))
    assert gate_shapes(static) == [(64, 64)]
