"""Every exported zoo model answers through the session's Triton exactly as onnxruntime does in-process."""

from __future__ import annotations

import numpy as np
import pytest

from clients.contract import ModelContract
from serving_toys import assert_matches, infer_input, reference

pytestmark = pytest.mark.integration

ZOO = ("seg_unet", "depth_unet", "matting_unet")


def test_server_metadata_reports_triton(triton_server):
    with triton_server.client() as client:
        assert client.get_server_metadata().name == "triton"
        assert client.is_server_ready()


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_matches_onnxruntime(triton_server, zoo_repository, name):
    with triton_server.client() as client:
        assert client.is_model_ready(name)
        contract = ModelContract.from_model_config(client.get_model_config(name, as_json=True))
        h, w = contract.warmup_hw()
        # A fixed uint8 input: a smooth gradient plus a pattern, batch of two different images.
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx * yy) % 256], -1)
        x = np.stack([base, base[::-1, ::-1]]).astype(np.uint8)
        result = client.infer(name, infer_input(x))
        version = result.get_response().model_version
    expected = reference(zoo_repository, name, version, x)
    assert set(expected) == {n for n, _, _ in contract.output_specs()}
    assert_matches(result, expected)  # labels identical, floats within 1e-5
