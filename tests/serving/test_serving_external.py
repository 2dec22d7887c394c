"""External mode: a full Triton (bin/tritonserver beside backends/onnxruntime) started on the user's
repository unchanged, with no runtime repository derived.

This machine has no full Triton (the pip wheel ships the python backend only), so the first test
stands in for the binary's *location* alone: a full-Triton layout whose bin/tritonserver execs the
wheel's real binary, serving a repository of python-backend models. What a real full Triton
serves (the onnxruntime backend on the exported files) is checked by the second test, which runs
wherever one is installed and says why it is skipped where not."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

import serving_toys as toys
from serving import wheel
from serving.process import full_triton_backends
from serving.runtime_repo import derive_repository

pytestmark = pytest.mark.integration


def _stand_in(root: Path) -> Path:
    """root/bin/tritonserver (the wheel's binary, with the environment it needs) beside
    root/backends/{python, onnxruntime}; onnxruntime is only the marker a full Triton has."""
    backends = wheel.prepare_backend_dir(wheel.dist_dir(), root / "backends")
    (backends / "onnxruntime").mkdir()
    env = {k: v for k, v in wheel.embedded_env().items() if k in ("LD_LIBRARY_PATH", "PATH", "PIXELPORT_SITE_PACKAGES")}
    binary = root / "bin" / "tritonserver"
    binary.parent.mkdir(parents=True)
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
    binary.write_text(f'#!/bin/sh\n{exports}printf "%s\\n" "$@" > {shlex.quote(str(root / "args"))}\n'
                      f'exec {shlex.quote(str(wheel.binary()))} "$@"\n')
    binary.chmod(0o755)
    return binary


def test_external_mode_runs_the_named_triton_on_the_repository_unchanged(tmp_path, own_server):
    source = tmp_path / "source"
    toys.publish(source, toys.depth_contract("d"), toys.depth_onnx(), 1)
    repository = tmp_path / "repo"  # python-backend models: what this stand-in's backends can run
    assert derive_repository(source, repository, gpu_present=False) == {}
    binary = _stand_in(tmp_path / "full")
    server = own_server(repository, mode="external", tritonserver=binary)
    assert server.mode == "external"
    args = (tmp_path / "full" / "args").read_text().splitlines()
    assert f"--model-repository={repository.resolve()}" in args  # the repository itself, not a derived copy
    assert f"--backend-directory={tmp_path / 'full' / 'backends'}" in args
    x = toys.image(5)
    with server.client() as client:
        result = client.infer("d", toys.infer_input(x))
    expected = toys.reference(source, "d", "1", x)
    assert np.ptp(expected["depth"]) > 0
    toys.assert_matches(result, expected)


def _full_triton() -> Optional[Path]:
    for candidate in (shutil.which("tritonserver"), "/opt/tritonserver/bin/tritonserver"):
        if candidate and Path(candidate).is_file() and full_triton_backends(Path(candidate)) is not None:
            return Path(candidate)
    return None


def test_a_real_full_triton_serves_the_exported_files_with_its_onnxruntime_backend(tmp_path, own_server):
    binary = _full_triton()
    if binary is None:
        pytest.skip("no full Triton here (tritonserver with backends/onnxruntime, e.g. NGC's "
                    "nvcr.io/nvidia/tritonserver image): the pip wheel has only the python backend")
    repository = tmp_path / "repo"
    toys.publish(repository, toys.depth_contract("d"), toys.depth_onnx(), 1)
    toys.publish(repository, toys.segmentation_contract("s"), toys.segmentation_onnx(), 1)
    server = own_server(repository, mode="external", tritonserver=binary)
    assert server.mode == "external"
    x = toys.image(6, batch=2)
    with server.client() as client:
        for name in ("d", "s"):
            toys.assert_matches(client.infer(name, toys.infer_input(x)), toys.reference(repository, name, "1", x))
