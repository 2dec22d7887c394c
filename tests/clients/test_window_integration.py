"""Served sliding-window inference against mmseg's algorithm run in-process on the same ONNX model:
pixel for pixel at Cityscapes' size and geometry, smaller than the crop, not divisible by the
stride, with flip and multi-scale; tiles batched (Triton's statistics say so), over shared memory
and from the asyncio client; a model without logits is refused with the fix."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from clients import AsyncDenseClient, DenseClient, SlideWindow
from clients.window import mmseg_aug_reference, mmseg_slide_reference
from windowkit import InProcess, publish_conv, slide_contract

pytestmark = pytest.mark.integration

CITYSCAPES = SlideWindow(crop=(512, 1024), stride=(341, 683))
SMALL = SlideWindow(crop=(128, 256), stride=(85, 171))  # the same geometry at a quarter
SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


@pytest.fixture(scope="module")
def slide_server(tmp_path_factory, server_settings_factory, start_triton):
    """Triton serving the conv model with logits (seg_logits), its depth twin and a labels-only toy."""
    from evalkit import publish_toy

    repository = tmp_path_factory.mktemp("slide") / "repo"
    publish_conv(repository, "seg_logits", "segmentation")
    publish_conv(repository, "depth_conv", "depth")
    publish_toy(repository, "seg_labels", "segmentation")
    server = start_triton(server_settings_factory(repository))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def seg_model():
    return InProcess("segmentation", slide_contract("seg_logits", "segmentation"))


def image(hw, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=tuple(hw) + (3,), dtype=np.uint8)


def counts(url: str, model: str) -> tuple[int, int]:
    """(images inferred, model executions) from Triton's statistics: tiles, and batches of them."""
    client = grpcclient.InferenceServerClient(url)
    try:
        stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    finally:
        client.close()
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))


def test_cityscapes_size_equals_mmseg_slide_inference_and_tiles_travel_batched(slide_server, seg_model):
    img = image((1024, 2048))
    want = mmseg_slide_reference(seg_model.run_logits, img, CITYSCAPES.crop, CITYSCAPES.stride).argmax(axis=0)
    before = counts(slide_server.grpc_url, "seg_logits")
    with DenseClient(slide_server.grpc_url, "seg_logits") as client:
        pred = client.predict(img, window=CITYSCAPES)
    after = counts(slide_server.grpc_url, "seg_logits")
    assert pred.labels.shape == (1024, 2048)
    assert np.array_equal(pred.labels, want), f"{np.sum(pred.labels != want)} pixels differ"
    assert len(np.unique(want)) == 5  # a real map, not a constant
    # 9 tiles of 512x1024 in requests of max_batch_size (4): 4 + 4 + 1
    assert (after[0] - before[0], after[1] - before[1]) == (9, 3)


@pytest.mark.parametrize("hw,shm", [((300, 700), False), ((700, 1500), True), ((1100, 1900), False)])
def test_smaller_than_the_crop_and_not_divisible_by_the_stride(slide_server, seg_model, hw, shm):
    img = image(hw, seed=1)
    want = mmseg_slide_reference(seg_model.run_logits, img, CITYSCAPES.crop, CITYSCAPES.stride).argmax(axis=0)
    with DenseClient(slide_server.grpc_url, "seg_logits", use_shm=shm) as client:
        pred = client.predict(img, window=CITYSCAPES)
        assert np.array_equal(pred.labels, want), f"{np.sum(pred.labels != want)} pixels differ"
        if max(hw) <= 1024:  # without a window: one whole-image request, as before
            assert client.predict(img).labels.shape == hw


@pytest.mark.parametrize("hw", [(256, 512), (75, 301), (301, 457)])
def test_flip_and_multiscale_equal_mmseg_aug_test(slide_server, seg_model, hw):
    window = SlideWindow(SMALL.crop, SMALL.stride, flip=True, scales=SCALES)
    img = image(hw, seed=2)
    want = mmseg_aug_reference(seg_model.run_logits, img, window)
    with DenseClient(slide_server.grpc_url, "seg_logits") as client:
        got = client.predict(img, window=window).labels
    assert np.array_equal(got, want), f"{np.sum(got != want)} pixels differ"


def test_async_client_slides_the_same_and_in_parallel(slide_server, seg_model):
    window = SlideWindow(SMALL.crop, SMALL.stride, flip=True, scales=(0.75, 1.25))
    imgs = [image((256, 512), seed=s) for s in range(3)]

    async def run():
        async with AsyncDenseClient(slide_server.grpc_url, "seg_logits", concurrency=3) as client:
            return await asyncio.gather(*(client.predict(i, window=window) for i in imgs))

    for img, pred in zip(imgs, asyncio.run(run())):
        assert np.array_equal(pred.labels, mmseg_aug_reference(seg_model.run_logits, img, window))


def test_depth_is_slid_in_depth_space(slide_server):
    model = InProcess("depth", slide_contract("depth_conv", "depth"))
    img = image((301, 457), seed=3)
    window = SlideWindow(SMALL.crop, SMALL.stride, flip=True, scales=(0.5, 1.0))
    with DenseClient(slide_server.grpc_url, "depth_conv", use_shm=True) as client:
        pred = client.predict(img, window=window)
    assert np.array_equal(pred.depth, mmseg_aug_reference(model.run_logits, img, window, task="depth"))


def test_a_model_without_logits_is_refused_with_the_fix(slide_server):
    with DenseClient(slide_server.grpc_url, "seg_labels") as client:
        with pytest.raises(ValueError, match="--output logits"):
            client.predict(image((64, 64)), window=SMALL)


@pytest.mark.slow
def test_cityscapes_size_flip_and_the_extreme_scales(slide_server, seg_model):
    # The six scales' arithmetic is checked at a quarter of the geometry above; at the full size, the
    # smallest (one tile, smaller than the crop) and the largest (25 tiles) are the distinct cases.
    window = SlideWindow(CITYSCAPES.crop, CITYSCAPES.stride, flip=True, scales=(SCALES[0], SCALES[-1]))
    img = image((1024, 2048), seed=4)
    want = mmseg_aug_reference(seg_model.run_logits, img, window)
    with DenseClient(slide_server.grpc_url, "seg_logits", timeout_s=300) as client:
        got = client.predict(img, window=window).labels
    assert np.array_equal(got, want), f"{np.sum(got != want)} pixels differ"


def test_slide_bench_measures_batched_and_per_tile_requests(slide_server):
    from benchmarks.slide_bench import SlideBenchSettings, run_bench, table

    result = run_bench(SlideBenchSettings(slide_server.grpc_url, "seg_logits", size=(256, 512), crop=SMALL.crop,
                                          stride=SMALL.stride, rounds=1))
    batched, per_tile = result["variants"]["batched"], result["variants"]["per_tile"]
    assert result["tiles"] == 9 and per_tile["requests_per_image"] == 9 and batched["requests_per_image"] == 3
    assert result["labels_agree"] == 1.0 and batched["images_per_s"] > 0 and per_tile["images_per_s"] > 0
    assert "| batched | 4 | 3 |" in table(result)
