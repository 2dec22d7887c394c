"""Server pieces that need no running server: settings, modes, command line, env, state, cleanup."""

from __future__ import annotations

import os
import socket
import stat
import sys
import sysconfig
from pathlib import Path

import pytest

import serving_toys as toys
from serving import ServerSettings, ServingError, format_status, start_server
from serving import state as state_store
from serving.process import bounded_allocator_env, check_ports_free, choose_mode, server_command
from serving.wheel import dist_dir as wheel_dist_dir
from serving.wheel import embedded_env, prepare_backend_dir
from serving.leftovers import remove_shm_leftovers
from serving.stats import ModelStatus, short_reason


def settings(tmp_path: Path, **overrides) -> ServerSettings:
    fields = dict(repository=tmp_path / "repo", state_dir=tmp_path / "state", http_port=18000, grpc_port=18001,
                  metrics_port=18002)
    fields.update(overrides)
    return ServerSettings(**fields)


def test_settings_defaults_and_validation(tmp_path):
    s = ServerSettings(repository=tmp_path)
    assert (s.host, s.http_port, s.grpc_port, s.metrics_port) == ("127.0.0.1", 8000, 8001, 8002)
    assert s.resolved_log_file == s.state_dir / "server.log"
    with pytest.raises(ValueError, match="must differ"):
        ServerSettings(repository=tmp_path, http_port=9000, grpc_port=9000)
    with pytest.raises(ValueError, match="1..65535"):
        ServerSettings(repository=tmp_path, grpc_port=70000)
    with pytest.raises(ValueError, match="mode"):
        ServerSettings(repository=tmp_path, mode="docker")


def test_the_server_gets_a_fixed_malloc_threshold_unless_the_operator_set_one():
    env = bounded_allocator_env({"PATH": "/bin"})
    assert env["PATH"] == "/bin"
    assert int(env["MALLOC_MMAP_THRESHOLD_"]) < 64 * 1024  # below gRPC's read slices: each is unmapped when freed
    assert int(env["MALLOC_TRIM_THRESHOLD_"]) > 0
    assert bounded_allocator_env({"MALLOC_MMAP_THRESHOLD_": "999"})["MALLOC_MMAP_THRESHOLD_"] == "999"
    tuned = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
    assert bounded_allocator_env(tuned) == tuned


def test_command_uses_explicit_model_control_and_the_given_ports(tmp_path):
    s = settings(tmp_path, host="0.0.0.0")
    cmd = server_command(Path("/bin/tritonserver"), Path("/runtime"), Path("/backends"), s, "pixelport_triton_x_",
                         "KEY")
    assert "--model-control-mode=explicit" in cmd and "--load-model=*" in cmd and "--exit-on-error=false" in cmd
    assert {"--http-port=18000", "--grpc-port=18001", "--metrics-port=18002", "--grpc-address=0.0.0.0"} <= set(cmd)
    assert "--model-repository=/runtime" in cmd
    assert "--backend-config=python,shm-region-prefix-name=pixelport_triton_x_" in cmd
    restricted = "model-repository,logging,trace:pixelport-admin-key=KEY"
    assert {f"--http-restricted-api={restricted}", f"--grpc-restricted-protocol={restricted}"} <= set(cmd)
    assert "--grpc-infer-allocation-pool-size=0" in cmd  # no refused oversized request kept for reuse
    pooled = server_command(Path("/bin/tritonserver"), Path("/r"), Path("/b"),
                            settings(tmp_path, grpc_request_pool=8), "p_", "K")
    assert "--grpc-infer-allocation-pool-size=8" in pooled
    with pytest.raises(ValueError, match="--grpc-request-pool"):
        settings(tmp_path, grpc_request_pool=-1)


def test_embedded_env_carries_the_wheel_facts():
    env = embedded_env({"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/opt/lib"})
    assert env["LD_LIBRARY_PATH"].split(os.pathsep) == [sysconfig.get_config_var("LIBDIR"), "/opt/lib"]
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    import numpy

    site_dirs = env["PIXELPORT_SITE_PACKAGES"].split(os.pathsep)
    assert any(Path(numpy.__file__).is_relative_to(d) for d in site_dirs)


def test_backend_dir_links_the_stub_for_this_python(tmp_path):
    backends = prepare_backend_dir(wheel_dist_dir(), tmp_path / "backends")
    stub = backends / "python" / "triton_python_backend_stub"
    assert f"python_backend_stubs/{sys.version_info.major}.{sys.version_info.minor}/" in str(stub.resolve())
    assert (backends / "python" / "libtriton_python.so").resolve().is_file()


