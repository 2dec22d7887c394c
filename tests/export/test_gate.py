"""The parity gate's findings, on a hand-built ONNX graph (no export): it never crashes on the
user's model, checks output sizes at every shape, and refuses a reference that proves nothing."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from clients.contract import ModelContract, Resize
from export.hints import patch_size, resize_hint
from export.parity import Tolerance, failure_message, gate_cases, run_gate
from export.rewrites import ExactAdaptiveAvgPool2d, rewrite_modules
from export.settings import Profile

CONTRACT = ModelContract(name="d", task="depth", resize=Resize("letterbox", 48, 64), output_kind="depth")
PROFILE = Profile((32, 32), (48, 64), (160, 200), max_batch=2)
TOL = Tolerance.for_precision("fp32")


def mean_rgb_onnx(path: Path, scale: float = 1.0) -> Path:
    """uint8 (B, H, W, 3) -> depth (B, H, W) = mean over RGB x scale."""
    nodes = [helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["f", "axes"], ["m"], keepdims=0),
             helper.make_node("Mul", ["m", "scale"], ["depth"])]
    graph = helper.make_graph(
        nodes, "mean_rgb",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", "height", "width", 3])],
        [helper.make_tensor_value_info("depth", TensorProto.FLOAT, ["batch", "height", "width"])],
        [helper.make_tensor("axes", TensorProto.INT64, [1], [3]), helper.make_tensor("scale", TensorProto.FLOAT, [], [scale])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


class MeanRGB(nn.Module):
    """The same computation in PyTorch, with the failure modes a user's model can have."""

    def __init__(self, scale: float = 1.0, fails_at_width: int = 0, crop: int = 0) -> None:
        super().__init__()
        self.scale, self.fails_at_width, self.crop = scale, fails_at_width, crop

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor]:
        if image.shape[2] == self.fails_at_width:
            raise RuntimeError(f"shape '[1, 6, 6, 64]' is invalid for input of size {image.shape[2]}")
        out = image.float().mean(-1) * self.scale
        if self.crop and image.shape[1] % self.crop:  # a patch model dropping what it cannot divide
            out = out[:, : image.shape[1] // self.crop * self.crop]
        return (out,)


def test_a_matching_model_passes(tmp_path):
    report = run_gate(MeanRGB(), mean_rgb_onnx(tmp_path / "m.onnx"), CONTRACT, PROFILE, TOL)
    assert report.passed and report.degenerate is None and len(report.cases) == len(gate_cases(PROFILE))


def test_the_pytorch_model_failing_at_a_shape_is_a_finding_not_a_crash(tmp_path):
    report = run_gate(MeanRGB(fails_at_width=131), mean_rgb_onnx(tmp_path / "m.onnx"), CONTRACT, PROFILE, TOL)
    assert not report.passed
    bad = [c for c in report.cases if not c.passed]
    assert {c.hw for c in bad} == {(97, 131)}
    assert bad[0].error.startswith("the PyTorch model itself fails at 97x131: RuntimeError: shape")
    assert "at batch 1 at 97x131: the PyTorch model itself fails" in failure_message(report)


def test_the_output_size_is_checked_at_every_shape(tmp_path):
    # both sides would crop alike; only the size check can notice that 97 rows came out as 84
    report = run_gate(MeanRGB(crop=16), mean_rgb_onnx(tmp_path / "m.onnx"), CONTRACT, PROFILE, TOL)
    assert not report.passed
    errors = {c.hw: c.error for c in report.cases if not c.passed}
    assert set(errors) == {(97, 131)}  # 16 divides every other height
    assert "output 'depth' is 96x131 for a 97x131 input" in errors[(97, 131)]


@pytest.mark.parametrize("scale,what", [(1e-9, "near zero everywhere"), (0.0, "near zero everywhere")])
def test_a_degenerate_reference_fails_unless_allowed(tmp_path, scale, what):
    report = run_gate(MeanRGB(scale), mean_rgb_onnx(tmp_path / "m.onnx", scale), CONTRACT, PROFILE, TOL)
    assert report.cases_passed and what in report.degenerate and not report.passed
    assert "the PyTorch reference is degenerate" in failure_message(report)
    assert "--allow-degenerate" in failure_message(report)
    report.allow_degenerate = True
    assert report.passed


def test_a_near_constant_reference_is_degenerate(tmp_path):
    class Constant(nn.Module):
        def forward(self, image):
            return (torch.full(image.shape[:3], 3.0),)

    path = tmp_path / "c.onnx"
    mean_rgb_onnx(path, 0.0)
    report = run_gate(Constant(), path, CONTRACT, PROFILE, Tolerance(5.0, 0.0, 0.999))
    assert report.cases_passed and "near-constant" in report.degenerate


def test_a_fixed_size_graph_is_gated_at_its_size_at_batch_1_and_the_max_batch():
    assert gate_cases(Profile.fixed((48, 64), 8)) == [(1, (48, 64)), (8, (48, 64))]


def test_patch_size_is_read_off_the_patch_embedding():
    vit = nn.Sequential(nn.Conv2d(3, 8, 14, 14), nn.Flatten())
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.Conv2d(8, 8, 14, 14))
    assert patch_size(vit) == 14 and patch_size(cnn) is None
    assert "--resize stride:14" in resize_hint(14, Resize("stride", stride=32))
    assert resize_hint(14, Resize("stride", stride=28)) is None
    assert resize_hint(14, Resize("letterbox", 56, 70)) is None


