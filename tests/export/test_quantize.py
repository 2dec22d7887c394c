"""export.quantize on a tiny hand-built served-form graph (uint8 NHWC in, labels out): formats,
layers kept in fp32, and the greedy mixed-precision search with a scripted judge (fast)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.errors import ExportError
from export.quantize import (Int8Settings, Verdict, cpu_has_vnni, preprocess, quantize, quantize_within_budget,
                             weighted_nodes)


def tiny_served_graph(path: Path, classes: int = 3, width: int = 8) -> Path:
    """image (N,H,W,3) uint8 -> normalise -> conv_a -> relu -> conv_b -> relu -> head -> argmax -> labels uint8."""
    rng = np.random.default_rng(0)

    def conv(name: str, cin: int, cout: int, k: int) -> tuple[onnx.NodeProto, list]:
        w = numpy_helper.from_array((rng.standard_normal((cout, cin, k, k)) * 0.3).astype(np.float32), f"{name}_w")
        b = numpy_helper.from_array((rng.standard_normal(cout) * 0.1).astype(np.float32), f"{name}_b")
        node = helper.make_node("Conv", [f"{name}_in", f"{name}_w", f"{name}_b"], [f"{name}_out"], name=name,
                                pads=[k // 2] * 4)
        return node, [w, b]

    inits = [numpy_helper.from_array(np.full((1, 3, 1, 1), 1 / 58.0, np.float32), "scale"),
             numpy_helper.from_array(np.full((1, 3, 1, 1), -2.0, np.float32), "shift")]
    nodes = [helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2], name="to_nchw"),
             helper.make_node("Cast", ["nchw"], ["f"], to=TensorProto.FLOAT, name="to_float"),
             helper.make_node("Mul", ["f", "scale"], ["scaled"], name="norm_mul"),
             helper.make_node("Add", ["scaled", "shift"], ["conv_a_in"], name="norm_add")]
    for name, cin, cout, k, nxt in (("conv_a", 3, width, 3, "conv_b_in"), ("conv_b", width, width, 3, "head_in"),
                                    ("head", width, classes, 1, None)):
        node, ws = conv(name, cin, cout, k)
        nodes.append(node)
        inits.extend(ws)
        if nxt:
            nodes.append(helper.make_node("Relu", [f"{name}_out"], [nxt], name=f"{name}_relu"))
    nodes += [helper.make_node("ArgMax", ["head_out"], ["am"], axis=1, keepdims=0, name="argmax"),
              helper.make_node("Cast", ["am"], ["labels"], to=TensorProto.UINT8, name="to_u8")]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", "height", "width", 3])],
        [helper.make_tensor_value_info("labels", TensorProto.UINT8, ["batch", "height", "width"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("q")
    src = tiny_served_graph(root / "fp32.onnx")
    prepared = root / "prepared.onnx"
    preprocess(src, prepared)
    rng = np.random.default_rng(1)
    batches = [rng.integers(0, 256, (1, 24, 32, 3), dtype=np.uint8) for _ in range(4)]
    return {"root": root, "src": src, "prepared": prepared, "batches": batches}


def _ops(path: Path) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]


def test_qdq_quantizes_the_convs_not_the_normalisation_and_keeps_io_types(tiny):
    out = tiny["root"] / "qdq.onnx"
    quantize(tiny["prepared"], out, tiny["batches"], Int8Settings(format="qdq", reduce_range=False))
    ops = _ops(out)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] >= 3  # one weight DQ per conv at least
    graph = onnx.load(str(out)).graph
    producers = {o: n for n in graph.node for o in n.output}
    # the (1,3,1,1) broadcast Mul/Add of the normalisation read and write plain floats
    norm_add = next(n for n in graph.node if n.name == "norm_add")
    assert producers[norm_add.input[0]].op_type == "Mul"
    x = tiny["batches"][0]
    got, ref = _run(out, x), _run(tiny["src"], x)
    assert got.dtype == np.uint8 and got.shape == ref.shape == (1, 24, 32)
    assert (got == ref).mean() > 0.8


def test_qoperator_format_gives_qlinear_convs(tiny):
    out = tiny["root"] / "qop.onnx"
    quantize(tiny["prepared"], out, tiny["batches"], Int8Settings(format="qoperator", calibration="percentile"))
    assert _ops(out)["QLinearConv"] == 3


def test_fp32_nodes_stay_float(tiny):
    out = tiny["root"] / "mixed.onnx"
    quantize(tiny["prepared"], out, tiny["batches"], Int8Settings(), fp32_nodes=["head"])
    graph = onnx.load(str(out)).graph
    head = next(n for n in graph.node if n.op_type == "Conv" and n.name == "head")
    weights = {i.name for i in graph.initializer if i.data_type == TensorProto.FLOAT}
    assert head.input[1] in weights  # a float weight, not a DequantizeLinear output
    assert set(weighted_nodes(tiny["prepared"])) == {"conv_a", "conv_b", "head"}


def test_search_keeps_the_most_sensitive_layer_in_fp32_until_the_judge_agrees(tiny):
    def fp32_convs(path: Path) -> set[str]:
        g = onnx.load(str(path)).graph
        floats = {i.name for i in g.initializer if i.data_type == TensorProto.FLOAT}
        return {n.name for n in g.node if n.op_type == "Conv" and n.input[1] in floats}

    def judge(path: Path) -> Verdict:  # scripted: only conv_b being fp32 makes it good enough
        good = "conv_b" in fp32_convs(path)
        return Verdict(agreement=0.99 if good else 0.9, drop=0.0, ok=good)

    out = tiny["root"] / "searched.onnx"
    result = quantize_within_budget(tiny["src"], out, tiny["batches"], Int8Settings(max_fp32_layers=2), judge,
                                    workdir=tiny["root"])
    assert result.fp32_layers == ["conv_b"]
    assert result.verdict["ok"] and result.quantized_layers == 2
    assert max(result.sensitivity, key=result.sensitivity.get) == "conv_b"
    assert fp32_convs(out) == {"conv_b"}


def test_search_that_never_fits_raises_with_the_fix(tiny):
    never = lambda path: Verdict(0.5, 0.2, False)  # noqa: E731
    with pytest.raises(ExportError, match="out of budget.*--int8-max-fp32-layers"):
        quantize_within_budget(tiny["src"], tiny["root"] / "never.onnx", tiny["batches"],
                               Int8Settings(max_fp32_layers=1), never, workdir=tiny["root"])


def test_settings_check_and_reduce_range_choice():
    with pytest.raises(ExportError, match="format must be one of"):
        quantize(Path("x.onnx"), Path("y.onnx"), [], Int8Settings(format="qlinear"))
    assert Int8Settings(reduce_range=True).resolved_reduce_range() is True
    assert Int8Settings().resolved_reduce_range() is (not cpu_has_vnni())
    assert Int8Settings(types="s8s8", reduce_range=False).label == "qdq-s8s8-minmax-pc-full"


@pytest.mark.slow
def test_export_int8_routes_through_the_search_and_the_gate(tmp_path):
    """`export_model(..., int8=...)`: the chosen format reaches the published graph, the gate passes."""
    import cv2
    from export_helpers import USER_MODELS

    from export import ExportSettings, export_model

    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):  # smooth images, like photos: noise would be a poor calibration set
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        cv2.imwrite(str(calib / f"{i}.png"), cv2.resize(small, (40, 30), interpolation=cv2.INTER_LINEAR))
    settings = ExportSettings(name="q", repository=str(tmp_path / "repo"), module=f"{USER_MODELS}:TinyNet",
                              num_classes=3, resize="letterbox:32x32", max_batch=2, min_size=(32, 32),
                              max_size=(64, 64), calibration=str(calib), samples=4, int8=True)
    result = export_model(settings, Int8Settings(format="qoperator"))
    assert result.contract.precision == "int8" and result.parity.passed
    assert _ops(result.version_dir / "model.onnx")["QLinearConv"] >= 1
