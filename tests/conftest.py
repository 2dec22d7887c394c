"""Session fixtures every integration test shares: a tiny trained-and-exported zoo, and one Triton.

`zoo_repository` trains three small UNets (one epoch, 64 px, width 8) on a tiny synthetic dataset
and exports them; `triton_server` serves that repository with one embedded Triton on free ports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

# name -> task of the models `zoo_repository` publishes (all UNets, the cheapest zoo architecture)
ZOO_MODELS = {"seg_unet": "segmentation", "depth_unet": "depth", "matting_unet": "matting"}
ZOO_SIZE = 64
ZOO_WIDTH = 8


@pytest.fixture(scope="session")
def server_settings_factory(tmp_path_factory) -> Callable[..., Any]:
    """make(repository, **overrides) -> ServerSettings on free ports with its own state directory."""
    from serving import ServerSettings, free_ports

    def make(repository: Path, **overrides: Any) -> ServerSettings:
        http, grpc, metrics = free_ports(3)
        fields = dict(repository=repository, http_port=http, grpc_port=grpc, metrics_port=metrics,
                      state_dir=tmp_path_factory.mktemp("triton-state"), die_with_parent=True)
        fields.update(overrides)
        return ServerSettings(**fields)

    return make


@pytest.fixture(scope="session")
def zoo_dataset(tmp_path_factory) -> Path:
    """A tiny synthetic dataset (models.synth layout: images/, labels/, depth/, alpha/, meta.json)."""
    from models.synth import synthesize

    return Path(synthesize(tmp_path_factory.mktemp("zoo") / "data", n_train=8, n_val=3, size=ZOO_SIZE, seed=0))


@pytest.fixture(scope="session")
def zoo_checkpoints(zoo_dataset) -> dict[str, Path]:
    """model name -> checkpoint of a UNet trained one short epoch on `zoo_dataset`."""
    from models.train import TrainConfig, train

    out = {}
    for name, task in ZOO_MODELS.items():
        path = zoo_dataset.parent / "checkpoints" / f"{name}.pt"
        train(TrainConfig(arch="unet", task=task, data=str(zoo_dataset), epochs=1, out=str(path), size=ZOO_SIZE,
                          width=ZOO_WIDTH, batch_size=4, seed=0, progress=False))
        out[name] = path
    return out


@pytest.fixture(scope="session")
def zoo_repository(request) -> Path:
    """A Triton model repository with seg_unet, depth_unet and matting_unet (version 1 each)."""
    from export import ExportSettings, export_model

    zoo_checkpoints = request.getfixturevalue("zoo_checkpoints")  # after the check: no training for a skip
    repository = next(iter(zoo_checkpoints.values())).parent.parent / "model_repository"
    for name, checkpoint in zoo_checkpoints.items():
        # max_size keeps the parity gate's largest shape small: clients letterbox to 64x64 anyway.
        export_model(ExportSettings(name=name, repository=str(repository), arch="unet", checkpoint=str(checkpoint),
                                    task=ZOO_MODELS[name], resize=f"letterbox:{ZOO_SIZE}x{ZOO_SIZE}", max_batch=4,
                                    max_size=(2 * ZOO_SIZE, 2 * ZOO_SIZE)))
    return repository


@pytest.fixture(scope="session")
def triton_server(zoo_repository, server_settings_factory):
    """One embedded Triton serving `zoo_repository` for the whole session; always stopped."""
    from serving import start_server

    server = start_server(server_settings_factory(zoo_repository))  # stops itself if it fails
    try:
        yield server
    finally:
        server.stop()
