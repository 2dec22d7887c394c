"""fp16 and int8 exports loaded by the real Triton: served answers equal onnxruntime's in-process
run of the same published file, through the same pre/post-processing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from clients import DenseClient
from evaluation.predictors import OnnxPredictor
from export import ExportSettings, export_model
from clients.images import load_image

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_fp16_and_int8_variants_serve_what_onnxruntime_computes(tmp_path, own_server, zoo_checkpoints, zoo_dataset):
    # The trained zoo UNets: their maps have structure, where random weights would give one class.
    repository = tmp_path / "repo"
    common = dict(repository=str(repository), arch="unet", resize="letterbox:64x64", samples=4)
    # labels+confidence: the short-trained zoo UNet's labels can be one class on an image; its
    # confidence is a real map either way.
    export_model(ExportSettings(name="seg16", checkpoint=str(zoo_checkpoints["seg_unet"]), task="segmentation",
                                output="labels+confidence", fp16=True, **common))
    export_model(ExportSettings(name="depth8", checkpoint=str(zoo_checkpoints["depth_unet"]), task="depth",
                                int8=True, calibration=str(zoo_dataset), **common))
    server = own_server(repository)
    images = [load_image(str(p)) for p in sorted((zoo_dataset / "images" / "val").iterdir())[:2]]
    images.append(cv2.resize(images[0], (90, 50), interpolation=cv2.INTER_AREA))  # another size and aspect

    local = OnnxPredictor(str(repository / "seg16"))
    assert local.contract.precision == "fp16"
    with DenseClient(server.grpc_url, "seg16") as client:
        for img in images:
            want, got = local.predict(img), client.predict(img)
            assert np.ptp(want.confidence) > 0  # a real map, not a constant
            np.testing.assert_array_equal(got.labels, want.labels)
            np.testing.assert_allclose(got.confidence, want.confidence, rtol=1e-5, atol=1e-6)

    local = OnnxPredictor(str(repository / "depth8"))
    assert local.contract.precision == "int8"
    with DenseClient(server.grpc_url, "depth8") as client:
        for img in images:
            want = local.predict(img).depth
            assert np.ptp(want) > 0
            np.testing.assert_allclose(client.predict(img).depth, want, rtol=1e-5, atol=1e-6)
