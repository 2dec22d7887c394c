"""Trainer: losses ignore what they must, the non-finite guard, exact resume, checkpoint errors."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from models import create_model
from models.checkpoint import CheckpointError, load_weights, read_checkpoint
from models.evaluate import validate_checkpoint
from models.train import TrainConfig, WarmupPoly, compute_loss, train, train_step

TINY = dict(arch="unet", epochs=2, batch_size=4, size=32, width=4, seed=0, threads=1, progress=False)


def test_cross_entropy_ignores_255():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 6, 7, requires_grad=True)
    labels = torch.randint(0, 5, (2, 6, 7))
    labels[:, :3] = 255  # half the pixels: object borders / padding
    loss = compute_loss("segmentation", logits, labels)
    keep = labels != 255
    expected = F.cross_entropy(logits.permute(0, 2, 3, 1)[keep], labels[keep])
    assert torch.allclose(loss, expected)
    assert compute_loss("segmentation", logits, torch.full_like(labels, 255)) == 0  # not NaN
    # Ignored pixels get no gradient at all.
    loss.backward()
    assert logits.grad[:, :, :3].abs().max() == 0 and logits.grad[:, :, 3:].abs().max() > 0


def test_depth_and_matting_losses_skip_invalid_pixels():
    gt = torch.full((1, 1, 4, 4), 2.0)
    gt[..., :2, :] = 0  # invalid depth
    pred = torch.full((1, 1, 4, 4), 2.0)
    assert compute_loss("depth", pred, gt).abs() < 1e-6
    pred[..., :2, :] = 50.0  # anything at invalid pixels is free
    assert compute_loss("depth", pred, gt).abs() < 1e-6
    pred[..., 3, 3] = 3.0
    assert compute_loss("depth", pred, gt) > 0
    alpha = torch.full((1, 1, 4, 4), 0.25)
    alpha[..., 0, :] = -1  # padding
    out = torch.full((1, 1, 4, 4), 0.25)
    out[..., 0, :] = 1.0
    assert compute_loss("matting", out, alpha) == 0


def test_schedule_warms_up_then_decays_to_zero():
    f = WarmupPoly(warmup=4, total=20)
    values = [f(s) for s in range(21)]
    assert values[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(values[3:], values[4:])) and values[20] == 0


def test_non_finite_batch_is_skipped_and_changes_nothing(caplog):
    torch.manual_seed(0)
    model = create_model("unet", task="segmentation", num_classes=3, width=4).train()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.randn(2, 3, 16, 16)
    images[0, 0, 0, 0] = float("nan")
    with caplog.at_level(logging.WARNING, logger="models.train"):
        assert train_step(model, images, torch.zeros(2, 16, 16, dtype=torch.long), "segmentation", opt, 1.0) is None
    assert "skipped a batch" in caplog.text
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN statistics
    # A finite batch does step.
    loss = train_step(model, images.nan_to_num(), torch.zeros(2, 16, 16, dtype=torch.long), "segmentation", opt, 1.0)
    assert loss is not None and not torch.equal(before["classifier.weight"], model.state_dict()["classifier.weight"])


@pytest.mark.parametrize("task", ["segmentation", "depth", "matting"])
def test_resume_ends_with_the_same_weights(tiny_data, tmp_path, task):
    full = train(TrainConfig(task=task, data=str(tiny_data), out=str(tmp_path / "full.pt"), **TINY))
    train(TrainConfig(task=task, data=str(tiny_data), out=str(tmp_path / "part.pt"), stop_after=1, **TINY))
    assert torch.load(tmp_path / "part.pt", weights_only=True)["epoch"] == 1
    resumed = train(TrainConfig(task=task, data=str(tiny_data), out=str(tmp_path / "part.pt"),
                                resume=str(tmp_path / "part.pt"), **TINY))
    a, b = (torch.load(tmp_path / name, weights_only=True) for name in ("full.pt", "part.pt"))
    assert a["epoch"] == b["epoch"] == 2
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["scheduler"] == b["scheduler"]
    assert full[full["metric"]] == resumed[resumed["metric"]]


def test_checkpoint_holds_what_export_needs(tiny_data, tmp_path):
    out = tmp_path / "seg.pt"
    result = train(TrainConfig(task="segmentation", data=str(tiny_data), out=str(out), **{**TINY, "epochs": 1}))
    assert result["metric"] == "mIoU" and 0 <= result["mIoU"] <= 1
    ckpt = torch.load(out, weights_only=True)  # no pickled objects anywhere
    assert {"model", "optimizer", "scheduler", "epoch", "rng", "meta"} <= set(ckpt)
    meta = ckpt["meta"]
    assert meta["arch"] == "unet" and meta["task"] == "segmentation" and meta["num_classes"] == 5
    assert len(meta["class_names"]) == len(meta["palette"]) == 5 and meta["input_size"] == [32, 32]
    assert meta["ignore_index"] == 255 and meta["depth_kind"] == "metric" and meta["width"] == 4
    for key in ("mean", "std", "pad_value", "depth_scale"):
        assert key in meta
    # validate() rebuilds the model from the meta alone and reproduces the trainer's number.
    assert validate_checkpoint(str(out), str(tiny_data))["mIoU"] == pytest.approx(result["mIoU"])


def test_wrong_arch_names_missing_and_unexpected_keys(tiny_data, tmp_path):
    out = tmp_path / "unet.pt"
    train(TrainConfig(task="segmentation", data=str(tiny_data), out=str(out), **{**TINY, "epochs": 1}))
    state, _, _ = read_checkpoint(str(out))
    with pytest.raises(CheckpointError, match=r"missing keys \(first: '.+'\).*unexpected keys \(first: '.+'\)"):
        load_weights(create_model("pspnet", task="segmentation", num_classes=5, width=4), state)
    with pytest.raises(CheckpointError, match="arch='unet'"):
        train(TrainConfig(**{**TINY, "arch": "fcn"}, task="segmentation", data=str(tiny_data),
                          out=str(tmp_path / "x.pt"), resume=str(out)))


def test_bad_config_is_rejected(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="unknown task"):
        train(TrainConfig(task="detection", data=str(tiny_data), out=str(tmp_path / "x.pt")))
    with pytest.raises(FileNotFoundError, match="python -m models synth"):
        train(TrainConfig(data=str(tmp_path / "nowhere"), out=str(tmp_path / "x.pt")))