def test_mode_selection(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))  # no tritonserver on PATH
    mode, binary, backends = choose_mode(settings(tmp_path))
    assert mode == "embedded" and binary == wheel_dist_dir() / "bin" / "tritonserver" and backends is None
    with pytest.raises(ServingError, match="no full Triton"):
        choose_mode(settings(tmp_path, mode="external"))
    with pytest.raises(ServingError, match="no onnxruntime backend"):
        choose_mode(settings(tmp_path, tritonserver=wheel_dist_dir() / "bin" / "tritonserver"))
    # A full Triton's layout (bin/tritonserver beside backends/onnxruntime), as in the NGC container.
    full = tmp_path / "opt" / "tritonserver"
    (full / "bin").mkdir(parents=True)
    (full / "backends" / "onnxruntime").mkdir(parents=True)
    (full / "bin" / "tritonserver").write_text("#!/bin/sh\n")
    (full / "bin" / "tritonserver").chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", str(full / "bin"))
    assert choose_mode(settings(tmp_path)) == ("external", full / "bin" / "tritonserver", full / "backends")
    assert choose_mode(settings(tmp_path, mode="embedded"))[0] == "embedded"


def test_start_refuses_a_busy_port_before_launching(tmp_path):
    toys.publish(tmp_path / "repo", toys.depth_contract("d"), toys.depth_onnx(), 1)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ServingError, match=f"HTTP port {port} .*--http-port"):
            check_ports_free(settings(tmp_path, http_port=port))
        with pytest.raises(ServingError, match="not available"):
            start_server(settings(tmp_path, http_port=port))
    assert state_store.load(tmp_path / "state") is None


def test_state_round_trip_and_dead_pid(tmp_path):
    record = state_store.ServerState(pid=2 ** 22 + 7, host="0.0.0.0", http_port=1, grpc_port=2, metrics_port=3,
                                     mode="embedded", repository="/r", served_repository="/s", binary="/b",
                                     log_file="/l", shm_prefix="p_", skipped={"m": "why"})
    state_store.save(tmp_path, record)
    assert state_store.load(tmp_path) == record
    assert record.grpc_url == "127.0.0.1:2"  # a server on every interface is reached via loopback
    with pytest.raises(ServingError, match="not running"):
        state_store.require(tmp_path)
    assert not state_store.is_tritonserver(os.getpid())  # alive, but not a tritonserver


def test_shm_cleanup_takes_only_leftovers(tmp_path):
    dead_pid = 2 ** 22 + 11  # above the default pid_max: never a live process
    names = ["pixelport_triton_abc_1", f"pixelport_{dead_pid}_in", f"pixelport_{os.getpid()}_in",
             "pixelport_triton_other_1", "triton_python_backend_shm_region_x"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    removed = remove_shm_leftovers("pixelport_triton_abc_", shm_dir=tmp_path)
    assert sorted(removed) == sorted(["pixelport_triton_abc_1", f"pixelport_{dead_pid}_in"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(set(names) - set(removed))


def test_status_table_names_failures(tmp_path):
    record = state_store.ServerState(pid=1, host="127.0.0.1", http_port=1, grpc_port=2, metrics_port=3,
                                     mode="embedded", repository="/r", served_repository="/s", binary="/b",
                                     log_file="/l", shm_prefix="p_")
    text = format_status(record, [
        ModelStatus("good", "READY", ["2"], inference_count=8, execution_count=3, avg_queue_ms=0.5, avg_compute_ms=4.0),
        ModelStatus("bad", "UNAVAILABLE", [], reason="onnxruntime cannot load x"),
    ])
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.startswith(("good ", "bad "))}
    assert rows["good"] == ["good", "READY", "2", "8", "3", "0", "0.50", "4.00"]
    assert rows["bad"][:3] == ["bad", "UNAVAILABLE", "-"]
    assert text.splitlines()[-1] == "unavailable: bad: onnxruntime cannot load x"
    assert short_reason("Internal: boom\n  more\n\nAt:\n  model.py(1): f") == "Internal: boom more"


@pytest.mark.integration
def test_bounded_wait_stops_the_server_and_shows_its_log(toy_repository, server_settings_factory):
    settings = server_settings_factory(toy_repository, startup_timeout_s=0.5)
    with pytest.raises(ServingError, match=r"not ready after 0 s\n--- last lines of .*server.log ---"):
        start_server(settings)
    assert state_store.load(settings.state_dir) is None
    assert not [pid for pid in _tritonservers() if str(settings.state_dir) in _cmdline(pid)]
    assert not [pid for pid in _pids() if _cmdline(pid).startswith(f"{settings.state_dir}/")]  # no stub either


def test_relative_state_dir_is_made_absolute(tmp_path, monkeypatch):
    # The server runs with the state directory as its cwd: a relative one would point inside itself.
    monkeypatch.chdir(tmp_path)
    assert settings(tmp_path, state_dir="state").state_dir == tmp_path / "state"


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _tritonservers() -> list[int]:
    return [pid for pid in _pids() if state_store.is_tritonserver(pid)]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.parametrize("version,refused", [("1.26.4", False), ("2.0.0", True), ("2.3.1", True)])
def test_numpy_2_is_refused_before_the_stub_serves_empty_outputs(monkeypatch, version, refused):
    import importlib.metadata

    from serving import wheel

    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: version if name == "numpy" else real(name))
    if refused:
        with pytest.raises(ServingError, match=rf"NumPy 1\.x, this environment has {version}.*numpy<2"):
            wheel.check_numpy()
    else:
        wheel.check_numpy()
