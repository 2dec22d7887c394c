"""Sample images and the end-to-end metric comparison the gate runs (no export needed)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from clients.contract import ModelContract, Resize
from export.accuracy import calibration_batches, compare_on_samples, load_samples
from models.synth import synthesize

CONTRACT = ModelContract(name="m", task="segmentation", resize=Resize("letterbox", 32, 32), num_classes=3)


def _labels_from_red(batch: np.ndarray) -> dict[str, np.ndarray]:
    return {"labels": (batch[..., 0] // 86).astype(np.uint8)}  # (N, H, W, 3) -> (N, H, W) in 0..2


def _shifted(batch: np.ndarray) -> dict[str, np.ndarray]:
    return {"labels": ((batch[..., 0] // 86 + 1) % 3).astype(np.uint8)}


def test_a_plain_folder_gives_images_without_targets(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8))
    samples = load_samples(str(tmp_path), "segmentation", limit=2)
    assert len(samples) == 2 and all(s.target is None for s in samples)
    assert [b.shape for b in calibration_batches(samples, CONTRACT)] == [(1, 32, 32, 3)] * 2
    same = compare_on_samples(_labels_from_red, _labels_from_red, CONTRACT, samples, ("a", "b"))
    assert same["reference"] == "a predictions" and same["change"] == 0.0 and same["b"] == 1.0
    worse = compare_on_samples(_labels_from_red, _shifted, CONTRACT, samples, ("a", "b"))
    assert worse["drop"] > 0.5


def test_a_dataset_root_gives_ground_truth(tmp_path):
    root = synthesize(tmp_path / "d", n_train=0, n_val=3, size=32, seed=0)
    samples = load_samples(str(root), "depth", limit=5)
    assert len(samples) == 3 and all(s.target is not None and s.target.shape == s.image.shape[:2] for s in samples)
    seg = load_samples(str(root), "segmentation", limit=3)
    result = compare_on_samples(_labels_from_red, _labels_from_red, CONTRACT, seg, ("pytorch", "fp32"))
    assert result["reference"] == "ground truth" and result["images"] == 3 and result["drop"] == 0.0


def _red_samples(n: int = 3) -> list:
    """Images whose labels follow from their red channel (so a runner can be perfect), with that
    ground truth at the image's own size."""
    from export.accuracy import Sample

    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        small = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
        image = cv2.resize(small, (50 + 7 * i, 40), interpolation=cv2.INTER_NEAREST)  # flat blocks
        out.append(Sample(str(i), image, (image[..., 0] // 86).astype(np.uint8)))
    return out


def test_a_worse_candidate_loses_against_ground_truth():
    samples = _red_samples()
    worse = compare_on_samples(_labels_from_red, _shifted, CONTRACT, samples, ("fp32", "int8"))
    assert worse["reference"] == "ground truth" and worse["images"] == 3
    assert worse["fp32"] > 0.8 and worse["int8"] < 0.3  # the candidate's own predictions are scored (edges blur)
    assert worse["drop"] == pytest.approx(worse["fp32"] - worse["int8"]) and worse["drop"] > 0.5
    better = compare_on_samples(_shifted, _labels_from_red, CONTRACT, samples, ("fp32", "int8"))
    assert better["drop"] < -0.5  # improvements are negative drops, never refused


def test_lower_is_better_metrics_count_a_worse_candidate_as_a_drop():
    depth = ModelContract(name="d", task="depth", resize=Resize("letterbox", 32, 32), output_kind="depth")
    samples = _red_samples()
    for s in samples:
        s.target = 1.0 + s.image[..., 1].astype(np.float32) / 64.0  # metres, from the green channel

    def exact(batch):
        return {"depth": 1.0 + batch[..., 1].astype(np.float32) / 64.0}

    def too_far(batch):
        return {"depth": 1.5 * exact(batch)["depth"]}

    worse = compare_on_samples(exact, too_far, depth, samples, ("fp32", "fp16"))
    assert worse["metric"] == "abs_rel" and worse["reference"] == "ground truth"
    assert worse["fp32"] < 0.05 and worse["fp16"] > 0.4 and worse["drop"] > 0.35
