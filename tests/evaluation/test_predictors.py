"""Predictors: onnxruntime on an exported model directory, PyTorch on a checkpoint, both through
the same clients.pipeline pre/post-processing, and the factory's errors."""

from __future__ import annotations

import numpy as np
import pytest

from clients.letterbox import Letterbox
from evaluation.predictors import OnnxPredictor, PredictorSettings, make_predictor
from evalkit import blocky_image, publish_toy


@pytest.fixture
def image():
    return blocky_image(np.random.default_rng(0), 24, 40)


def test_onnx_predictor_uses_highest_version_and_exact_stride_geometry(tmp_path, image):
    model_dir = publish_toy(tmp_path, "seg", "segmentation", resize="stride:16", versions=(1, 3))
    pred = OnnxPredictor(str(model_dir))
    assert pred.version == 3 and pred.contract.num_classes == 3 and pred.backend == "onnx"
    out = pred.predict(image)  # stride mode pads 24x40 to 32x48 without resizing: exact
    assert out.labels.shape == (24, 40) and out.labels.dtype == np.uint8
    np.testing.assert_array_equal(out.labels, image.argmax(axis=2))
    two = pred.predict_batch([image, image[:17, :9]])
    assert [p.labels.shape for p in two] == [(24, 40), (17, 9)]


def test_onnx_predictor_letterbox_depth_and_matting(tmp_path, image):
    depth = OnnxPredictor(str(publish_toy(tmp_path, "d", "depth", resize="stride:8"))).predict(image).depth
    np.testing.assert_allclose(depth, 0.5 + 4 * image.mean(axis=2) / 255, rtol=1e-5)
    alpha = OnnxPredictor(str(publish_toy(tmp_path, "m", "matting", resize="letterbox:48x48"))).predict(image).alpha
    assert alpha.shape == (24, 40) and 0 <= alpha.min() and alpha.max() <= 1
    # letterboxed 24x40 -> 29x48 and back: flat cells keep their value away from cell edges
    assert abs(alpha[4, 4] - image[4, 4, 0] / 255) < 0.02


def test_factory_errors_say_what_is_missing(tmp_path):
    with pytest.raises(ValueError, match="--url"):
        make_predictor(PredictorSettings("triton", model="x"))
    with pytest.raises(ValueError, match="--model-dir"):
        make_predictor(PredictorSettings("onnx"))
    with pytest.raises(ValueError, match="--checkpoint"):
        make_predictor(PredictorSettings("torch"))
    with pytest.raises(ValueError, match="known"):
        make_predictor(PredictorSettings("tensorflow"))
    with pytest.raises(FileNotFoundError, match="config.pbtxt"):
        OnnxPredictor(str(tmp_path))
    (tmp_path / "m").mkdir()
    publish_toy(tmp_path, "m", "depth")
    (tmp_path / "m" / "1" / "model.onnx").unlink()
    with pytest.raises(FileNotFoundError, match="version"):
        OnnxPredictor(str(tmp_path / "m"))


def _checkpoint(path, task="segmentation", num_classes=3, width=4):
    torch = pytest.importorskip("torch")
    from models import create_model

    torch.manual_seed(0)
    model = create_model("unet", task=task, num_classes=num_classes, width=width).eval()
    meta = {"arch": "unet", "task": task, "num_classes": num_classes if task == "segmentation" else 0,
            "class_names": ["a", "b", "c"] if task == "segmentation" else [], "mean": [0.5, 0.4, 0.3],
            "std": [0.2, 0.25, 0.3], "input_size": [32, 32], "pad_value": 114, "ignore_index": 255}
    torch.save({"model": model.state_dict(), "meta": meta, "epoch": 1}, path)  # no 'width': inferred
    return model, meta


def test_torch_predictor_computes_the_served_form(tmp_path, image):
    torch = pytest.importorskip("torch")
    from evaluation.predictors import TorchPredictor

    model, meta = _checkpoint(tmp_path / "seg.pt")
    pred = TorchPredictor(str(tmp_path / "seg.pt"))
    assert pred.contract.resize.height == 32 and pred.contract.pad_value == 114
    out = pred.predict(image)
    # The same computation written out by hand: letterbox, normalise with the checkpoint's stats.
    box = Letterbox.fit(image.shape[:2], target=(32, 32))
    x = box.apply_image(image, 114).astype(np.float32) / 255
    x = (x - np.array(meta["mean"], np.float32)) / np.array(meta["std"], np.float32)
    with torch.no_grad():
        logits = model(torch.from_numpy(x.transpose(2, 0, 1)[None].copy()))[0].numpy()
    np.testing.assert_array_equal(out.labels, box.invert_labels(logits.argmax(axis=0).astype(np.uint8)))

    depth_model, meta = _checkpoint(tmp_path / "depth.pt", task="depth")
    depth = TorchPredictor(str(tmp_path / "depth.pt"), resize="stride:16").predict(image).depth
    # Stride mode by hand: pad 24x40 to 32x48 with 114, centred (no resize), normalise, run, crop back.
    padded = np.full((32, 48, 3), 114, np.uint8)
    padded[4:28, 4:44] = image
    x = (padded.astype(np.float32) / 255 - np.array(meta["mean"], np.float32)) / np.array(meta["std"], np.float32)
    with torch.no_grad():
        out = depth_model(torch.from_numpy(x.transpose(2, 0, 1)[None].copy()))
    want = (out[0] if isinstance(out, (tuple, list)) else out)[0, 0].numpy()[4:28, 4:44]
    assert depth.shape == (24, 40) and np.ptp(want) > 0  # a real map, not a constant
    np.testing.assert_allclose(depth, want, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.onnx's legacy exporter, fine here
def test_torch_and_onnx_predictors_agree_on_the_same_weights(tmp_path, image):
    """Export the checkpoint's served form with torch.onnx and compare the two backends."""
    torch = pytest.importorskip("torch")
    from clients.contract import ModelContract, Resize

    model, meta = _checkpoint(tmp_path / "seg.pt")

    class Served(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.register_buffer("mean", torch.tensor(meta["mean"]).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(meta["std"]).view(1, 3, 1, 1))

        def forward(self, img):  # (N, H, W, 3) uint8 -> (N, H, W) uint8 labels
            x = (img.permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std
            return self.model(x).argmax(1).to(torch.uint8)

    model_dir = tmp_path / "repo" / "seg"
    (model_dir / "1").mkdir(parents=True)
    torch.onnx.export(Served().eval(), (torch.zeros(2, 32, 32, 3, dtype=torch.uint8),),
                      str(model_dir / "1" / "model.onnx"), dynamo=False, input_names=["image"],
                      output_names=["labels"], opset_version=17,
                      dynamic_axes={"image": {0: "N", 1: "H", 2: "W"}, "labels": {0: "N", 1: "H", 2: "W"}})
    contract = ModelContract(name="seg", task="segmentation", resize=Resize("letterbox", 32, 32), num_classes=3,
                             mean=tuple(meta["mean"]), std=tuple(meta["std"]), pad_value=114)
    (model_dir / "config.pbtxt").write_text(contract.to_pbtxt())
    onnx_pred = make_predictor(PredictorSettings("onnx", model_dir=str(model_dir)))
    torch_pred = make_predictor(PredictorSettings("torch", checkpoint=str(tmp_path / "seg.pt"), like=str(model_dir)))
    images = [image, blocky_image(np.random.default_rng(1), 50, 31)]
    for a, b in zip(onnx_pred.predict_batch(images), torch_pred.predict_batch(images)):
        assert (a.labels == b.labels).mean() > 0.999
