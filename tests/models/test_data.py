"""Augmentation and letterbox: geometry, pad values per target, and determinism per (seed, epoch)."""

from __future__ import annotations

import numpy as np
import torch

from models.data import (IGNORE_INDEX, INVALID_ALPHA, PAD_VALUE, TARGETS, RandomCrop, RandomHFlip, RandomLetterbox,
                         RandomScale, SynthDataset)


def _sample(h: int = 20, w: int = 30):
    image = np.full((h, w, 3), 200, np.uint8)
    labels = np.full((h, w), 3, np.uint8)
    return image, labels


def test_crop_pads_image_with_pad_value_and_labels_with_ignore():
    image, labels = _sample()
    img, lab = RandomCrop(TARGETS["segmentation"], 48)(image, labels, np.random.default_rng(0))
    assert img.shape == (48, 48, 3) and lab.shape == (48, 48)
    pad = lab == IGNORE_INDEX
    assert pad.sum() == 48 * 48 - 20 * 30  # every padded pixel, and nothing else, is ignore
    assert (img[pad] == PAD_VALUE).all() and (img[~pad] == 200).all() and (lab[~pad] == 3).all()


def test_depth_and_alpha_pad_as_invalid():
    image, _ = _sample()
    depth = np.full((20, 30), 4.0, np.float32)
    _, d = RandomCrop(TARGETS["depth"], 40)(image, depth, np.random.default_rng(0))
    assert set(np.unique(d).tolist()) == {0.0, 4.0}
    _, a = RandomCrop(TARGETS["matting"], 40)(image, depth * 0 + 0.5, np.random.default_rng(0))
    assert set(np.unique(a).tolist()) == {INVALID_ALPHA, 0.5}


def test_scale_keeps_label_ids_and_divides_depth_by_zoom():
    rng = np.random.default_rng(1)
    image, labels = _sample()
    labels[:, :10] = 1
    _, lab = RandomScale(TARGETS["segmentation"], 1.7, 1.7)(image, labels, rng)
    assert lab.shape == (34, 51) and set(np.unique(lab).tolist()) == {1, 3}  # nearest: no blended ids
    _, d = RandomScale(TARGETS["depth"], 2.0, 2.0)(image, np.full((20, 30), 4.0, np.float32), rng)
    assert np.allclose(d, 2.0)  # twice as big on screen = twice as near


def test_letterbox_bars_are_symmetric_pad_and_ignore():
    image, labels = _sample(40, 40)
    for seed in range(10):
        img, lab = RandomLetterbox(TARGETS["segmentation"], p=1.0, min_fraction=0.5)(image, labels,
                                                                                   np.random.default_rng(seed))
        bars = lab == IGNORE_INDEX
        assert (img[bars] == PAD_VALUE).all() and (img[~bars] == 200).all() and (lab[~bars] == 3).all()
        assert 0 < bars.mean() <= 0.5 + 1 / 40 or not bars.any()
        rows, cols = np.nonzero(~bars)
        # Centred as the clients' letterbox centres: bars differ by at most one pixel.
        assert abs(rows.min() - (39 - rows.max())) <= 1 and abs(cols.min() - (39 - cols.max())) <= 1
        assert (~bars[rows.min():rows.max() + 1, cols.min():cols.max() + 1]).all()
    assert (labels == 3).all()  # the input is not modified in place


def test_flip():
    image, labels = _sample()
    labels[:, 0] = 1
    _, lab = RandomHFlip(p=1.0)(image, labels, np.random.default_rng(0))
    assert (lab[:, -1] == 1).all() and (lab[:, 0] == 3).all()


def test_dataset_samples_replay_per_seed_and_epoch(tiny_data):
    ds = SynthDataset.for_training(tiny_data, "segmentation", 32, (0.5, 1.5), seed=0)
    ds.set_epoch(3)
    a = ds[2]
    ds.set_epoch(4)
    b = ds[2]
    ds.set_epoch(3)
    again = ds[2]
    assert torch.equal(a[0], again[0]) and torch.equal(a[1], again[1])
    assert not torch.equal(a[0], b[0])
    assert a[0].shape == (3, 32, 32) and a[0].dtype == torch.float32
    assert a[1].shape == (32, 32) and a[1].dtype == torch.int64


def test_validation_set_is_raw(tiny_data):
    ds = SynthDataset.for_validation(tiny_data, "depth")
    assert len(ds) == 3 and ds.transforms == []
    h, w = ds.images[0].shape[:2]
    assert ds.targets[0].shape == (h, w) and ds.targets[0].dtype == np.float32
    assert (ds.targets[0] == 0).any() and (ds.targets[0] > 0.4).all(where=ds.targets[0] > 0)  # metres, 0 invalid
