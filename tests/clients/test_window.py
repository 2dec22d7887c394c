"""Sliding-window geometry against mmseg's formulas, the streamed accumulation against mmseg's
loops written plainly (on a real ONNX conv model in-process), resizing against torch, the errors,
request chunking and bounded memory. The served path is in test_window_integration.py."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

from clients.window import (RowResizer, argmax_channels, SlideJob, SlideWindow, check_model, grid_count, mmseg_aug_reference,
                            mmseg_slide_reference, network_hw, resize_map, run_slide, scaled_hw, tile_boxes,
                            tile_spans)
from windowkit import InProcess, slide_contract

CITYSCAPES = SlideWindow(crop=(512, 1024), stride=(341, 683))


def mmseg_grid(size: int, crop: int, stride: int) -> list[tuple[int, int]]:
    """The (start, end) pairs of mmseg's slide_inference loop along one axis, copied literally."""
    grids = max(size - crop + stride - 1, 0) // stride + 1
    out = []
    for idx in range(grids):
        y1 = idx * stride
        y2 = min(y1 + crop, size)
        y1 = max(y2 - crop, 0)
        out.append((y1, y2))
    return out


# ---- geometry -------------------------------------------------------------------------------------
def test_cityscapes_geometry_is_mmsegs():
    assert tile_spans(1024, 512, 341) == [(0, 512), (341, 853), (512, 1024)]
    assert tile_spans(2048, 1024, 683) == [(0, 1024), (683, 1707), (1024, 2048)]
    boxes = tile_boxes((1024, 2048), CITYSCAPES.crop, CITYSCAPES.stride)
    assert len(boxes) == 9 and boxes[0] == (0, 512, 0, 1024) and boxes[-1] == (512, 1024, 1024, 2048)
    assert all((y2 - y1, x2 - x1) == (512, 1024) for y1, y2, x1, x2 in boxes)


@pytest.mark.parametrize("crop,stride", [(512, 341), (769, 513), (64, 64), (7, 3), (5, 1)])
def test_spans_follow_mmseg_for_every_size(crop, stride):
    for size in list(range(1, 3 * crop + 5)) + [1024, 2048, 2049]:
        spans = tile_spans(size, crop, stride)
        assert spans == mmseg_grid(size, crop, stride), size
        assert len(spans) == grid_count(size, crop, stride)
        assert spans[0][0] == 0 and spans[-1][1] == size  # covers the side, border to border
        assert all(b - a == min(crop, size) for a, b in spans)  # one tile size: batches stack
        assert all(a1 <= a2 for (a1, _), (a2, _) in zip(spans, spans[1:]))
        covered = np.zeros(size, bool)
        for a, b in spans:
            covered[a:b] = True
        assert covered.all()


def test_scaled_size_is_mmcv_rescale():
    assert scaled_hw((1024, 2048), 0.75) == (768, 1536)
    assert scaled_hw((1023, 2047), 0.5) == (512, 1024)  # int(x * s + 0.5)
    assert scaled_hw((333, 777), 1.75) == (583, 1360)


def test_window_settings_are_checked():
    with pytest.raises(ValueError, match="leave gaps"):
        SlideWindow(crop=(512, 512), stride=(600, 341))
    with pytest.raises(ValueError, match="positive"):
        SlideWindow(crop=(0, 512), stride=(1, 1))
    with pytest.raises(ValueError, match="scales"):
        SlideWindow(crop=(8, 8), stride=(4, 4), scales=(0.5, -1.0))
    w = SlideWindow(crop=[8, 16], stride=(4, 8), flip=True, scales=(0.5, 1))
    assert w.crop == (8, 16) and w.augs == [(0.5, False), (0.5, True), (1.0, False), (1.0, True)]
    assert w.to_dict()["scales"] == [0.5, 1.0]


