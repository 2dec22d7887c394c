"""Test helpers for the evaluation room: tiny real ONNX models with known outputs, published as
Triton model directories, and tiny datasets in each supported layout.

The models are genuine onnx graphs run by onnxruntime (no mocks): segmentation labels = the
dominant RGB channel, depth = 0.5 + 4 * mean(RGB)/255 metres, alpha = R/255. The datasets hold
blocky images whose ground truth follows the same rules, so a correct pipeline scores ~perfectly.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper

from clients.contract import CONFIG_FILE, LABELS_FILE, ModelContract, Resize

NUM_CLASSES = 3


def _graph(task: str) -> onnx.ModelProto:
    nodes = [helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT)]  # (N, H, W, 3)
    if task == "segmentation":
        nodes += [helper.make_node("ArgMax", ["f"], ["idx"], axis=3, keepdims=0),
                  helper.make_node("Cast", ["idx"], ["labels"], to=TensorProto.UINT8)]
        out = helper.make_tensor_value_info("labels", TensorProto.UINT8, ["N", "H", "W"])
    elif task == "depth":
        nodes += [helper.make_node("ReduceMean", ["f"], ["m"], axes=[3], keepdims=0),
                  helper.make_node("Mul", ["m", "k"], ["s"]),
                  helper.make_node("Add", ["s", "b"], ["depth"])]
        out = helper.make_tensor_value_info("depth", TensorProto.FLOAT, ["N", "H", "W"])
    else:
        nodes += [helper.make_node("Gather", ["f", "zero"], ["r"], axis=3),
                  helper.make_node("Mul", ["r", "inv255"], ["alpha"])]
        out = helper.make_tensor_value_info("alpha", TensorProto.FLOAT, ["N", "H", "W"])
    inits = [helper.make_tensor("k", TensorProto.FLOAT, [], [4.0 / 255]),
             helper.make_tensor("b", TensorProto.FLOAT, [], [0.5]),
             helper.make_tensor("zero", TensorProto.INT64, [], [0]),
             helper.make_tensor("inv255", TensorProto.FLOAT, [], [1.0 / 255])]
    used = {i for n in nodes for i in n.input}
    image = helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", "H", "W", 3])
    graph = helper.make_graph(nodes, task, [image], [out], [t for t in inits if t.name in used])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def publish_toy(repository: Path, name: str, task: str, resize: str = "letterbox:48x48",
                versions: tuple[int, ...] = (1,)) -> Path:
    """Write <repository>/<name>/config.pbtxt and <version>/model.onnx like the exporter does."""
    kwargs = dict(num_classes=NUM_CLASSES, class_names=("red", "green", "blue"),
                  palette=((255, 0, 0), (0, 255, 0), (0, 0, 255))) if task == "segmentation" else {}
    output = {"segmentation": "labels", "depth": "depth", "matting": "alpha"}[task]
    contract = ModelContract(name=name, task=task, resize=Resize.parse(resize), output_kind=output,
                             max_batch_size=4, **kwargs)
    model_dir = repository / name
    for v in versions:
        (model_dir / str(v)).mkdir(parents=True, exist_ok=True)
        onnx.save_model(_graph(task), str(model_dir / str(v) / "model.onnx"))
    (model_dir / CONFIG_FILE).write_text(contract.to_pbtxt())
    if task == "segmentation":
        (model_dir / LABELS_FILE).write_text(contract.labels_txt())
    return model_dir


def blocky_image(rng: np.random.Generator, h: int, w: int, cell: int = 8) -> np.ndarray:
    """RGB uint8 made of flat cells, each with one clearly dominant channel."""
    gh, gw = -(-h // cell), -(-w // cell)
    dominant = rng.integers(0, 3, (gh, gw))
    cells = rng.integers(0, 90, (gh, gw, 3))
    cells[np.arange(gh)[:, None], np.arange(gw)[None, :], dominant] = rng.integers(160, 256, (gh, gw))
    big = np.repeat(np.repeat(cells, cell, axis=0), cell, axis=1)[:h, :w]
    return big.astype(np.uint8)


def truths(image: np.ndarray) -> dict[str, np.ndarray]:
    f = image.astype(np.float64)
    return {"labels": image.argmax(axis=2).astype(np.uint8),
            "depth": np.round((0.5 + 4 * f.mean(axis=2) / 255) * 1000).astype(np.uint16),
            "alpha": image[..., 0].copy()}


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), array)


def make_pixelport(root: Path, n: int = 6, split: str = "val", seed: int = 0, sizes=(24, 40)) -> Path:
    """A pixelport-layout dataset (images/labels/depth/alpha + meta.json) of blocky images."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        h, w = (int(v) for v in rng.integers(sizes[0], sizes[1] + 1, 2))
        image = blocky_image(rng, h, w)
        sid = f"{i:04d}"
        write_png(root / "images" / split / f"{sid}.png", image)
        for kind, arr in truths(image).items():
            write_png(root / kind / split / f"{sid}.png", arr)
    meta = {"class_names": ["red", "green", "blue"], "num_classes": NUM_CLASSES, "ignore_index": 255,
            "depth_scale": 1000, "depth_min": 0.5, "depth_max": 4.6,
            "palette": [[255, 0, 0], [0, 255, 0], [0, 0, 255]]}
    (root / "meta.json").write_text(json.dumps(meta))
    return root


class FakePredictor:
    """An in-process predictor whose answer is a function of the image (an oracle, or an oracle with a
    known error), so a dataset-convention test knows the right score exactly. No resampling."""

    backend = "fake"

    def __init__(self, task: str, fn, num_classes: int = 0, depth_kind: str = "metric", name: str = "oracle",
                 weights: str = "w0") -> None:
        from clients.contract import ModelContract, Resize

        output = {"segmentation": "labels", "depth": "depth", "matting": "alpha"}[task]
        self.contract = ModelContract(name=name, task=task, resize=Resize.parse("stride:1"), output_kind=output,
                                      num_classes=num_classes, depth_kind=depth_kind)
        self.fn, self.name, self.source, self.weights = fn, name, f"fake:{name}", weights

    def fingerprint(self) -> dict:
        return {"name": self.name, "weights_sha256": self.weights}

    def predict_batch(self, images):
        from clients.prediction import Prediction

        field = {"segmentation": "labels", "depth": "depth", "matting": "alpha"}[self.contract.task]
        return [Prediction(self.contract.task, **{field: self.fn(img)}) for img in images]

    def close(self) -> None:
        pass
