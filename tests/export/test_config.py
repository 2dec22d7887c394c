"""Every config.pbtxt the exporter can write parses with Triton's schema and round-trips."""

from __future__ import annotations

from dataclasses import replace

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from clients.contract import DEFAULT_OUTPUT_KIND, ModelContract
from export import ExportSettings
from export.errors import ExportError
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
    # a letterbox model's requests are HxW by contract: fixed dims, so Triton refuses any other shape itself
    assert raw.input[0].data_type == model_config_pb2.TYPE_FP32 and list(raw.input[0].dims) == [3, 64, 64]
    assert [o.name for o in raw.output] == ["logits"] and list(raw.output[0].dims) == [5, 64, 64]
    stride = _round_trip(_contract("segmentation", **VARIANTS["int8-stride"]))
    assert list(stride.input[0].dims) == [-1, -1, 3] and list(stride.output[0].dims) == [-1, -1]
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


def test_settings_carry_the_contracts_dtype_name_and_float_stays_an_alias():
    assert ExportSettings(name="m", repository="r", input="float").input == "float32"
    raw = _contract("segmentation", input="float32", output="logits")
    assert raw.input_dtype == "float32" and raw.input_layout == "NCHW"
    assert _contract("segmentation", input="float", output="logits") == raw


def test_defaults_come_from_the_contract():
    settings = ExportSettings(name="m_depth", repository="r", module="x.py:f", resize="letterbox:32x32")
    contract = build_contract(settings, {}, "depth", 1)
    defaults = ModelContract(name="m_depth", task="depth", resize=contract.resize, output_kind="depth")
    assert contract.output_kind == DEFAULT_OUTPUT_KIND["depth"] == "depth"
    for key in ("mean", "std", "pad_value", "ignore_index", "depth_kind", "depth_scale"):
        assert getattr(contract, key) == getattr(defaults, key), key
    disparity = build_contract(replace(settings, depth_kind="disparity"), {}, "depth", 1)
    assert disparity.to_model_config().parameters["pixelport.depth_kind"].string_value == "disparity"
    with pytest.raises(ValueError, match="--depth-kind must be one of metric, relative, disparity"):
        replace(settings, depth_kind="inverse").check()


def test_max_size_is_published_in_stride_mode_only():
    stride = _contract("segmentation", resize="stride:32", max_size=(640, 480))
    assert stride.max_size == (640, 480) and stride.size_limit == (640, 480)
    assert _round_trip(stride).parameters["pixelport.max_size"].string_value == "640x480"
    letterbox = _contract("segmentation", max_size=(640, 480))  # the profile's maximum only
    assert letterbox.max_size is None and letterbox.size_limit == (64, 64)
    profile = Profile.for_contract(stride, ExportSettings(name="m", repository="r", arch="unet", checkpoint="c",
                                                          resize="stride:32", max_size=(640, 480)))
    assert profile.max_hw == (640, 480) and (640, 480) in gate_shapes(profile)


def test_default_instances_two_on_cpu_one_per_gpu_and_the_flag_wins():
    # one CPU instance behind Triton 2.51's dynamic batcher loses wake-ups (500 ms waits): two by default
    assert _round_trip(_contract("segmentation")).instance_group[0].count == 2
    assert _round_trip(_contract("depth", gpu=True)).instance_group[0].count == 1
    assert _round_trip(_contract("depth", tensorrt=True, static=True)).instance_group[0].count == 1
    assert _round_trip(_contract("matting", instances=1)).instance_group[0].count == 1
    assert _round_trip(_contract("matting", instances=3, gpu=True)).instance_group[0].count == 3
    with pytest.raises(ExportError, match="--instances must be at least 1"):
        _contract("segmentation", instances=0)