# ---- resizing -----------------------------------------------------------------------------------
@pytest.mark.parametrize("src,dst", [((37, 53), (74, 106)), ((100, 90), (41, 67)), ((16, 16), (16, 40)), ((1, 9), (5, 3))])
def test_resize_map_matches_torch_bilinear(src, dst):
    torch = pytest.importorskip("torch")
    values = np.random.default_rng(1).normal(size=(3,) + src).astype(np.float32)
    want = torch.nn.functional.interpolate(torch.from_numpy(values)[None], size=dst, mode="bilinear",
                                           align_corners=False)[0].numpy()
    np.testing.assert_allclose(resize_map(values, dst), want, atol=2e-6)


def test_argmax_channels_is_numpys_argmax_ties_included():
    values = np.random.default_rng(5).integers(0, 4, size=(7, 33, 65)).astype(np.float32)  # many ties
    assert np.array_equal(argmax_channels(values), values.argmax(axis=0))


@pytest.mark.parametrize("src,dst", [((120, 50), (333, 70)), ((333, 70), (120, 50)), ((64, 64), (64, 64))])
def test_streamed_resize_equals_one_shot_bit_for_bit(src, dst):
    rng = np.random.default_rng(2)
    values = rng.normal(size=(4,) + src).astype(np.float32)
    resizer, rows, y = RowResizer(src, dst), [], 0
    while y < src[0]:
        n = int(rng.integers(1, 40))
        done = resizer.feed(y, values[:, y:y + n])
        y += values[:, y:y + n].shape[1]
        if done is not None:
            assert done[0] == sum(r.shape[1] for r in rows)
            rows.append(done[1])
    assert np.array_equal(np.concatenate(rows, axis=1), resize_map(values, dst))


# ---- the job against mmseg's loops, in-process ------------------------------------------------------
def _images(*sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=hw + (3,), dtype=np.uint8) for hw in sizes]


SMALL = SlideWindow(crop=(128, 256), stride=(85, 171))  # Cityscapes' geometry at a quarter


@pytest.mark.parametrize("hw", [(256, 512), (100, 200), (300, 190), (257, 601), (128, 256)])
def test_slide_equals_mmseg_slide_inference(hw):
    contract = slide_contract("seg", "segmentation")
    model = InProcess("segmentation", contract)
    (image,) = _images(hw)
    pred = run_slide(model.infer, image, SMALL, contract)
    logits = mmseg_slide_reference(model.run_logits, image, SMALL.crop, SMALL.stride)
    assert pred.labels.shape == hw and pred.labels.dtype == np.uint8
    assert np.array_equal(pred.labels, logits.argmax(axis=0))
    assert 0.2 < np.mean(pred.labels == 0) < 0.99 or len(np.unique(pred.labels)) > 1  # not a constant map


@pytest.mark.parametrize("hw", [(256, 512), (90, 150), (301, 457)])
def test_flip_and_multiscale_equal_mmseg_aug_test(hw):
    contract = slide_contract("seg", "segmentation")
    model = InProcess("segmentation", contract)
    window = SlideWindow(SMALL.crop, SMALL.stride, flip=True, scales=(0.5, 0.75, 1.0, 1.25, 1.5, 1.75))
    (image,) = _images(hw, seed=3)
    pred = run_slide(model.infer, image, window, contract)
    want = mmseg_aug_reference(model.run_logits, image, window)
    assert np.array_equal(pred.labels, want)
    plain = run_slide(model.infer, image, SMALL, contract).labels
    assert not np.array_equal(pred.labels, plain)  # the augmentations do change the answer


def test_depth_is_averaged_in_depth_space():
    contract = slide_contract("depth", "depth")
    model = InProcess("depth", contract)
    (image,) = _images((257, 601), seed=4)
    pred = run_slide(model.infer, image, SMALL, contract)
    want = mmseg_slide_reference(model.run_logits, image, SMALL.crop, SMALL.stride)[0]
    assert pred.depth.dtype == np.float32 and np.array_equal(pred.depth, want)
    window = SlideWindow(SMALL.crop, SMALL.stride, flip=True, scales=(0.75, 1.25))
    assert np.array_equal(run_slide(model.infer, image, window, contract).depth,
                          mmseg_aug_reference(model.run_logits, image, window, task="depth"))


