"""`python -m serving` as users run it: clear one-line errors, a broken model among good ones, stop."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

import serving_toys as toys
from clients.contract import CONFIG_FILE, PLAN_FILE
from serving import state as state_store
from serving_toys import assert_matches, image, infer_input, reference

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "serving", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_every_flag_has_help_and_the_docstring_shows_the_run_command():
    import argparse

    from serving.__main__ import __doc__ as doc
    from serving.__main__ import build_parser

    parser = build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in verbs.choices.items():
        for action in sub._actions:
            if action.option_strings:
                assert action.help, f"`{name} {action.option_strings[0]}` has no help text"
    assert "python -m serving start --repository" in doc


def test_start_on_missing_repository(tmp_path):
    line = one_error_line(run_cli("start", "--repository", str(tmp_path / "nope"), "--state-dir", str(tmp_path)))
    assert "does not exist" in line and str(tmp_path / "nope") in line


def test_start_on_empty_repository(tmp_path):
    (tmp_path / "repo").mkdir()
    line = one_error_line(run_cli("start", "--repository", str(tmp_path / "repo"), "--state-dir", str(tmp_path)))
    assert "has no models" in line


def test_start_on_a_port_in_use(toy_repository, server_settings_factory):
    settings = server_settings_factory(toy_repository)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = _start_args(settings)
        args[args.index("--grpc-port") + 1] = str(port)
        line = one_error_line(run_cli(*args))
    assert f"gRPC port {port}" in line and "--grpc-port" in line
    assert state_store.load(settings.state_dir) is None


def test_status_and_stop_without_a_server(tmp_path):
    assert "no pixelport Triton server is recorded" in one_error_line(run_cli("status", "--state-dir", str(tmp_path)))
    stopped = run_cli("stop", "--state-dir", str(tmp_path))
    assert stopped.returncode == 0 and "nothing to stop" in stopped.stdout


@pytest.fixture(scope="module")
def broken_repository(tmp_path_factory) -> Path:
    """good (serves), broken (corrupt model.onnx), badcfg (a config.pbtxt that does not parse), a copy of
    good in a directory named 'nl\n' (not a valid name) and trt_only (a TensorRT plan: skipped when embedded)."""
    repository = tmp_path_factory.mktemp("broken") / "model_repository"
    toys.publish(repository, toys.segmentation_contract("good"), toys.segmentation_onnx(seed=4), version=1)
    toys.publish(repository, toys.segmentation_contract("broken"), b"this is not an onnx file", version=1)
    plan = toys.depth_contract("trt_only", platform="tensorrt_plan")
    (repository / "trt_only" / "1").mkdir(parents=True)
    (repository / "trt_only" / CONFIG_FILE).write_text(plan.to_pbtxt())
    (repository / "trt_only" / "1" / PLAN_FILE).write_bytes(b"engine")
    (repository / "badcfg" / "1").mkdir(parents=True)
    (repository / "badcfg" / CONFIG_FILE).write_text("this is { not pbtxt")
    shutil.copytree(repository / "good", repository / "nl\n")
    return repository


def _start_args(settings) -> list[str]:
    """`start` flags for ServerSettings from the server_settings_factory fixture (free ports, own state)."""
    return ["start", "--repository", str(settings.repository), "--state-dir", str(settings.state_dir),
            "--http-port", str(settings.http_port), "--grpc-port", str(settings.grpc_port),
            "--metrics-port", str(settings.metrics_port), "--timeout", "120"]


@pytest.mark.integration
def test_start_fails_naming_the_broken_model(broken_repository, server_settings_factory):
    settings = server_settings_factory(broken_repository)
    # A 600 s timeout inside run_cli's 240 s: models that can never load must not be waited for.
    result = run_cli(*_start_args(settings), "--timeout", "600")
    assert result.returncode == 1
    assert "model 'broken' failed to load" in result.stderr and "--allow-failed-models" in result.stderr
    assert "model 'badcfg' failed to load: failed to read text proto" in result.stderr
    assert "--- last lines of" in result.stderr  # the server log's tail comes with it
    assert state_store.load(settings.state_dir) is None  # the server was stopped


@pytest.mark.integration
def test_broken_model_does_not_stop_the_others(broken_repository, server_settings_factory, tmp_path_factory):
    # Its own copy: this test publishes a corrupt good/2, which no other test may see.
    repository = Path(shutil.copytree(broken_repository, tmp_path_factory.mktemp("broken-own") / "model_repository"))
    settings = server_settings_factory(repository)
    tmp_path = settings.state_dir
    started = run_cli(*_start_args(settings), "--allow-failed-models", "--timeout", "600")
    record = state_store.load(tmp_path)
    try:
        assert started.returncode == 0, started.stderr
        assert "skipped: trt_only: TensorRT plan" in started.stdout
        with grpcclient.InferenceServerClient(record.grpc_url) as client:
            x = image(5)
            assert_matches(client.infer("good", infer_input(x)), reference(repository, "good", "1", x))

        status = run_cli("status", "--state-dir", str(tmp_path))
        assert status.returncode == 0, status.stderr
        rows = {line.split()[0]: line.split()[1] for line in status.stdout.splitlines()[4:] if line.strip()}
        assert rows["good"] == "READY" and rows["broken"] == "UNAVAILABLE" and rows["trt_only"] == "SKIPPED"
        assert rows["'nl\\n'"] == "SKIPPED" and rows["badcfg"] == "NOT"  # "NOT LOADED"
        broken_line = next(line for line in status.stdout.splitlines() if line.startswith("unavailable: broken:"))
        assert "onnxruntime cannot load" in broken_line
        assert "skipped: 'nl\\n': 'nl\\n' is not a valid model name" in status.stdout
        assert "not loaded: badcfg: failed to read text proto" in status.stdout

        # A broken new version of a serving model: the reload fails loudly, the old version keeps serving.
        toys.publish(repository, toys.segmentation_contract("good"), b"corrupt", version=2)
        assert "reloading 'good' failed" in one_error_line(run_cli("reload", "good", "--state-dir", str(tmp_path)))
        with grpcclient.InferenceServerClient(record.grpc_url) as client:
            result = client.infer("good", infer_input(x))
            assert result.get_response().model_version == "1"
    finally:
        stopped = run_cli("stop", "--state-dir", str(tmp_path))
    assert stopped.returncode == 0 and f"pid {record.pid}" in stopped.stdout
    assert not state_store.is_tritonserver(record.pid)
    assert state_store.load(tmp_path) is None
    assert not [p for p in Path("/dev/shm").iterdir() if p.name.startswith(record.shm_prefix)]
