"""Exact checks on clients/contract.py that mutation testing showed were missing.

Each test pins a behaviour a surviving mutmut mutant changed (`make mutation`, docs/testing.md):
the exact parameter keys and values a contract writes, the exact config message, what a config
without optional parts reads back as, every validation boundary and its message, version
directories, the VOC palette. Expected values are written out by hand, never produced by the
function under test (a round trip is asserted only next to a hand-written expectation).
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from clients.contract import (
    ContractError,
    ModelContract,
    Resize,
    checked_palette,
    default_palette,
    is_valid_name,
    latest_version,
    list_versions,
    numpy_dtype_name,
    parse_hw,
    parse_model_config,
    read_config_file,
    triton_dtype,
)


def raises_exactly(exc_type, message, fn, *args, **kwargs):
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    assert str(info.value) == message
    return info.value


def seg(**kw) -> ModelContract:
    fields = dict(name="seg", task="segmentation", resize=Resize("letterbox", 16, 24, 8), num_classes=2)
    fields.update(kw)
    return ModelContract(**fields)


def depth(**kw) -> ModelContract:
    fields = dict(name="d", task="depth", resize=Resize("stride", stride=8), output_kind="depth")
    fields.update(kw)
    return ModelContract(**fields)


def matting(**kw) -> ModelContract:
    fields = dict(name="mat", task="matting", resize=Resize("letterbox", 10, 12), output_kind="alpha")
    fields.update(kw)
    return ModelContract(**fields)


# ---- parse_hw ---------------------------------------------------------------------------------
@pytest.mark.parametrize("text,hw", [
    ("64", (64, 64)), (" 7 ", (7, 7)), ("1", (1, 1)), ("4X6", (4, 6)), (" 5x9\n", (5, 9)),
    ("1x5", (1, 5)), ("5x1", (5, 1)), ("1x1", (1, 1)),
])
def test_parse_hw_reads_one_or_two_positive_ints(text, hw):
    assert parse_hw(text) == hw


@pytest.mark.parametrize("text", ["0x5", "5x0", "0x0", "-1x5", "5x-1", "0", "1x2x3", "x", "", "ax2", "2x"])
def test_parse_hw_refuses_non_positive_and_malformed_sizes(text):
    raises_exactly(ValueError, f"size must look like HxW with positive integers (e.g. 512x1024), got {text!r}",
                   parse_hw, text)


def test_parse_hw_names_what_it_parses():
    raises_exactly(ValueError, "--tile must look like HxW with positive integers (e.g. 512x1024), got '0'",
                   parse_hw, "0", "--tile")


# ---- names, dtypes ----------------------------------------------------------------------------
@pytest.mark.parametrize("name,ok", [
    ("a", True), ("seg_unet-v1.2", True), ("a" * 128, True), ("a" * 129, False), ("_a", False),
    ("a/b", False), ("a\n", False), ("", False), (None, False), (5, False), (b"abc", False),
])
def test_is_valid_name(name, ok):
    assert is_valid_name(name) is ok


def test_dtype_names_map_both_ways():
    assert triton_dtype("uint8") == 2 and triton_dtype("int32") == 8 and triton_dtype("float32") == 11
    assert numpy_dtype_name("TYPE_FP32") == "float32" and numpy_dtype_name("TYPE_UINT8") == "uint8"
    assert numpy_dtype_name(11) == "float32" and numpy_dtype_name(2) == "uint8" and numpy_dtype_name(10) == "float16"
    assert numpy_dtype_name("TYPE_STRING") is None and numpy_dtype_name(13) is None
    assert numpy_dtype_name("TYPE_NOT_A_TYPE") is None


# ---- Resize -----------------------------------------------------------------------------------
def test_resize_boundaries():
    assert Resize("letterbox", 1, 1).stride == 32
    assert Resize("stride", stride=1).stride == 1
    assert Resize("stride").height == 0  # a stride resize needs no size
    raises_exactly(ContractError, "resize mode must be 'letterbox' or 'stride', got 'crop'", Resize, "crop", 4, 4)
    for h, w in [(0, 5), (5, 0), (0, 0), (-1, 5)]:
        raises_exactly(ContractError, f"letterbox resize needs a positive HxW, got {h}x{w}", Resize, "letterbox", h, w)
    raises_exactly(ContractError, "stride must be positive, got 0", Resize, "stride", stride=0)
    raises_exactly(ContractError, "stride must be positive, got -8", Resize, "letterbox", 4, 4, -8)


def test_resize_parse_and_str():
    assert Resize.parse("letterbox:16x24") == Resize("letterbox", 16, 24, 32)
    assert Resize.parse("letterbox:16") == Resize("letterbox", 16, 16, 32)
    assert Resize.parse("stride:8") == Resize("stride", 0, 0, 8)
    assert str(Resize("letterbox", 16, 24, 8)) == "letterbox:16x24" and str(Resize("stride", stride=8)) == "stride:8"
    for text in ["letterbox:0x4", "stride:x", "stride:0", "crop:4", "letterbox", "", "stride:8:8", "letterbox:4x4:x"]:
        raises_exactly(ContractError, f"--resize must look like 'letterbox:512x512' or 'stride:32', got {text!r}",
                       Resize.parse, text)


# ---- ModelContract validation -------------------------------------------------------------------
def test_contract_validation_boundaries_are_accepted():
    assert seg(num_classes=1).num_classes == 1
    assert seg(class_names=("a", "b")).class_names == ("a", "b")
    assert seg(max_batch_size=0).max_batch_size == 0
    assert seg(max_size=(1, 1)).max_size == (1, 1)
    assert seg(max_queue_size=0).max_queue_size == 0
    # a field that belongs to another task is not checked
    assert seg(depth_kind="whatever", alpha_range="whatever").depth_kind == "whatever"
    assert depth(alpha_range="whatever", num_classes=0).alpha_range == "whatever"
    assert matting(depth_kind="whatever").depth_kind == "whatever"
    for kind in ("metric", "relative", "disparity"):
        assert depth(depth_kind=kind).depth_kind == kind
    for rng in ("0-1", "0-255"):
        assert matting(alpha_range=rng).alpha_range == rng


@pytest.mark.parametrize("make,message", [
    (lambda: seg(name="a/b"), "model name 'a/b' is not safe: use letters, digits, '_', '-', '.' "
                              "(no path separators, at most 128 characters)"),
    (lambda: seg(task="pose"), "task must be one of ('segmentation', 'depth', 'matting'), got 'pose'"),
    (lambda: seg(input_dtype="float16"), "input dtype must be one of ('uint8', 'float32'), got 'float16'"),
    (lambda: depth(output_kind="labels"), "depth output must be one of ('depth',), got 'labels'"),
    (lambda: seg(output_kind="alpha"),
     "segmentation output must be one of ('labels', 'labels+confidence', 'logits'), got 'alpha'"),
    (lambda: seg(num_classes=0), "a segmentation model needs num_classes > 0"),
    (lambda: seg(num_classes=-1), "a segmentation model needs num_classes > 0"),
    (lambda: seg(class_names=("a", "b", "c")), "3 class names for 2 classes"),
    (lambda: seg(max_batch_size=-1), "max_batch_size must be >= 0"),
    (lambda: seg(max_size=(0, 5)), "max size must be a positive (H, W), got (0, 5)"),
    (lambda: seg(max_size=(5, 0)), "max size must be a positive (H, W), got (5, 0)"),
    (lambda: seg(max_size=(5,)), "max size must be a positive (H, W), got (5,)"),
    (lambda: seg(max_size=(5, 5, 5)), "max size must be a positive (H, W), got (5, 5, 5)"),
    (lambda: seg(max_queue_size=-1), "max_queue_size must be >= 0 (0 = unbounded)"),
    (lambda: depth(depth_kind="inverse"), "depth kind must be one of ('metric', 'relative', 'disparity'), got 'inverse'"),
    (lambda: matting(alpha_range="0-100"), "alpha range must be one of ('0-1', '0-255'), got '0-100'"),
])
def test_contract_validation_messages(make, message):
    raises_exactly(ContractError, message, make)


# ---- tensors ------------------------------------------------------------------------------------
def test_input_dims_and_shapes_per_layout():
    c = seg()
    assert c.input_shape(2, 5, 7) == (2, 5, 7, 3) and c.input_dims(5, 7) == [5, 7, 3]
    f = seg(input_dtype="float32")
    assert f.input_shape(2, 5, 7) == (2, 3, 5, 7) and f.input_dims(5, 7) == [3, 5, 7]
    assert c.input_hw((2, 5, 7, 3)) == (5, 7) and f.input_hw((2, 3, 5, 7)) == (5, 7)


def test_output_specs_per_task_and_kind():
    assert depth().output_specs() == [("depth", "float32", [-1, -1])]
    assert depth(static_shape=(4, 6)).output_specs() == [("depth", "float32", [4, 6])]
    assert matting().output_specs() == [("alpha", "float32", [-1, -1])]
    assert matting(alpha_range="0-255", static_shape=(10, 12)).output_specs() == [("alpha", "uint8", [10, 12])]
    assert seg().output_specs() == [("labels", "uint8", [-1, -1])]
    assert seg(num_classes=256).output_specs() == [("labels", "int32", [-1, -1])]
    assert seg(output_kind="labels+confidence", static_shape=(3, 5)).output_specs() == [
        ("labels", "uint8", [3, 5]), ("confidence", "float32", [3, 5])]
    assert seg(output_kind="logits", num_classes=7).output_specs() == [("logits", "float32", [7, -1, -1])]
    assert seg(input_dtype="float32").input_spec() == ("image", "float32", [3, -1, -1])
    assert seg(static_shape=(4, 6)).input_spec() == ("image", "uint8", [4, 6, 3])


def test_warmup_hw():
    assert seg().warmup_hw() == (16, 24)
    assert depth().warmup_hw() == (64, 64)
    assert depth(resize=Resize("stride", stride=5)).warmup_hw() == (40, 40)


def test_labels_txt():
    assert seg(class_names=("sky", "road")).labels_txt() == "sky\nroad\n"
    assert seg(num_classes=3).labels_txt() == "class_0\nclass_1\nclass_2\n"
    assert depth().labels_txt() == ""


# ---- parameters ---------------------------------------------------------------------------------
SEG_PARAMS = {
    "pixelport.task": "segmentation",
    "pixelport.input_dtype": "uint8",
    "pixelport.input_layout": "NHWC",
    "pixelport.color": "RGB",
    "pixelport.mean": "[0.485, 0.456, 0.406]",
    "pixelport.std": "[0.229, 0.224, 0.225]",
    "pixelport.resize": "letterbox:16x24",
    "pixelport.stride": "8",
    "pixelport.pad_value": "114",
    "pixelport.ignore_index": "250",
    "pixelport.output_kind": "labels+confidence",
    "pixelport.precision": "fp16",
    "pixelport.max_batch_size": "4",
    "pixelport.num_classes": "2",
    "pixelport.class_names": '["a", "b"]',
    "pixelport.palette": "[[1, 2, 3], [4, 5, 6]]",
    "pixelport.max_size": "16x24",
    "pixelport.max_request_bytes": "4608",  # 4 * 16 * 24 * 3
    "pixelport.intra_op_threads": "3",
    "pixelport.extra.k": "v",
    "pixelport.extra.a.b": "c",
}


def rich_seg() -> ModelContract:
    return seg(class_names=("a", "b"), palette=((1, 2, 3), (4, 5, 6)), output_kind="labels+confidence",
               pad_value=114, ignore_index=250, precision="fp16", max_batch_size=4, intra_op_threads=3,
               extra={"k": "v", "a.b": "c"}, instance_count=2, instance_kind="KIND_GPU", gpu_accelerator=True,
               max_queue_size=7)


DEPTH_PARAMS = {
    "pixelport.task": "depth",
    "pixelport.input_dtype": "float32",
    "pixelport.input_layout": "NCHW",
    "pixelport.color": "RGB",
    "pixelport.mean": "[0.5, 0.25, 0.125]",
    "pixelport.std": "[1.0, 2.0, 4.0]",
    "pixelport.resize": "stride:8",
    "pixelport.stride": "8",
    "pixelport.pad_value": "0",
    "pixelport.ignore_index": "255",
    "pixelport.output_kind": "depth",
    "pixelport.precision": "fp32",
    "pixelport.max_batch_size": "1",
    "pixelport.depth_kind": "disparity",
    "pixelport.depth_scale": "2.0",
    "pixelport.max_size": "100x200",
    "pixelport.max_request_bytes": "240000",  # 1 * 100 * 200 * 3 * 4 bytes
}


def rich_depth() -> ModelContract:
    return depth(input_dtype="float32", mean=(0.5, 0.25, 0.125), std=(1.0, 2.0, 4.0), max_batch_size=1,
                 depth_kind="disparity", depth_scale=2, max_size=(100, 200), platform="tensorrt_plan",
                 dynamic_batching=False)


MATTING_PARAMS = {
    "pixelport.task": "matting",
    "pixelport.input_dtype": "uint8",
    "pixelport.input_layout": "NHWC",
    "pixelport.color": "RGB",
    "pixelport.mean": "[0.485, 0.456, 0.406]",
    "pixelport.std": "[0.229, 0.224, 0.225]",
    "pixelport.resize": "letterbox:10x12",
    "pixelport.stride": "32",
    "pixelport.pad_value": "0",
    "pixelport.ignore_index": "255",
    "pixelport.output_kind": "alpha",
    "pixelport.precision": "int8",
    "pixelport.max_batch_size": "2",
    "pixelport.alpha_range": "0-255",
    "pixelport.max_size": "10x12",
    "pixelport.max_request_bytes": "720",  # 2 * 10 * 12 * 3
}


def rich_matting() -> ModelContract:
    return matting(alpha_range="0-255", static_shape=(10, 12), max_batch_size=2, precision="int8",
                   gpu_accelerator=True, max_queue_size=0)


def test_parameters_are_exactly_these_strings():
    assert rich_seg().parameters() == SEG_PARAMS
    assert rich_depth().parameters() == DEPTH_PARAMS
    assert rich_matting().parameters() == MATTING_PARAMS
    stride = depth(max_batch_size=0).parameters()  # no max_size: DEFAULT_MAX_SIDE squared, one image
    assert stride["pixelport.max_size"] == "2048x2048"
    assert stride["pixelport.max_request_bytes"] == str(2048 * 2048 * 3)
    assert stride["pixelport.depth_scale"] == "1.0" and stride["pixelport.depth_kind"] == "metric"


@pytest.mark.parametrize("make,params", [(rich_seg, SEG_PARAMS), (rich_depth, DEPTH_PARAMS),
                                         (rich_matting, MATTING_PARAMS)])
def test_from_parameters_reads_every_key(make, params):
    expected = make()
    got = ModelContract.from_parameters(expected.name, params, expected.max_batch_size)
    # the config, not the parameters, carries these: from_parameters leaves their defaults
    assert got == replace(expected, instance_count=1, instance_kind="KIND_CPU", gpu_accelerator=False,
                          dynamic_batching=True, max_queue_size=64, platform="onnxruntime", static_shape=None)


MINIMAL = {
    "pixelport.resize": "letterbox:16x24",
    "pixelport.task": "segmentation",
    "pixelport.input_dtype": "uint8",
    "pixelport.output_kind": "labels",
    "pixelport.mean": "[0.5, 0.5, 0.5]",
    "pixelport.std": "[0.25, 0.25, 0.25]",
    "pixelport.pad_value": "7",
    "pixelport.num_classes": "3",
}


def test_from_parameters_defaults_for_every_optional_key():
    got = ModelContract.from_parameters("m", dict(MINIMAL))
    assert got == ModelContract(name="m", task="segmentation", resize=Resize("letterbox", 16, 24, 32),
                                input_dtype="uint8", output_kind="labels", mean=(0.5, 0.5, 0.5),
                                std=(0.25, 0.25, 0.25), pad_value=7, num_classes=3)
    assert got.max_batch_size == 8 and got.ignore_index == 255 and got.precision == "fp32"
    assert got.resize.stride == 32 and got.max_size is None and got.intra_op_threads == 0 and got.extra == {}
    assert got.class_names == () and got.palette == ()
    d = ModelContract.from_parameters("d", {**MINIMAL, "pixelport.task": "depth", "pixelport.output_kind": "depth"})
    assert d.depth_kind == "metric" and d.depth_scale == 1.0 and isinstance(d.depth_scale, float)
    m = ModelContract.from_parameters("m", {**MINIMAL, "pixelport.task": "matting", "pixelport.output_kind": "alpha"})
    assert m.alpha_range == "0-1"


def test_from_parameters_stride_and_max_size():
    lb = ModelContract.from_parameters("m", {**MINIMAL, "pixelport.stride": "8", "pixelport.max_size": "100x200"}, 2)
    assert lb.resize == Resize("letterbox", 16, 24, 8) and lb.max_size == (100, 200) and lb.max_batch_size == 2
    # in stride mode the resize string carries the stride; the separate key is not read
    st = ModelContract.from_parameters("m", {**MINIMAL, "pixelport.resize": "stride:16", "pixelport.stride": "8"})
    assert st.resize == Resize("stride", 0, 0, 16)
    # a max size equal to the resize policy's own reads back as the default
    same = ModelContract.from_parameters("m", {**MINIMAL, "pixelport.max_size": "16x24"})
    assert same.max_size is None
    extra = ModelContract.from_parameters("m", {**MINIMAL, "pixelport.extra.k": "v", "other.x": "y",
                                                "pixelport.extrak": "not extra"})
    assert extra.extra == {"k": "v"}


@pytest.mark.parametrize("key", ["resize", "task", "input_dtype", "output_kind", "mean", "std", "pad_value"])
def test_from_parameters_names_a_missing_key(key):
    params = {k: v for k, v in MINIMAL.items() if k != f"pixelport.{key}"}
    raises_exactly(ContractError, f"model 'm' has no 'pixelport.{key}' parameter: it was not published by "
                                  "pixelport's exporter (re-export it with `python -m export`)",
                   ModelContract.from_parameters, "m", params)


def test_from_parameters_wraps_malformed_values_and_keeps_contract_errors():
    raises_exactly(ContractError, "model 'm' carries a malformed pixelport parameter: "
                                  "invalid literal for int() with base 10: 'x'",
                   ModelContract.from_parameters, "m", {**MINIMAL, "pixelport.pad_value": "x"})
    raises_exactly(ContractError, "model 'm' carries a malformed pixelport parameter: "
                                  "size must look like HxW with positive integers (e.g. 512x1024), got '0x4'",
                   ModelContract.from_parameters, "m", {**MINIMAL, "pixelport.max_size": "0x4"})
    err = raises_exactly(ContractError, "--resize must look like 'letterbox:512x512' or 'stride:32', got 'bogus'",
                         ModelContract.from_parameters, "m", {**MINIMAL, "pixelport.resize": "bogus"})
    assert err.__cause__ is None
    raises_exactly(ContractError, "a segmentation model needs num_classes > 0",
                   ModelContract.from_parameters, "m", {**MINIMAL, "pixelport.num_classes": "0"})


# ---- the Triton config ----------------------------------------------------------------------------
def config_without_parameters(contract: ModelContract) -> mc.ModelConfig:
    cfg = contract.to_model_config()
    cfg.ClearField("parameters")
    return cfg


def parse(text: str) -> mc.ModelConfig:
    msg = mc.ModelConfig()
    text_format.Parse(text, msg)
    return msg


def test_config_of_a_gpu_segmenter():
    cfg = rich_seg().to_model_config()
    assert {k: v.string_value for k, v in cfg.parameters.items()} == SEG_PARAMS
    assert config_without_parameters(rich_seg()) == parse("""
        name: "seg" max_batch_size: 4 backend: "onnxruntime" default_model_filename: "model.onnx"
        input { name: "image" data_type: TYPE_UINT8 dims: [-1, -1, 3] }
        output { name: "labels" data_type: TYPE_UINT8 dims: [-1, -1] }
        output { name: "confidence" data_type: TYPE_FP32 dims: [-1, -1] }
        dynamic_batching { default_queue_policy { max_queue_size: 7 } }
        instance_group { count: 2 kind: KIND_GPU }
        optimization { execution_accelerators { gpu_execution_accelerator {
            name: "tensorrt"
            parameters { key: "precision_mode" value: "FP16" }
            parameters { key: "max_workspace_size_bytes" value: "1073741824" } } } }
        model_warmup { name: "opt_shape" batch_size: 1
            inputs { key: "image" value { data_type: TYPE_UINT8 dims: [16, 24, 3] zero_data: true } } }
    """)
    assert cfg.HasField("dynamic_batching") and cfg.platform == ""


def test_config_of_a_tensorrt_depth_model():
    cfg = rich_depth().to_model_config()
    assert {k: v.string_value for k, v in cfg.parameters.items()} == DEPTH_PARAMS
    # max batch 1: no dynamic batcher; a plan gets no ORT accelerator even when asked
    assert config_without_parameters(replace(rich_depth(), gpu_accelerator=True)) == parse("""
        name: "d" max_batch_size: 1 platform: "tensorrt_plan" default_model_filename: "model.plan"
        input { name: "image" data_type: TYPE_FP32 dims: [3, -1, -1] }
        output { name: "depth" data_type: TYPE_FP32 dims: [-1, -1] }
        instance_group { count: 1 kind: KIND_CPU }
        model_warmup { name: "opt_shape" batch_size: 1
            inputs { key: "image" value { data_type: TYPE_FP32 dims: [3, 64, 64] zero_data: true } } }
    """)
    assert not cfg.HasField("dynamic_batching") and not cfg.HasField("optimization") and cfg.backend == ""


def test_config_of_a_static_matting_model():
    cfg = config_without_parameters(rich_matting())
    assert cfg == parse("""
        name: "mat" max_batch_size: 2 backend: "onnxruntime" default_model_filename: "model.onnx"
        input { name: "image" data_type: TYPE_UINT8 dims: [10, 12, 3] }
        output { name: "alpha" data_type: TYPE_UINT8 dims: [10, 12] }
        dynamic_batching { }
        instance_group { count: 1 kind: KIND_CPU }
        optimization { execution_accelerators { gpu_execution_accelerator {
            name: "tensorrt"
            parameters { key: "precision_mode" value: "FP32" }
            parameters { key: "max_workspace_size_bytes" value: "1073741824" } } } }
        model_warmup { name: "opt_shape" batch_size: 1
            inputs { key: "image" value { data_type: TYPE_UINT8 dims: [10, 12, 3] zero_data: true } } }
    """)
    # max queue 0 = unbounded: a batcher without a queue policy
    assert cfg.HasField("dynamic_batching") and not cfg.dynamic_batching.HasField("default_queue_policy")
    fp32 = replace(rich_matting(), precision="fp32").to_model_config()
    assert fp32.optimization.execution_accelerators.gpu_execution_accelerator[0].parameters["precision_mode"] == "FP32"


def test_dynamic_batching_needs_both_the_flag_and_a_batch():
    assert not seg(dynamic_batching=False, max_batch_size=8).to_model_config().HasField("dynamic_batching")
    assert not seg(max_batch_size=1).to_model_config().HasField("dynamic_batching")
    assert not seg(max_batch_size=0).to_model_config().HasField("dynamic_batching")
    on = seg(max_batch_size=2).to_model_config()
    assert on.HasField("dynamic_batching") and on.dynamic_batching.default_queue_policy.max_queue_size == 64


@pytest.mark.parametrize("make", [rich_seg, rich_depth, rich_matting,
                                  lambda: seg(dynamic_batching=False, max_batch_size=8),
                                  lambda: depth(max_size=(64, 64), instance_count=3, intra_op_threads=2)])
def test_config_reads_back_as_the_contract(make):
    contract = make()
    cfg = contract.to_model_config()
    assert ModelContract.from_model_config(cfg) == contract
    assert ModelContract.from_model_config(text_format.MessageToString(cfg)) == contract


def test_from_model_config_reads_the_config_fields():
    got = ModelContract.from_model_config(rich_seg().to_model_config())
    assert (got.instance_count, got.instance_kind, got.gpu_accelerator, got.max_queue_size) == (2, "KIND_GPU", True, 7)
    assert got.platform == "onnxruntime" and got.static_shape is None and got.dynamic_batching is True
    trt = ModelContract.from_model_config(rich_depth().to_model_config())
    assert trt.platform == "tensorrt_plan" and trt.dynamic_batching is False and trt.max_queue_size == 64
    static = ModelContract.from_model_config(rich_matting().to_model_config())
    assert static.static_shape == (10, 12) and static.max_queue_size == 0


def test_from_model_config_without_optional_parts():
    cfg = seg(max_batch_size=1, dynamic_batching=False).to_model_config()
    cfg.ClearField("instance_group")
    got = ModelContract.from_model_config(cfg)
    assert got.instance_count == 1 and got.instance_kind == "KIND_CPU" and got.max_queue_size == 64
    cfg.instance_group.add(count=0, kind=mc.ModelInstanceGroup.KIND_GPU)  # count 0: Triton's default of one
    got = ModelContract.from_model_config(cfg)
    assert got.instance_count == 1 and got.instance_kind == "KIND_GPU"


@pytest.mark.parametrize("dims,static", [([1, 1, 3], (1, 1)), ([0, 5, 3], None), ([5, 0, 3], None),
                                         ([-1, 5, 3], None), ([5, 7], None), ([1, 5, 7, 3], None)])
def test_from_model_config_static_shape_from_the_input_dims(dims, static):
    cfg = seg().to_model_config()
    del cfg.input[0].dims[:]
    cfg.input[0].dims.extend(dims)
    assert ModelContract.from_model_config(cfg).static_shape == static


def test_from_model_config_static_shape_of_a_float_input():
    cfg = seg(input_dtype="float32").to_model_config()
    del cfg.input[0].dims[:]
    cfg.input[0].dims.extend([3, 4, 6])
    assert ModelContract.from_model_config(cfg).static_shape == (4, 6)


def test_from_model_config_wants_one_input_named_image():
    cfg = seg().to_model_config()
    cfg.input[0].name = "pixels"
    raises_exactly(ContractError, "model 'seg' has inputs ['pixels']; pixelport expects ['image']",
                   ModelContract.from_model_config, cfg)
    cfg.input.add(name="extra")
    raises_exactly(ContractError, "model 'seg' has inputs ['pixels', 'extra']; pixelport expects ['image']",
                   ModelContract.from_model_config, cfg)


# ---- parse_model_config / read_config_file ---------------------------------------------------------
def test_parse_model_config_from_every_form():
    msg = mc.ModelConfig(name="m", max_batch_size=2)
    assert parse_model_config(msg) is msg
    assert parse_model_config('name: "m" max_batch_size: 2') == msg
    assert parse_model_config({"name": "m", "max_batch_size": 2}) == msg  # without the `config` wrapper
    assert parse_model_config({"config": {"name": "m", "max_batch_size": 2}}) == msg
    assert parse_model_config({"name": "m", "max_batch_size": 2, "not_a_field": 1}) == msg  # unknown keys ignored
    response = SimpleNamespace(config=msg)
    assert parse_model_config(response) is msg


def test_parse_model_config_refusals():
    with pytest.raises(ContractError) as info:
        parse_model_config("name: ")
    assert str(info.value).startswith("config.pbtxt does not parse with Triton's schema: ")
    assert len(str(info.value)) > len("config.pbtxt does not parse with Triton's schema: ")
    raises_exactly(ContractError, "cannot read a model config from int", parse_model_config, 42)
    raises_exactly(ContractError, "cannot read a model config from SimpleNamespace",
                   parse_model_config, SimpleNamespace(config="name: 'm'"))


def test_read_config_file_from_the_file_or_its_directory(tmp_path):
    (tmp_path / "config.pbtxt").write_text('name: "caf\u00e9" max_batch_size: 3\n', encoding="utf-8")
    want = mc.ModelConfig(name="caf\u00e9", max_batch_size=3)
    assert read_config_file(tmp_path) == want
    assert read_config_file(str(tmp_path)) == want
    assert read_config_file(tmp_path / "config.pbtxt") == want
    other = tmp_path / "other.pbtxt"
    other.write_text('name: "x"\n', encoding="utf-8")
    assert read_config_file(other) == mc.ModelConfig(name="x")


# ---- version directories --------------------------------------------------------------------------
def test_list_versions_reads_decimal_directories_in_numeric_order(tmp_path):
    for name in ["10", "2", "1", "007"]:
        (tmp_path / name).mkdir()
    for name in ["abc", "v3", "\u0663", "-4", "3.0"]:  # not decimal ASCII digits ("٣" is a digit, not ASCII)
        (tmp_path / name).mkdir()
    (tmp_path / "5").write_text("a file, not a version")
    got = list_versions(tmp_path)
    assert got == {1: tmp_path / "1", 2: tmp_path / "2", 7: tmp_path / "007", 10: tmp_path / "10"}
    assert list(got) == [1, 2, 7, 10]
    assert list_versions(str(tmp_path)) == got
    assert latest_version(tmp_path) == (10, tmp_path / "10")


def test_the_canonical_spelling_of_a_version_wins(tmp_path):
    for name in ["01", "1", "001", "02"]:
        (tmp_path / name).mkdir()
    assert list_versions(tmp_path) == {1: tmp_path / "1", 2: tmp_path / "02"}


def test_list_versions_with_a_file_keeps_only_versions_holding_it(tmp_path):
    for v in range(1, 13):
        (tmp_path / str(v)).mkdir()
        if v % 3 == 1:
            (tmp_path / str(v) / "model.onnx").write_bytes(b"x")
    (tmp_path / "11" / "model.plan").write_bytes(b"x")
    (tmp_path / "12" / "model.onnx").mkdir()  # a directory of that name is not the file
    for junk in ["junk_a", "junk_b", "junk_c"]:
        (tmp_path / junk).mkdir()
    assert list_versions(tmp_path, "model.onnx") == {v: tmp_path / str(v) for v in (1, 4, 7, 10)}
    assert list_versions(tmp_path, "model.plan") == {11: tmp_path / "11"}
    assert list(list_versions(tmp_path)) == list(range(1, 13))
    assert latest_version(tmp_path, "model.onnx") == (10, tmp_path / "10")
    assert latest_version(tmp_path, filename="model.plan") == (11, tmp_path / "11")
    assert latest_version(tmp_path, "model.bin") is None


def test_no_versions(tmp_path):
    assert list_versions(tmp_path / "missing") == {} and latest_version(tmp_path / "missing") is None
    (tmp_path / "file").write_text("x")
    assert list_versions(tmp_path / "file") == {} and latest_version(tmp_path / "file") is None
    assert list_versions(tmp_path) == {} and latest_version(tmp_path) is None


# ---- palettes -------------------------------------------------------------------------------------
VOC = [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128), (0, 128, 128),
       (128, 128, 128), (64, 0, 0), (192, 0, 0), (64, 128, 0), (192, 128, 0), (64, 0, 128), (192, 0, 128),
       (64, 128, 128), (192, 128, 128), (0, 64, 0), (128, 64, 0), (0, 192, 0), (128, 192, 0), (0, 64, 128)]


def test_default_palette_is_the_pascal_voc_colour_map():
    assert default_palette(21) == tuple(VOC)
    assert default_palette(0) == ()
    full = default_palette(256)
    assert len(full) == 256
    assert full[255] == (224, 224, 192)  # VOC's "void" colour
    # index bits are read three at a time (red, green, blue), each triple one bit lower, from bit 7
    assert full[64] == (32, 0, 0)  # 0b1_000_000: red of the third triple
    assert full[73] == (224, 0, 0)  # 0b1_001_001: red of all three
    assert full[146] == (0, 224, 0)  # 0b10_010_010: green of all three
    assert full[100] == (32, 0, 192)  # 0b1_100_100: blue of the first two, red of the third
    assert default_palette(300)[292] == (0, 0, 224)  # 0b100_100_100: blue of all three


def test_checked_palette():
    assert checked_palette([(1, 2, 3)], 1) == ((1, 2, 3),)
    assert checked_palette([[1.0, 2, 3], (4, 5, 6), (7, 8, 9)], 2) == ((1, 2, 3), (4, 5, 6))  # ints, cut to n
    assert checked_palette([], 2) == ((0, 0, 0), (128, 0, 0))
    assert checked_palette((), 0) == ()
    raises_exactly(ContractError, "palette needs 3 RGB triples, got 2", checked_palette, [(1, 2, 3), (4, 5, 6)], 3)
    raises_exactly(ContractError, "palette needs 1 RGB triples, got 1", checked_palette, [(1, 2)], 1)
    raises_exactly(ContractError, "palette needs 1 RGB triples, got 2", checked_palette, [(1, 2, 3), (1, 2, 3, 4)], 1)