def test_tiles_travel_in_chunks_of_max_batch_size():
    contract = slide_contract("seg", "segmentation", max_batch=4)
    model = InProcess("segmentation", contract)
    (image,) = _images((256, 512))
    sizes = []

    def infer(batch, description):
        sizes.append(batch.shape)
        return model.infer(batch)

    labels = run_slide(infer, image, SMALL, contract).labels
    assert [s[0] for s in sizes] == [4, 4, 1]  # 9 tiles
    sizes.clear()
    pairs = SlideWindow(SMALL.crop, SMALL.stride, tiles_per_request=2)
    assert np.array_equal(run_slide(infer, image, pairs, contract).labels, labels)
    assert [s[0] for s in sizes] == [2, 2, 2, 2, 1]
    with pytest.raises(ValueError, match="tiles_per_request"):
        SlideWindow(SMALL.crop, SMALL.stride, tiles_per_request=-1)
    assert all(s[1:] == (128, 256, 3) for s in sizes)
    job = SlideJob(_images((100, 90))[0], SMALL, contract)  # smaller than the crop: one tile, padded
    req = job.next_request()
    assert req.batch.shape == (1, 128, 96, 3) and req.tile_hw == (100, 90)
    assert (req.batch[0, 100:] == contract.pad_value).all() and (req.batch[0, :, 90:] == contract.pad_value).all()


# ---- errors ------------------------------------------------------------------------------------
def test_a_labels_model_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="--output logits"):
        check_model(slide_contract("seg", "segmentation", output="labels"))
    with pytest.raises(ValueError, match="--output logits"):
        SlideJob(_images((64, 64))[0], SMALL, slide_contract("seg", "segmentation", output="labels+confidence"))


def test_crop_over_the_models_limit_is_refused_before_any_request():
    contract = slide_contract("seg", "segmentation")
    with pytest.raises(ValueError, match="input limit 1024x2048.*--max-size"):
        network_hw((2048, 1024), contract)
    with pytest.raises(ValueError, match="input limit"):
        SlideJob(_images((3000, 3000))[0], SlideWindow((2048, 2048), (1024, 1024)), contract)
    with pytest.raises(ValueError, match="shrinks the 1x5 image to nothing"):
        SlideJob(_images((1, 5))[0], SlideWindow((8, 8), (4, 4), scales=(0.25, 1.0)), contract)


# ---- memory ------------------------------------------------------------------------------------
def test_memory_is_bounded_by_a_band_not_the_image():
    """An image 48x the crop tall: the accumulator never holds more than a band of rows, and the
    peak allocation stays far below what all tiles' logits (or one full logits map) would take."""
    contract = slide_contract("seg", "segmentation", max_batch=4)
    window = SlideWindow((128, 128), (85, 85))
    image = _images((6144, 1024))[0]
    band_rows = []

    def infer(batch, description):  # a cheap stand-in model: logits from the pixels, at the tile size
        return {"logits": batch.transpose(0, 3, 1, 2)[:, [0, 1, 2, 0, 1]].astype(np.float32)}

    job = SlideJob(image, window, contract)
    tracemalloc.start()
    try:
        while (req := job.next_request()) is not None:
            job.feed(req, infer(req.batch, ""))
            band_rows.append((job.streams[0].used, job.streams[0].count.shape[0]))  # (in use, capacity)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    full_logits = 5 * 6144 * 1024 * 4  # 126 MB; the band is about 4 MB
    w_grids = grid_count(1024, 128, 85)
    bound = 128 + 85 * math.ceil(4 / w_grids)
    assert max(u for u, _ in band_rows) <= bound and max(c for _, c in band_rows) <= 2 * bound
    assert peak < full_logits / 6, peak
    assert job.result().labels.shape == (6144, 1024)
