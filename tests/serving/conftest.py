"""Serving-room fixtures: a repository of tiny onnx.helper models and one embedded Triton on it.

These do not depend on the trainer or the exporter, so the serving code is tested on its own.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import serving_toys as toys

# name -> (contract, onnx model) of the toy repository; seg_live is the one the admin-key test reloads (unchanged)
TOY_MODELS = {
    "seg": (toys.segmentation_contract("seg"), toys.segmentation_onnx(seed=0)),
    # KIND_GPU: served on CPU here (no GPU), which model.py must say in the server log
    "depth": (toys.depth_contract("depth", instance_kind="KIND_GPU"), toys.depth_onnx(seed=1)),
    "seg_live": (toys.segmentation_contract("seg_live"), toys.segmentation_onnx(seed=2)),
}


@pytest.fixture(scope="session")
def toy_repository(tmp_path_factory) -> Path:
    repository = tmp_path_factory.mktemp("toy") / "model_repository"
    for contract, model in TOY_MODELS.values():
        toys.publish(repository, contract, model, version=1)
    return repository


@pytest.fixture(scope="session")
def toy_server(toy_repository, server_settings_factory):
    from serving import start_server

    server = start_server(server_settings_factory(toy_repository))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def runtime_model():
    """serving/runtime/model.py loaded as Triton loads it: a file outside the package."""
    from serving.runtime_repo import RUNTIME_MODEL

    spec = importlib.util.spec_from_file_location("pixelport_runtime_model", RUNTIME_MODEL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
