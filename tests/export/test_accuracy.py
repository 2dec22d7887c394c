"""Sample images and the end-to-end metric comparison the gate runs (no export needed)."""

from __future__ import annotations

import cv2
import numpy as np

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
