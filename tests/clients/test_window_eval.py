"""`python -m evaluation eval --mode slide --crop HxW --stride HxW [--flip] [--scales ...]` end to end:
a logits model whose right answer is known (logits = the RGB levels, so labels = the dominant
channel, the blocky dataset's ground truth) scores 100 % slid and flipped; onnxruntime in-process
and Triton give the same report; a labels-only model and incomplete flags are refused with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from clients.contract import CONFIG_FILE, INPUT_NAME, LABELS_FILE, ModelContract, Resize
from evaluation.__main__ import main
from evalkit import make_pixelport, publish_toy

SLIDE = ["--mode", "slide", "--crop", "16x16", "--stride", "11x11"]


def publish_rgb_logits(repository: Path, name: str = "rgb_logits") -> Path:
    """logits (N, 3, H, W) = the image's R, G, B levels: a pointwise oracle served with logits."""
    nodes = [helper.make_node("Cast", [INPUT_NAME], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Transpose", ["f"], ["logits"], perm=[0, 3, 1, 2])]
    image = helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["N", "H", "W", 3])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3, "H", "W"])
    model = helper.make_model(helper.make_graph(nodes, name, [image], [out]), opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    contract = ModelContract(name=name, task="segmentation", resize=Resize("stride", stride=8), output_kind="logits",
                             num_classes=3, class_names=("red", "green", "blue"), max_batch_size=4)
    model_dir = repository / name
    (model_dir / "1").mkdir(parents=True)
    onnx.save_model(model, str(model_dir / "1" / "model.onnx"))
    (model_dir / CONFIG_FILE).write_text(contract.to_pbtxt())
    (model_dir / LABELS_FILE).write_text(contract.labels_txt())
    return model_dir


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("slide_eval")
    repo = root / "repo"
    publish_rgb_logits(repo)
    publish_toy(repo, "seg_labels", "segmentation")
    return repo, make_pixelport(root / "data", n=6, sizes=(20, 40))


def report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def test_onnx_slide_flip_scores_the_known_answer(setup, tmp_path):
    repo, data = setup
    base = ["eval", "--backend", "onnx", "--model-dir", str(repo / "rgb_logits"), "--data", str(data), "--pictures", "0"]
    assert main(base + SLIDE + ["--flip", "--out", str(tmp_path / "flip")]) == 0
    got = report(tmp_path / "flip")
    assert got["metrics"]["mIoU"] == pytest.approx(1.0)
    assert main(base + SLIDE + ["--scales", "0.5,1.0", "--out", str(tmp_path / "ms")]) == 0
    assert 0.5 < report(tmp_path / "ms")["metrics"]["mIoU"] < 1.0  # half scale blurs the cell edges


@pytest.mark.integration
def test_served_slide_eval_equals_in_process(setup, tmp_path, own_server):
    repo, data = setup
    server = own_server(repo)
    args = ["--data", str(data), "--pictures", "0", *SLIDE, "--flip", "--scales", "0.75,1.0"]
    assert main(["eval", "--backend", "triton", "--url", server.grpc_url, "--model", "rgb_logits", *args,
                 "--out", str(tmp_path / "triton")]) == 0
    assert main(["eval", "--backend", "onnx", "--model-dir", str(repo / "rgb_logits"), *args,
                 "--out", str(tmp_path / "onnx")]) == 0
    served, local = report(tmp_path / "triton"), report(tmp_path / "onnx")
    assert served["confusion_matrix"] == local["confusion_matrix"]
    assert np.sum(served["confusion_matrix"]) > 0


def test_slide_flags_are_checked(setup, tmp_path, capsys):
    repo, data = setup
    base = ["eval", "--backend", "onnx", "--data", str(data), "--out", str(tmp_path / "o")]
    assert main(base + ["--model-dir", str(repo / "seg_labels"), *SLIDE]) == 2
    assert "--output logits" in capsys.readouterr().err
    assert main(base + ["--model-dir", str(repo / "rgb_logits"), "--mode", "slide", "--crop", "16x16"]) == 2
    assert "--stride HxW" in capsys.readouterr().err
    assert main(base + ["--model-dir", str(repo / "rgb_logits"), "--crop", "16x16", "--stride", "8x8"]) == 2
    assert "need --mode slide" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(base + ["--model-dir", str(repo / "rgb_logits"), "--mode", "slide", "--crop", "wide"])
    assert exc.value.code == 2 and "512x1024" in capsys.readouterr().err
