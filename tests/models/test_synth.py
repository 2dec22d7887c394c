"""The synthetic dataset: byte-identical reruns, value ranges, and a scene that is consistent."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from models.synth import CLASS_NAMES, DEPTH_MAX, DEPTH_MIN, DEPTH_SCALE, IGNORE_INDEX, KINDS, synthesize


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _read(root: Path, kind: str, split: str, sample_id: str) -> np.ndarray:
    return cv2.imread(str(root / kind / split / f"{sample_id}.png"), cv2.IMREAD_UNCHANGED)


def test_same_seed_gives_byte_identical_trees(tmp_path, tiny_data):
    # tiny_data rendered with one worker per core; this rerun renders serially.
    again = synthesize(tmp_path / "again", n_train=8, n_val=3, size=32, seed=0, workers=1)
    first, second = _tree(tiny_data), _tree(again)
    assert len(first) == 4 * (8 + 3) + 1  # four PNG kinds per image, plus meta.json
    assert first == second


def test_other_seed_differs_and_n_train_does_not_change_val(tmp_path, tiny_data):
    other = _tree(synthesize(tmp_path / "other", n_train=2, n_val=3, size=32, seed=1))
    base = _tree(tiny_data)
    assert other["images/val/00000.png"] != base["images/val/00000.png"]
    fewer = _tree(synthesize(tmp_path / "fewer", n_train=2, n_val=3, size=32, seed=0))
    assert {k: v for k, v in fewer.items() if "/val/" in k} == {k: v for k, v in base.items() if "/val/" in k}


def test_rerun_with_fewer_images_leaves_no_stale_files(tmp_path):
    root = synthesize(tmp_path / "d", n_train=3, n_val=1, size=32, seed=0)
    synthesize(root, n_train=1, n_val=1, size=32, seed=0)
    assert sorted(p.name for p in (root / "images" / "train").iterdir()) == ["00000.png"]


def test_meta(tiny_data):
    meta = json.loads((tiny_data / "meta.json").read_text())
    assert meta["class_names"] == list(CLASS_NAMES) and meta["class_names"][0] == "background"
    assert meta["num_classes"] == len(CLASS_NAMES) >= 5
    assert len(meta["palette"]) == meta["num_classes"] and all(len(c) == 3 for c in meta["palette"])
    assert meta["ignore_index"] == 255 and meta["depth_scale"] == DEPTH_SCALE == 1000
    assert meta["depth_min"] == DEPTH_MIN and meta["depth_max"] == DEPTH_MAX


@pytest.mark.parametrize("split", ["train", "val"])
def test_value_ranges(tiny_data, split):
    ids = sorted(p.stem for p in (tiny_data / "images" / split).glob("*.png"))
    seen_classes, soft_alpha = set(), 0
    for sample_id in ids:
        image, labels, depth, alpha = (_read(tiny_data, k, split, sample_id) for k in KINDS)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert labels.dtype == np.uint8 and labels.shape == image.shape[:2]
        assert depth.dtype == np.uint16 and depth.shape == image.shape[:2]
        assert alpha.dtype == np.uint8 and alpha.shape == image.shape[:2]
        values = set(np.unique(labels).tolist())
        assert values <= set(range(len(CLASS_NAMES))) | {IGNORE_INDEX}
        seen_classes |= values
        valid = depth > 0
        assert depth[valid].min() >= DEPTH_MIN * DEPTH_SCALE and depth[valid].max() <= DEPTH_MAX * DEPTH_SCALE
        # Zeros mark invalid depth only: mixed edge pixels (label 255) plus at most a small dropout hole.
        assert not valid[labels == IGNORE_INDEX].any()
        assert (~valid & (labels != IGNORE_INDEX)).mean() < 0.05
        soft_alpha += int(((alpha > 0) & (alpha < 255)).sum())
        # The matte covers the objects: labelled objects are (almost all) opaque.
        obj = (labels > 0) & (labels != IGNORE_INDEX)
        if obj.any():
            assert (alpha[obj] >= 128).mean() > 0.95
        assert (alpha[labels == 0] < 128).mean() > 0.95
    assert IGNORE_INDEX in seen_classes and len(seen_classes - {0, IGNORE_INDEX}) >= 2
    assert soft_alpha > 0  # soft matte edges


def test_image_sizes(tiny_data):
    train = [_read(tiny_data, "images", "train", p.stem).shape[:2] for p in (tiny_data / "images/train").glob("*.png")]
    val = [_read(tiny_data, "images", "val", p.stem).shape[:2] for p in (tiny_data / "images/val").glob("*.png")]
    assert set(train) == {(32, 32)}
    assert all(200 <= side <= 400 for hw in val for side in hw)
    assert len({h / w for h, w in val}) > 1  # varied aspect ratios


def test_ground_recedes_with_row_and_objects_stand_nearer(tmp_path):
    root = synthesize(tmp_path / "d", n_train=1, n_val=0, size=96, seed=3)
    labels, depth = _read(root, "labels", "train", "00000"), _read(root, "depth", "train", "00000")
    ground = (labels == 0) & (depth > 0)
    rows = [np.unique(depth[r][ground[r]]) for r in range(96)]
    # Flat ground, level camera: one depth per row (to the mm), increasing towards the top.
    per_row = [(r, v[0]) for r, v in enumerate(rows) if len(v)]
    assert all(len(rows[r]) == 1 for r, _ in per_row)
    assert all(a[1] > b[1] for a, b in zip(per_row, per_row[1:]))
    # Every object is nearer than the ground just above its top edge (it stands in front of it).
    obj = (labels > 0) & (labels != 255) & (depth > 0)
    ground_depth = dict(per_row)
    above = [(depth[r, c], ground_depth[r]) for r, c in zip(*np.nonzero(obj)) if r in ground_depth]
    assert above and np.mean([o < g for o, g in above]) > 0.95


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="need some images"):
        synthesize(tmp_path, n_train=0, n_val=0, size=32, seed=0)
    with pytest.raises(ValueError, match="--size"):
        synthesize(tmp_path, n_train=1, n_val=0, size=4, seed=0)
