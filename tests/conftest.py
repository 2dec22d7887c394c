"""Session fixtures every integration test shares: a tiny trained-and-exported zoo, and one Triton.

`zoo_repository` trains three small UNets (one epoch, 64 px, width 8) on a tiny synthetic dataset
and exports them; `triton_server` serves that repository with one embedded Triton on free ports.
"""

from __future__ import annotations

import dataclasses
import os
import importlib.util
import random
import re
import socket
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import settings as hypothesis_settings

# CI (CI=true) runs each property test on the same derandomized examples every time, so a landing
# never fails on a case no one saw before; local runs keep exploring new random inputs.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    hypothesis_settings.load_profile("ci")

# name -> task of the models `zoo_repository` publishes (all UNets, the cheapest zoo architecture)
ZOO_MODELS = {"seg_unet": "segmentation", "depth_unet": "depth", "matting_unet": "matting"}
ZOO_SIZE = 64
ZOO_WIDTH = 8
ZOO_EPOCHS = 20


# ---- ports --------------------------------------------------------------------------------------
# Triton binds its ports itself, so a test can only pick ports that are free now and hope they are
# still free when Triton binds them. serving.free_ports asks the kernel for ephemeral ports, and
# the kernel hands the same range to every outgoing connection (our gRPC clients included), so a
# port can be taken in between. These ports come from *below* the ephemeral range, which the
# kernel never assigns by itself; each is handed out once per session, and a clash that still
# happens (another test session on the machine picked it) is retried by `start_with_retry`.
_PORT_FLOOR = 20000
_handed_out: set[int] = set()
_rng = random.Random()  # seeded from os.urandom: parallel sessions start from different ports


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Triton and check_ports_free do
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_ports(count: int = 3) -> list[int]:
    """`count` distinct ports, free now, outside the kernel's ephemeral range, never handed out twice."""
    floor, ceiling = _PORT_FLOOR, _ephemeral_floor()
    ports: list[int] = []
    for _ in range(2000):
        port = _rng.randrange(floor, ceiling) if ceiling - floor > 100 else 0
        if port == 0:  # an unusual ip_local_port_range leaves no room below it: ask the kernel
            from serving import free_ports
            return free_ports(count)
        if port not in _handed_out and port not in ports and _bindable(port):
            ports.append(port)
            if len(ports) == count:
                _handed_out.update(ports)
                return ports
    raise RuntimeError(f"no {count} free ports between {floor} and {ceiling}: is something holding them all?")


# Triton's own words for a port it could not bind (HTTP, gRPC, metrics), and check_ports_free's.
_PORT_CLASH = re.compile(r"already in use|address in use|failed to listen|port \d+ on \S+ is not available", re.I)
START_ATTEMPTS = 3


def start_with_retry(settings: Any) -> Any:
    """start_server(settings); on a port clash, again on fresh ports (START_ATTEMPTS in all)."""
    from serving import ServingError, start_server

    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return start_server(settings)
        except ServingError as exc:
            if attempt == START_ATTEMPTS or not _PORT_CLASH.search(str(exc)):
                raise
            http, grpc, metrics = pick_ports(3)
            settings = dataclasses.replace(settings, http_port=http, grpc_port=grpc, metrics_port=metrics)
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def server_settings_factory(tmp_path_factory) -> Callable[..., Any]:
    """make(repository, **overrides) -> ServerSettings on free ports with its own state directory."""
    from serving import ServerSettings

    def make(repository: Path, **overrides: Any) -> ServerSettings:
        http, grpc, metrics = pick_ports(3)
        fields = dict(repository=repository, http_port=http, grpc_port=grpc, metrics_port=metrics,
                      state_dir=tmp_path_factory.mktemp("triton-state"), die_with_parent=True)
        fields.update(overrides)
        return ServerSettings(**fields)

    return make


@pytest.fixture
def own_server(server_settings_factory) -> Callable[..., Any]:
    """serve(repository, **overrides) -> a Triton of this test's own, stopped when the test ends.

    For tests that change what is served (publish a version, reload): the session servers stay as
    every other test expects them, whatever the order."""
    started: list = []

    def serve(repository: Path, **overrides: Any) -> Any:
        server = start_with_retry(server_settings_factory(repository, **overrides))
        started.append(server)
        return server

    yield serve
    for server in reversed(started):
        server.stop()


@pytest.fixture(scope="session")
def start_triton() -> Callable[[Any], Any]:
    """start_with_retry, for module-scoped servers (the caller stops what it starts).

    A fixture, not `from conftest import ...`: with several conftest.py files in the tree, which
    one that import finds depends on what ran first."""
    return start_with_retry


# ---- environment the suite assumes --------------------------------------------------------------
def _tensorrt_installed() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def _onnxruntime_has_gpu_providers() -> bool:
    try:
        import onnxruntime
    except ImportError:
        return False
    gpu = {"CUDAExecutionProvider", "TensorrtExecutionProvider", "ROCMExecutionProvider"}
    return bool(gpu & set(onnxruntime.get_available_providers()))


# marker -> (is the environment different?, why the test is skipped then)
ENVIRONMENT_MARKERS: dict[str, tuple[Callable[[], bool], str]] = {
    "needs_no_tensorrt": (_tensorrt_installed,
                          "checks the error for a missing `tensorrt`, and tensorrt is installed here"),
    "needs_cpu_only_onnxruntime": (_onnxruntime_has_gpu_providers,
                                   "checks the CPU fallback, and this onnxruntime has GPU providers"),
}


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker, (differs, why) in ENVIRONMENT_MARKERS.items():
        if item.get_closest_marker(marker) is not None and differs():
            pytest.skip(f"{marker}: {why}")


@pytest.fixture(scope="session")
def zoo_dataset(tmp_path_factory) -> Path:
    """A tiny synthetic dataset (models.synth layout: images/, labels/, depth/, alpha/, meta.json)."""
    from models.synth import synthesize

    return Path(synthesize(tmp_path_factory.mktemp("zoo") / "data", n_train=8, n_val=3, size=ZOO_SIZE, seed=0))


@pytest.fixture(scope="session")
def zoo_checkpoints(zoo_dataset) -> dict[str, Path]:
    """model name -> checkpoint of a UNet trained on `zoo_dataset` (about a second per model).

    Long enough that the segmentation model draws several classes: after one epoch it answered
    one class everywhere, so a served-vs-local label check could not see a misplaced pixel."""
    import numpy as np

    from clients.images import load_image
    from evaluation.predictors import TorchPredictor
    from models.train import TrainConfig, train

    out = {}
    for name, task in ZOO_MODELS.items():
        path = zoo_dataset.parent / "checkpoints" / f"{name}.pt"
        train(TrainConfig(arch="unet", task=task, data=str(zoo_dataset), epochs=ZOO_EPOCHS, out=str(path),
                          size=ZOO_SIZE, width=ZOO_WIDTH, batch_size=4, seed=0, progress=False))
        out[name] = path
    model = TorchPredictor(str(out["seg_unet"]), resize=f"letterbox:{ZOO_SIZE}x{ZOO_SIZE}")
    for image in sorted((zoo_dataset / "images" / "val").iterdir()):
        classes = np.unique(model.predict(load_image(str(image))).labels)
        assert len(classes) >= 3, f"the zoo seg model draws only classes {classes} on {image.name}: train it longer"
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
    server = start_with_retry(server_settings_factory(zoo_repository))  # stops itself if it fails
    try:
        yield server
    finally:
        server.stop()
