"""A small real convolutional ONNX model for the sliding-window tests, published like the exporter
does, and its in-process runner.

The graph (uint8 NHWC in, normalised in-graph) is conv 5x5 -> relu -> dilated conv 3x3, with zero
padding, so a pixel's output depends on its ~13 px neighbourhood and on where the tile border is:
tiling, padding and overlap averaging all show in the result. Cheap enough for 1024x2048 on 2 cores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from clients.contract import CONFIG_FILE, INPUT_NAME, LABELS_FILE, ModelContract, Resize
from clients.window import tile_batch

NUM_CLASSES = 5
WIDTH = 6


def conv_graph(task: str, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    out_ch = NUM_CLASSES if task == "segmentation" else 1
    inits = [
        numpy_helper.from_array(np.float32(1 / 255), "inv255"),
        numpy_helper.from_array(rng.normal(0, 0.3, (WIDTH, 3, 5, 5)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, (WIDTH,)).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.normal(0, 0.5, (out_ch, WIDTH, 3, 3)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.normal(0, 0.1, (out_ch,)).astype(np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("Cast", [INPUT_NAME], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["f"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Mul", ["nchw", "inv255"], ["x"]),
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[2, 2, 2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[4, 4, 4, 4], dilations=[4, 4]),
    ]
    if task == "segmentation":
        nodes.append(helper.make_node("Identity", ["c2"], ["logits"]))
        out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", NUM_CLASSES, "H", "W"])
    else:
        inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
        nodes += [helper.make_node("Softplus", ["c2"], ["sp"]),
                  helper.make_node("Squeeze", ["sp", "axis1"], ["depth"])]
        out = helper.make_tensor_value_info("depth", TensorProto.FLOAT, ["N", "H", "W"])
    image = helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["N", "H", "W", 3])
    graph = helper.make_graph(nodes, f"slide_{task}", [image], [out], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def slide_contract(name: str, task: str, output: str = "", max_batch: int = 4) -> ModelContract:
    seg = task == "segmentation"
    return ModelContract(name=name, task=task, resize=Resize("stride", stride=32),
                         output_kind=output or ("logits" if seg else "depth"),
                         num_classes=NUM_CLASSES if seg else 0, max_batch_size=max_batch,
                         max_size=(1024, 2048), pad_value=0)


def publish_conv(repository: Path, name: str, task: str, max_batch: int = 4) -> Path:
    contract = slide_contract(name, task, max_batch=max_batch)
    model_dir = repository / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    onnx.save_model(conv_graph(task), str(model_dir / "1" / "model.onnx"))
    (model_dir / CONFIG_FILE).write_text(contract.to_pbtxt())
    if task == "segmentation":
        (model_dir / LABELS_FILE).write_text(contract.labels_txt())
    return model_dir


class InProcess:
    """onnxruntime on the same graph: `run_logits` is mmseg's encode_decode for a crop (padded to
    the model's stride as the served path pads it, then cropped back); `infer` takes a batch."""

    def __init__(self, task: str, contract: ModelContract) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.session = ort.InferenceSession(conv_graph(task).SerializeToString(), opts,
                                            providers=["CPUExecutionProvider"])
        self.task, self.contract = task, contract
        self.name = "logits" if task == "segmentation" else "depth"

    def infer(self, batch: np.ndarray, description: str = "") -> dict[str, np.ndarray]:
        return {self.name: self.session.run([self.name], {INPUT_NAME: batch})[0]}

    def run_logits(self, crop: np.ndarray) -> np.ndarray:
        out = self.infer(tile_batch(crop, self.contract))[self.name]
        if self.task == "depth":
            out = out[:, None]
        return out[:, :, :crop.shape[1], :crop.shape[2]]
