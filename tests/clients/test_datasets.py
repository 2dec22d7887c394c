"""Dataset readers: a tiny fake tree per layout, detection, pairing, target reading and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clients.contract import default_palette
from clients.datasets import LAYOUTS, DatasetOptions, SampleError, detect_layout, open_dataset
from evalkit import make_pixelport, write_png


def rgb(h=6, w=8, value=100):
    return np.full((h, w, 3), value, np.uint8)


def test_pixelport_layout_reads_all_three_targets(tmp_path):
    root = make_pixelport(tmp_path / "ds", n=3)
    ds = open_dataset(str(root), "val")
    assert ds.layout == "pixelport" and [s.id for s in ds.samples] == ["0000", "0001", "0002"]
    assert ds.num_classes == 3 and ds.depth_range == (0.5, 4.6) and ds.kinds == ("labels", "depth", "alpha")
    s = ds.samples[0]
    labels, depth, alpha = (ds.read_target(s, k) for k in ("labels", "depth", "alpha"))
    image = np.asarray(Image.open(s.image))
    assert labels.shape == depth.shape == alpha.shape == image.shape[:2]
    np.testing.assert_array_equal(labels, image.argmax(axis=2))
    assert depth.dtype == np.float64 and 0.5 <= depth.min() and depth.max() <= 4.5  # mm / 1000
    assert alpha.dtype == np.uint8


def test_mmseg_layout_with_suffixes(tmp_path):
    root = tmp_path / "mm"
    for sid in ("a", "b"):
        write_png(root / "img_dir" / "val" / f"{sid}_img.png", rgb())
        write_png(root / "ann_dir" / "val" / f"{sid}_seg.png", np.full((6, 8), 2, np.uint8))
    ds = open_dataset(str(root), "val", options=DatasetOptions(img_suffix="_img.png", seg_suffix="_seg.png"))
    assert ds.layout == "mmseg" and [s.id for s in ds.samples] == ["a", "b"]
    assert ds.read_target(ds.samples[1], "labels").max() == 2
    plain = open_dataset(str(root), "val")  # no suffix: any image; the label keeps the full stem
    assert plain.samples[0].targets["labels"].endswith("a_img.png")
    with pytest.raises(SampleError, match="missing labels file"):
        plain.read_target(plain.samples[0], "labels")


def test_cityscapes_layout(tmp_path):
    root = tmp_path / "cs"
    write_png(root / "leftImg8bit" / "val" / "frankfurt" / "frankfurt_000000_000294_leftImg8bit.png", rgb())
    write_png(root / "gtFine" / "val" / "frankfurt" / "frankfurt_000000_000294_gtFine_labelTrainIds.png",
              np.full((6, 8), 18, np.uint8))
    ds = open_dataset(str(root), "val")
    assert ds.layout == "cityscapes" and ds.num_classes == 19 and ds.class_names[-1] == "bicycle"
    assert ds.samples[0].id == "frankfurt/frankfurt_000000_000294"
    assert ds.read_target(ds.samples[0], "labels").max() == 18


def test_ade20k_layout_reduces_zero_label(tmp_path):
    root = tmp_path / "ade" / "ADEChallengeData2016"
    write_png(root / "images" / "validation" / "ADE_val_00000001.jpg", rgb())
    write_png(root / "annotations" / "validation" / "ADE_val_00000001.png", np.zeros((6, 8), np.uint8))
    ds = open_dataset(str(tmp_path / "ade"), "val")
    assert ds.layout == "ade20k" and ds.reduce_zero_label and ds.num_classes == 150
    off = open_dataset(str(tmp_path / "ade"), "val", options=DatasetOptions(reduce_zero_label=False))
    assert not off.reduce_zero_label


def test_voc_layout_reads_palette_indices_and_rgb_labels(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2012"
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000033\n2007_000042\n")
    labels = np.array([[0, 15, 255], [1, 15, 0]], np.uint8)
    flat_palette = [v for c in default_palette(256) for v in c]
    for sid in ("2007_000033", "2007_000042"):
        write_png(root / "JPEGImages" / f"{sid}.jpg", rgb(2, 3))
    pimg = Image.fromarray(labels, mode="P")
    pimg.putpalette(flat_palette)
    (root / "SegmentationClass").mkdir(parents=True)
    pimg.save(root / "SegmentationClass" / "2007_000033.png")
    pimg.convert("RGB").save(root / "SegmentationClass" / "2007_000042.png")  # someone re-saved it as RGB
    ds = open_dataset(str(tmp_path), "val")
    assert ds.layout == "voc" and ds.num_classes == 21
    for s in ds.samples:
        np.testing.assert_array_equal(ds.read_target(s, "labels"), labels)


def test_nyu_depth_pngs_with_scale(tmp_path):
    root = tmp_path / "nyu"
    write_png(root / "test" / "bathroom" / "rgb_00045.jpg", rgb())
    write_png(root / "test" / "bathroom" / "sync_depth_00045.png", np.full((6, 8), 2500, np.uint16))
    ds = open_dataset(str(root), "test")
    assert ds.layout == "nyu" and ds.kinds == ("depth",) and ds.samples[0].id == "bathroom/00045"
    assert ds.read_target(ds.samples[0], "depth")[0, 0] == pytest.approx(2.5)
    kitti_like = open_dataset(str(root), "test", options=DatasetOptions(depth_scale=256.0))
    assert kitti_like.read_target(kitti_like.samples[0], "depth")[0, 0] == pytest.approx(2500 / 256)


def test_unknown_layout_lists_the_known_ones(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(ValueError) as err:
        detect_layout(str(tmp_path))
    for name in LAYOUTS:
        assert name in str(err.value)
    with pytest.raises(ValueError, match="known layouts"):
        open_dataset(str(tmp_path), "val", layout="kitti")
    with pytest.raises(FileNotFoundError, match="--split"):
        open_dataset(str(make_pixelport(tmp_path / "p", n=1)), "nosuchsplit")


def test_bad_targets_are_sample_errors(tmp_path):
    root = make_pixelport(tmp_path / "ds", n=2)
    ds = open_dataset(str(root), "val")
    Path(ds.samples[0].targets["labels"]).write_bytes(b"not a png")
    Path(ds.samples[1].targets["depth"]).unlink()
    with pytest.raises(SampleError, match="cannot read label"):
        ds.read_target(ds.samples[0], "labels")
    with pytest.raises(SampleError, match="missing depth file"):
        ds.read_target(ds.samples[1], "depth")
    write_png(Path(ds.samples[1].targets["labels"]), rgb())  # a colour label outside the VOC layout
    with pytest.raises(SampleError, match="single-channel"):
        ds.read_target(ds.samples[1], "labels")
