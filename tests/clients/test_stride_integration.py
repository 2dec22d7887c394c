"""DenseClient and AsyncDenseClient against stride-mode models on the real Triton: every image keeps
its own size (padded to a stride multiple, never resized), so the toys' answers are known exactly."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from clients import AsyncDenseClient, DenseClient
from evalkit import blocky_image, publish_toy

pytestmark = pytest.mark.integration

SIZES = [(37, 53), (64, 64), (17, 90), (40, 24)]  # none a multiple of the stride but one


@pytest.fixture(scope="module")
def stride_server(tmp_path_factory, server_settings_factory, start_triton):
    repository = tmp_path_factory.mktemp("stride") / "repo"
    publish_toy(repository, "seg8", "segmentation", resize="stride:8")
    publish_toy(repository, "depth16", "depth", resize="stride:16")
    server = start_triton(server_settings_factory(repository))
    try:
        yield server
    finally:
        server.stop()


def images(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [blocky_image(rng, h, w) for h, w in SIZES]


def depth_of(image: np.ndarray) -> np.ndarray:
    return 0.5 + 4 * image.astype(np.float64).mean(axis=2) / 255  # the depth toy, written out


@pytest.mark.parametrize("shm", [False, True])
def test_sync_client_keeps_each_size_exactly(stride_server, shm):
    imgs = images(0)
    with DenseClient(stride_server.grpc_url, "seg8", use_shm=shm) as seg, \
            DenseClient(stride_server.grpc_url, "depth16", use_shm=shm) as depth:
        assert seg.contract.resize.mode == "stride"
        for img in imgs:
            np.testing.assert_array_equal(seg.predict(img).labels, img.argmax(axis=2))
            np.testing.assert_allclose(depth.predict(img).depth, depth_of(img), rtol=1e-5)
        # A batch of mixed sizes: each image travels at its own size and comes back at it.
        for img, pred in zip(imgs, seg.predict_batch(imgs)):
            np.testing.assert_array_equal(pred.labels, img.argmax(axis=2))


def test_async_client_keeps_each_size_exactly(stride_server):
    imgs = images(1)

    async def run():
        async with AsyncDenseClient(stride_server.grpc_url, "seg8", concurrency=3) as seg, \
                AsyncDenseClient(stride_server.grpc_url, "depth16", concurrency=3) as depth:
            return (await asyncio.gather(*(seg.predict(i) for i in imgs)),
                    await asyncio.gather(*(depth.predict(i) for i in imgs)))

    labels, depths = asyncio.run(run())
    for img, seg_pred, depth_pred in zip(imgs, labels, depths):
        assert seg_pred.labels.shape == img.shape[:2]
        np.testing.assert_array_equal(seg_pred.labels, img.argmax(axis=2))
        np.testing.assert_allclose(depth_pred.depth, depth_of(img), rtol=1e-5)
