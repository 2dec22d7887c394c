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


# The official table, written out independently of clients.datasets (cityscapesscripts labels.py):
# (label id, train id) for the 19 evaluated classes; every other id 0..33 is ignored (255).
OFFICIAL_TRAIN_IDS = [(7, 0), (8, 1), (11, 2), (12, 3), (13, 4), (17, 5), (19, 6), (20, 7), (21, 8), (22, 9),
                      (23, 10), (24, 11), (25, 12), (26, 13), (27, 14), (28, 15), (31, 16), (32, 17), (33, 18)]


def test_cityscapes_label_ids_only_are_mapped_to_train_ids(tmp_path):
    root = tmp_path / "cs"
    raw = np.arange(34, dtype=np.uint8).reshape(2, 17)  # every label id once
    write_png(root / "leftImg8bit" / "val" / "lindau" / "lindau_000000_000019_leftImg8bit.png", rgb(2, 17))
    write_png(root / "gtFine" / "val" / "lindau" / "lindau_000000_000019_gtFine_labelIds.png", raw)
    write_png(root / "gtFine" / "val" / "lindau" / "lindau_000000_000019_gtFine_color.png", rgb(2, 17))
    ds = open_dataset(str(root), "val")
    labels = ds.read_target(ds.samples[0], "labels")
    expected = np.full(34, 255)
    for label_id, train_id in OFFICIAL_TRAIN_IDS:
        expected[label_id] = train_id
    np.testing.assert_array_equal(labels.ravel(), expected)
    # Where the train-id file exists, it wins and is read as is.
    write_png(root / "gtFine" / "val" / "lindau" / "lindau_000000_000019_gtFine_labelTrainIds.png",
              np.full((2, 17), 3, np.uint8))
    ds = open_dataset(str(root), "val")
    assert ds.read_target(ds.samples[0], "labels").max() == 3


def test_built_in_class_names():
    from clients.datasets import ADE20K_CLASSES, CITYSCAPES_CLASSES, VOC_CLASSES

    assert len(ADE20K_CLASSES) == len(set(ADE20K_CLASSES)) == 150
    assert (ADE20K_CLASSES[0], ADE20K_CLASSES[12], ADE20K_CLASSES[-1]) == ("wall", "person", "flag")
    assert len(CITYSCAPES_CLASSES) == 19 and len(VOC_CLASSES) == 21


def _matte(h=6, w=8):
    alpha = np.zeros((h, w), np.uint8)
    alpha[:, w // 2:] = 255
    alpha[:, w // 2 - 1] = 100
    trimap = np.where(alpha == 255, 255, 0).astype(np.uint8)
    trimap[:, w // 2 - 2: w // 2 + 1] = 128
    return alpha, trimap


def test_composition_1k_layout_pairs_composites_with_their_foregrounds_alpha_and_trimap(tmp_path):
    root = tmp_path / "Composition-1k-testset"
    alpha, trimap = _matte()
    for fg in ("boy-1518482_1920", "dandelion-1335575_1920"):
        write_png(root / "alpha_copy" / f"{fg}.png", alpha)
        write_png(root / "trimaps" / f"{fg}.png", trimap)
        for k in range(2):
            write_png(root / "merged" / f"{fg}_{k}.png", rgb())
    ds = open_dataset(str(root), "test")
    assert ds.layout == "comp1k" and ds.kinds == ("alpha",) and len(ds.samples) == 4
    s = ds.samples[1]
    assert s.id == "boy-1518482_1920_1" and s.targets["alpha"].endswith("alpha_copy/boy-1518482_1920.png")
    np.testing.assert_array_equal(ds.read_target(s, "trimap"), trimap)
    np.testing.assert_array_equal(ds.read_target(s, "alpha"), alpha)


def test_aim_and_p3m_layouts_with_trimap_folders(tmp_path):
    alpha, trimap = _matte()
    for root, image_dir in ((tmp_path / "AIM-500", "original"), (tmp_path / "P3M-500-P", "blurred_image")):
        write_png(root / image_dir / "p_0a1b.jpg", rgb())
        write_png(root / "mask" / "p_0a1b.png", alpha)
        write_png(root / "trimap" / "p_0a1b.png", trimap)
        ds = open_dataset(str(root), "val")
        assert ds.layout == "aim" and [x.id for x in ds.samples] == ["p_0a1b"]
        np.testing.assert_array_equal(ds.read_target(ds.samples[0], "trimap"), trimap)
    bad = trimap.copy()
    bad[0, 0] = 127
    write_png(tmp_path / "P3M-500-P" / "trimap" / "p_0a1b.png", bad)
    ds = open_dataset(str(tmp_path / "P3M-500-P"), "val")
    with pytest.raises(SampleError, match=r"holds values \[127\]"):
        ds.read_target(ds.samples[0], "trimap")
    (tmp_path / "P3M-500-P" / "trimap" / "p_0a1b.png").unlink()
    with pytest.raises(SampleError, match="missing trimap file"):
        ds.read_target(ds.samples[0], "trimap")


def test_cityscapes_without_any_label_file_says_where_it_looked(tmp_path):
    root = tmp_path / "cs"
    write_png(root / "leftImg8bit" / "val" / "ulm" / "ulm_000000_000019_leftImg8bit.png", rgb())
    (root / "gtFine" / "val").mkdir(parents=True)
    ds = open_dataset(str(root), "val")
    with pytest.raises(SampleError, match=r"_gtFine_labelTrainIds\.png \(nor its \*_gtFine_labelIds\.png"):
        ds.read_target(ds.samples[0], "labels")
