"""Datasets scored as their owners define them: fake datasets in the real on-disk layouts, and
oracle predictors (or ones with a known error), so each test knows the right answer exactly."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from clients.contract import default_palette
from clients.images import load_image
from evaluation.evaluate import EvalSettings, check_report, evaluate
from evaluation.report import render_markdown, write_report
from evalkit import FakePredictor, make_pixelport, write_png

# cityscapesscripts' labels.py, written out here independently of clients.datasets.
LABEL_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                  26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def blocks(rng, h, w, high, cell=4):
    """(h, w) ids in [0, high) in flat cells."""
    grid = rng.integers(0, high, (-(-h // cell), -(-w // cell)))
    return np.repeat(np.repeat(grid, cell, 0), cell, 1)[:h, :w]


def encode(ids: np.ndarray) -> np.ndarray:
    """An RGB image whose red channel carries the answer (the oracle reads it back)."""
    img = np.zeros((*ids.shape, 3), np.uint8)
    img[..., 0] = ids
    img[..., 1] = 40
    return img


def test_cityscapes_label_ids_only_scores_100_percent_with_an_oracle(tmp_path):
    root = tmp_path / "cityscapes"
    rng = np.random.default_rng(0)
    for i in range(3):
        raw = blocks(rng, 32, 64, 34).astype(np.uint8)
        train = np.vectorize(lambda v: LABEL_TO_TRAIN.get(v, 255))(raw).astype(np.uint8)
        stem = f"frankfurt_000000_{i:06d}"
        write_png(root / "leftImg8bit" / "val" / "frankfurt" / f"{stem}_leftImg8bit.png", encode(train))
        write_png(root / "gtFine" / "val" / "frankfurt" / f"{stem}_gtFine_labelIds.png", raw)  # a stock download
    oracle = FakePredictor("segmentation", lambda img: np.minimum(img[..., 0], 18), num_classes=19)
    report = evaluate(oracle, EvalSettings(data=str(root)))
    assert report["num_evaluated"] == 3 and report["num_failed"] == 0
    assert report["metrics"]["mIoU"] == 1.0 and report["metrics"]["aAcc"] == 1.0
    assert report["unknown_ids"] == {} and check_report(report) == []
    assert [r["class"] for r in report["per_class"]][:3] == ["road", "sidewalk", "building"]
    assert "_gtFine_labelIds.png mapped to train ids" in report["dataset"]["label_ids"]
    assert "Labels: raw ids from *_gtFine_labelIds.png" in render_markdown(report)


class Lookup:
    """An oracle that knows each image's answer: keyed by the decoded image (as the harness loads it),
    so lossy JPEGs in a layout that requires them cannot blur the answer."""

    def __init__(self) -> None:
        self.answers: dict[str, np.ndarray] = {}

    def add(self, image_path, answer: np.ndarray) -> None:
        self.answers[self.key(load_image(str(image_path)))] = answer

    @staticmethod
    def key(image: np.ndarray) -> str:
        return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.answers[self.key(image)]


def test_ade20k_reduce_zero_label_is_applied_to_the_values(tmp_path):
    base = tmp_path / "ade" / "ADEChallengeData2016"
    rng = np.random.default_rng(1)
    oracle, labelled = Lookup(), 0
    for i in range(2):
        ann = blocks(rng, 24, 40, 151).astype(np.uint8)  # 0 = "other", 1..150 the classes
        ann[:4] = 0
        labelled += int((ann > 0).sum())
        image = base / "images" / "validation" / f"ADE_val_{i:08d}.jpg"
        write_png(image, rng.integers(0, 256, (24, 40, 3), dtype=np.uint8))
        write_png(base / "annotations" / "validation" / f"ADE_val_{i:08d}.png", ann)
        # A model trained as mmseg trains ADE: class k is annotation k + 1; "other" is never predicted.
        oracle.add(image, np.maximum(ann.astype(np.int64) - 1, 0))
    report = evaluate(FakePredictor("segmentation", oracle, num_classes=150), EvalSettings(data=str(tmp_path / "ade")))
    # Without reduce_zero_label every pixel would be one class off (aAcc ~0) and id 150 unknown.
    assert report["metrics"]["aAcc"] == 1.0 and report["metrics"]["mIoU"] == 1.0
    assert np.asarray(report["confusion_matrix"]).sum() == labelled  # "other" (0) is ignored, the rest counted
    assert report["unknown_ids"] == {} and check_report(report) == []
    assert report["per_class"][0]["class"] == "wall" and report["metric_settings"]["reduce_zero_label"]


def test_voc_palette_labels_score_100_percent_with_an_oracle(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2012"
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "SegmentationClass").mkdir(parents=True)
    ids = ["2007_000032", "2007_000039"]
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids) + "\n")
    rng = np.random.default_rng(2)
    flat = [v for c in default_palette(256) for v in c]
    oracle = Lookup()
    for sid in ids:
        labels = blocks(rng, 20, 30, 21).astype(np.uint8)
        labels[:, :2] = 255  # VOC's object borders are 255 (ignored)
        write_png(root / "JPEGImages" / f"{sid}.jpg", rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
        img = Image.fromarray(labels, mode="P")
        img.putpalette(flat)
        img.save(root / "SegmentationClass" / f"{sid}.png")
        oracle.add(root / "JPEGImages" / f"{sid}.jpg", np.where(labels == 255, 0, labels))
    report = evaluate(FakePredictor("segmentation", oracle, num_classes=21), EvalSettings(data=str(tmp_path)))
    assert report["dataset"]["layout"] == "voc" and report["num_evaluated"] == 2
    assert report["metrics"]["mIoU"] == 1.0 and report["unknown_ids"] == {}
    assert report["per_class"][15]["class"] == "person"


def test_composition_1k_is_scored_over_the_trimap_files_unknown_region(tmp_path):
    root = tmp_path / "Composition-1k-testset"
    rng = np.random.default_rng(3)
    truth = {}
    for fg in ("cat-1", "hair-2"):
        alpha = np.zeros((24, 32), np.uint8)
        alpha[:, 16:] = 255
        alpha[:, 12:16] = rng.integers(1, 255, (24, 4))  # a soft edge
        trimap = np.where(alpha == 255, 255, 0).astype(np.uint8)
        trimap[:, 8:20] = 128  # wider than a generated band: it takes in background and foreground
        write_png(root / "alpha_copy" / f"{fg}.png", alpha)
        write_png(root / "trimaps" / f"{fg}.png", trimap)
        for k in range(2):
            write_png(root / "merged" / f"{fg}_{k}.png", encode(alpha))
            truth[f"{fg}_{k}"] = (alpha / 255.0, trimap)
    offset = 0.1
    model = FakePredictor("matting", lambda img: np.minimum(img[..., 0] / 255.0 + offset, 1.0))
    report = evaluate(model, EvalSettings(data=str(root), split="test"))
    assert report["dataset"]["layout"] == "comp1k" and report["dataset"]["trimaps"] == "files"
    sad, mse = [], []
    for alpha, trimap in truth.values():  # DIM's compute_sad_loss / compute_mse_loss, written out
        err = np.minimum(alpha + offset, 1.0) - alpha
        unknown = trimap == 128
        sad.append(np.abs(err)[unknown].sum() / 1000)
        mse.append((err[unknown] ** 2).sum() / unknown.sum())
    assert report["metrics"]["sad"] == pytest.approx(np.mean(sad), rel=1e-12)
    assert report["metrics"]["mse"] == pytest.approx(np.mean(mse), rel=1e-12)
    whole_image_sad = np.mean([np.abs(np.minimum(a + offset, 1) - a).sum() / 1000 for a, _ in truth.values()])
    assert report["metrics"]["sad"] < whole_image_sad  # the old whole-image SAD would be larger


def test_a_disparity_model_is_scored_through_its_contracts_depth_kind(tmp_path):
    data = make_pixelport(tmp_path / "data", n=3)
    import cv2

    gts = {}
    for p in sorted((data / "images" / "val").iterdir()):
        image = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
        depth = cv2.imread(str(data / "depth" / "val" / p.name), cv2.IMREAD_UNCHANGED) / 1000.0
        gts[hashlib.sha1(image.tobytes()).hexdigest()] = depth

    def disparity(img):  # relative inverse depth: an exact affine map of 1 / true depth
        return 0.3 / gts[hashlib.sha1(img.tobytes()).hexdigest()] + 0.05

    out = tmp_path / "out"
    report = evaluate(FakePredictor("depth", disparity, depth_kind="disparity"),
                      EvalSettings(data=str(data), out=str(out)))
    assert report["metric_settings"]["prediction"] == "disparity"
    with np.load(next((out / "samples").glob("*.npz"))) as pic:  # pictures show the depth that was scored
        np.testing.assert_allclose(pic["pred"], pic["target"], rtol=1e-3)
    assert any(p.endswith("error_maps.png") for p in write_report(report, str(out)))
    assert report["metric_settings"]["alignment"] == "scale_shift"
    assert report["metrics"]["abs_rel"] < 1e-3
    wrong = evaluate(FakePredictor("depth", disparity, depth_kind="relative"), EvalSettings(data=str(data)))
    assert wrong["metrics"]["abs_rel"] > 10 * report["metrics"]["abs_rel"] + 1e-3