class ListPooling(nn.Module):
    """Pooling layers registered as children and called from a plain list (as HF UperNet does)."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = [nn.AdaptiveAvgPool2d(2), nn.AdaptiveAvgPool2d(3)]
        for i, block in enumerate(self.blocks):
            self.add_module(str(i), block)
        self.head = nn.AdaptiveAvgPool2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(b(x).mean() for b in self.blocks) + self.head(x).mean()


def test_the_pooling_rewrite_counts_only_the_swaps_the_forward_uses(caplog):
    caplog.set_level("INFO", logger="export.rewrites")
    clone, counts = rewrite_modules(ListPooling(), probe=torch.randn(1, 3, 13, 17))
    assert counts == {"AdaptiveAvgPool2d -> exact pooling matrices": 1}
    assert isinstance(clone.head, ExactAdaptiveAvgPool2d)
    assert "rewrote 1 x AdaptiveAvgPool2d" in caplog.text
    assert "2 of the swapped AdaptiveAvgPool2d modules are not called" in caplog.text


def constant_labels_onnx(path: Path, label: int) -> Path:
    """uint8 (B, H, W, 3) -> labels (B, H, W) uint8, `label` at every pixel."""
    nodes = [helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["f", "axes"], ["m"], keepdims=0),
             helper.make_node("Mul", ["m", "zero"], ["z"]),
             helper.make_node("Add", ["z", "label"], ["l"]),
             helper.make_node("Cast", ["l"], ["labels"], to=TensorProto.UINT8)]
    graph = helper.make_graph(
        nodes, "constant_labels",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", "height", "width", 3])],
        [helper.make_tensor_value_info("labels", TensorProto.UINT8, ["batch", "height", "width"])],
        [helper.make_tensor("axes", TensorProto.INT64, [1], [3]), helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
         helper.make_tensor("label", TensorProto.FLOAT, [], [float(label)])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


class Logits(nn.Module):
    """(B, 3, H, W) -> (B, 4, H, W) logits: class 3 wins everywhere by `margin`; `vary` scales how
    much the logits follow the image (0: a constant output, as an untrained or unloaded model)."""

    def __init__(self, margin: float, vary: float) -> None:
        super().__init__()
        self.margin, self.vary = margin, vary

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = self.vary * x.mean(1, keepdim=True).repeat(1, 4, 1, 1)
        base[:, 3] += self.margin
        return base


SEG = ModelContract(name="s", task="segmentation", resize=Resize("letterbox", 48, 64), num_classes=4)


def test_one_label_everywhere_is_not_degenerate_when_the_logits_follow_the_image(tmp_path):
    # A trained segmenter may label noise with one class at every pixel; its logits still vary.
    from export.wrapper import ServedModel

    report = run_gate(ServedModel(Logits(margin=100.0, vary=1.0), SEG), constant_labels_onnx(tmp_path / "l.onnx", 3),
                      SEG, PROFILE, TOL)
    assert report.cases_passed and report.degenerate is None and report.passed


def test_constant_logits_are_degenerate_even_behind_an_argmax(tmp_path):
    from export.wrapper import ServedModel

    report = run_gate(ServedModel(Logits(margin=0.0, vary=0.0), SEG), constant_labels_onnx(tmp_path / "l.onnx", 0),
                      SEG, PROFILE, TOL)
    assert report.cases_passed and "near zero" in report.degenerate and not report.passed
