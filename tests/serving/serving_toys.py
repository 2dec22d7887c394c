"""Tiny pixelport-contract ONNX models built with onnx.helper, and request helpers, for the serving tests.

They follow the served form (uint8 NHWC RGB in, normalisation in-graph, labels/confidence or depth
out at the input size) and are published like the exporter does: config.pbtxt from
`ModelContract.to_pbtxt()`, `<version>/model.onnx` renamed into place.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import tritonclient.grpc as grpcclient
from onnx import TensorProto, helper, numpy_helper

from clients.contract import CONFIG_FILE, LABELS_FILE, ONNX_FILE, ModelContract, Resize

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
# The tests send raw images of many sizes (not letterboxed to 32x32), all within this bound.
TOY_MAX_SIZE = (256, 256)


def _normalised_nchw(nodes: list, inits: list) -> str:
    """(N, H, W, 3) uint8 'image' -> (N, 3, H, W) float 'x' normalised like the contract says."""
    scale = np.array([1 / (255 * s) for s in STD], np.float32).reshape(1, 3, 1, 1)
    shift = np.array([m / s for m, s in zip(MEAN, STD)], np.float32).reshape(1, 3, 1, 1)
    inits += [numpy_helper.from_array(scale, "scale"), numpy_helper.from_array(shift, "shift")]
    nodes += [
        helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["f"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Mul", ["nchw", "scale"], ["scaled"]),
        helper.make_node("Sub", ["scaled", "shift"], ["x"]),
    ]
    return "x"


def _conv(nodes: list, inits: list, src: str, out: str, cin: int, cout: int, rng: np.random.Generator) -> None:
    # A 3x3 convolution keeps the graph spatial (and gives the server some work to batch).
    w = rng.normal(0, 0.5, (cout, cin, 3, 3)).astype(np.float32)
    b = rng.normal(0, 0.1, (cout,)).astype(np.float32)
    inits += [numpy_helper.from_array(w, f"{out}_w"), numpy_helper.from_array(b, f"{out}_b")]
    nodes.append(helper.make_node("Conv", [src, f"{out}_w", f"{out}_b"], [out], pads=[1, 1, 1, 1]))


def _model(nodes: list, inits: list, outputs: list) -> onnx.ModelProto:
    image = helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", "H", "W", 3])
    graph = helper.make_graph(nodes, "toy", [image], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime >= 1.14
    onnx.checker.check_model(model)
    return model


def segmentation_onnx(num_classes: int = 4, seed: int = 0) -> onnx.ModelProto:
    """Outputs `labels` uint8 (N, H, W) and `confidence` float (N, H, W)."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    x = _normalised_nchw(nodes, inits)
    _conv(nodes, inits, x, "hidden", 3, 8, rng)
    nodes.append(helper.make_node("Relu", ["hidden"], ["act"]))
    _conv(nodes, inits, "act", "logits", 8, num_classes, rng)
    nodes += [
        helper.make_node("ArgMax", ["logits"], ["argmax"], axis=1, keepdims=0),
        helper.make_node("Cast", ["argmax"], ["labels"], to=TensorProto.UINT8),
        helper.make_node("Softmax", ["logits"], ["prob"], axis=1),
        helper.make_node("ReduceMax", ["prob"], ["confidence"], axes=[1], keepdims=0),
    ]
    outputs = [helper.make_tensor_value_info("labels", TensorProto.UINT8, ["N", "H", "W"]),
               helper.make_tensor_value_info("confidence", TensorProto.FLOAT, ["N", "H", "W"])]
    return _model(nodes, inits, outputs)


def depth_onnx(seed: int = 1) -> onnx.ModelProto:
    """Outputs positive `depth` float (N, H, W)."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    x = _normalised_nchw(nodes, inits)
    _conv(nodes, inits, x, "hidden", 3, 4, rng)
    nodes.append(helper.make_node("Relu", ["hidden"], ["act"]))
    _conv(nodes, inits, "act", "raw", 4, 1, rng)
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
    nodes += [helper.make_node("Softplus", ["raw"], ["pos"]), helper.make_node("Squeeze", ["pos", "axis1"], ["depth"])]
    return _model(nodes, inits, [helper.make_tensor_value_info("depth", TensorProto.FLOAT, ["N", "H", "W"])])


def segmentation_contract(name: str, **overrides) -> ModelContract:
    fields = dict(name=name, task="segmentation", resize=Resize("letterbox", 32, 32), output_kind="labels+confidence",
                  num_classes=4, class_names=("bg", "a", "b", "c"), max_batch_size=8, intra_op_threads=1,
                  max_size=TOY_MAX_SIZE)
    fields.update(overrides)
    return ModelContract(**fields)


def depth_contract(name: str, **overrides) -> ModelContract:
    fields = dict(name=name, task="depth", resize=Resize("stride", stride=8), output_kind="depth",
                  depth_scale=1.0, max_batch_size=4, dynamic_batching=False, max_size=TOY_MAX_SIZE)
    fields.update(overrides)
    return ModelContract(**fields)


def publish(repository: Path, contract: ModelContract, model: onnx.ModelProto | bytes, version: int) -> Path:
    """Write config + labels, then rename a complete `<version>/` into place (never half-written)."""
    model_dir = Path(repository) / contract.name
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / CONFIG_FILE).write_text(contract.to_pbtxt(), encoding="utf-8")
    if contract.task == "segmentation":
        (model_dir / LABELS_FILE).write_text(contract.labels_txt(), encoding="utf-8")
    tmp = Path(tempfile.mkdtemp(prefix=".publish-", dir=model_dir))
    payload = model if isinstance(model, bytes) else model.SerializeToString()
    (tmp / ONNX_FILE).write_bytes(payload)
    final = model_dir / str(version)
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    return final / ONNX_FILE


# ---- request helpers ------------------------------------------------------------------------------
def image(seed: int, h: int = 40, w: int = 56, batch: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, h, w, 3), dtype=np.uint8)


def infer_input(x: np.ndarray) -> list:
    inp = grpcclient.InferInput("image", list(x.shape), "UINT8")
    inp.set_data_from_numpy(x)
    return [inp]


def reference(repository: Path, model: str, version: str, x: np.ndarray) -> dict[str, np.ndarray]:
    """In-process onnxruntime on the same ONNX file Triton serves."""
    session = ort.InferenceSession(str(repository / model / version / ONNX_FILE), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"image": x})))


def assert_matches(result, expected: dict[str, np.ndarray]) -> None:
    for name, want in expected.items():
        got = result.as_numpy(name)
        assert got.dtype == want.dtype and got.shape == want.shape, name
        if np.issubdtype(want.dtype, np.integer):
            np.testing.assert_array_equal(got, want, err_msg=name)
        else:
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-5, err_msg=name)


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and its parts (RssAnon, RssFile, RssShmem) of a process, in kB."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {line.split(":")[0]: int(line.split()[1]) for line in lines if line.startswith(("VmRSS", "Rss"))}
