"""Every zoo architecture x task: output shape at odd sizes and batch 1 and 3, and output ranges."""

from __future__ import annotations

import pytest
import torch

from models import TASKS, create_model, list_models

NUM_CLASSES = 5


class ZooTester:
    """Base tester: one tiny subclass per architecture sets `arch`."""

    arch: str = ""

    @pytest.mark.parametrize("task", TASKS)
    @pytest.mark.parametrize("batch", [1, 3])
    def test_output_shape_at_odd_size(self, task, batch):
        torch.manual_seed(0)
        model = create_model(self.arch, task=task, num_classes=NUM_CLASSES, width=8).eval()
        out = model.predict(torch.randn(batch, 3, 97, 131))
        channels = NUM_CLASSES if task == "segmentation" else 1
        assert out.shape == (batch, channels, 97, 131)
        assert torch.isfinite(out).all()
        if task == "depth":
            assert (out > 0).all()
        if task == "matting":
            assert (out >= 0).all() and (out <= 1).all()

    def test_trains_in_train_mode_at_odd_size(self):
        model = create_model(self.arch, task="segmentation", num_classes=NUM_CLASSES, width=8).train()
        out = model(torch.randn(2, 3, 45, 61))
        out.mean().backward()
        assert out.shape == (2, NUM_CLASSES, 45, 61)
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


class TestFCN(ZooTester):
    arch = "fcn"


class TestUNet(ZooTester):
    arch = "unet"


class TestPSPNet(ZooTester):
    arch = "pspnet"


class TestUPerNet(ZooTester):
    arch = "upernet"


def test_every_registered_arch_is_tested():
    assert {c.arch for c in ZooTester.__subclasses__()} == set(list_models())


def test_unknown_arch_lists_known_ones():
    with pytest.raises(ValueError, match="known archs: fcn, pspnet, unet, upernet"):
        create_model("segformer", task="segmentation", num_classes=3)


def test_predict_explains_a_bad_shape():
    model = create_model("unet", task="depth")
    with pytest.raises(ValueError, match="permute"):
        model.predict(torch.zeros(1, 32, 32, 3))
