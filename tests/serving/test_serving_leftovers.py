"""No python-backend stub outlives its Triton: stop paths, a SIGKILLed server, and die_with_parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import serving_toys as toys
from serving import start_server
from serving import state as state_store
from serving.__main__ import main as serving_main
from serving.process import spawn
from serving.leftovers import STUB_NAME, kill_stub_leftovers

ROOT = Path(__file__).resolve().parents[2]


def live_processes_under(directory: Path) -> list[int]:
    """Pids of live (non-zombie) processes whose program path lies under `directory` (scans /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv0 = (entry / "cmdline").read_bytes().split(b"\0", 1)[0].decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except (OSError, ValueError):
            continue
        if state not in "ZX" and argv0.startswith(f"{directory}/"):
            found.append(int(entry.name))
    return found


def wait_gone(process: subprocess.Popen | int, timeout_s: float = 10.0) -> bool:
    pid = process if isinstance(process, int) else process.pid
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if isinstance(process, subprocess.Popen) and process.poll() is not None:
            return True
        if not live_pids({pid}):
            return True
        time.sleep(0.05)
    return False


def live_pids(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] not in "ZX":
                alive.add(pid)
        except OSError:
            pass
    return alive


def fake_program(path: Path, target: str = "/bin/sleep") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)
    return path


# ---- the cleanup itself, on stand-in processes ----------------------------------------------------
def test_kill_takes_the_stubs_of_a_gone_server_and_nothing_else(tmp_path):
    state_dir = tmp_path / "state"
    ours = fake_program(state_dir / "backends" / "python" / STUB_NAME)
    elsewhere = fake_program(tmp_path / "full" / "backends" / "python" / STUB_NAME)
    a_tritonserver = fake_program(tmp_path / "bin" / "tritonserver", "/bin/sh")
    started: list[subprocess.Popen] = []

    def start(*argv) -> subprocess.Popen:
        started.append(subprocess.Popen([str(a) for a in argv], start_new_session=True))
        return started[-1]

    try:
        orphan = start(ours, "30")  # runs from our state dir; its parent is no tritonserver
        # A stub of a full Triton (external mode): only its process group says whose it is.
        leader = start("/bin/sh", "-c", f"{elsewhere} 30 & wait")
        grouped = _wait_child(leader.pid)
        leader.kill()
        leader.wait()  # the server is gone; its stub lives on in its process group
        # A live tritonserver's own stub, and another server's stub: neither may be touched.
        running = start(a_tritonserver, "-c", f"{ours} 30 & wait")
        served = _wait_child(running.pid)
        other = start(elsewhere, "30")

        killed = kill_stub_leftovers(state_dir, server_pid=leader.pid)

        assert sorted(killed) == sorted([orphan.pid, grouped])
        assert not live_pids({orphan.pid, grouped})
        assert live_pids({served, other.pid}) == {served, other.pid}
        assert kill_stub_leftovers(state_dir, server_pid=leader.pid) == []
    finally:
        for process in started:  # each leads its own group: this takes its children too
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()


def _wait_child(parent: int, timeout_s: float = 10.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[-1].split()[1]) == parent:
                    return int(entry.name)
            except (OSError, ValueError):
                continue
        time.sleep(0.02)
    raise AssertionError(f"pid {parent} started no child")


# ---- die_with_parent follows the process, not the starting thread -----------------------------------
def test_die_with_parent_survives_the_starting_thread():
    box = {}
    worker = threading.Thread(target=lambda: box.update(process=spawn(["sleep", "30"], die_with_parent=True)))
    worker.start()
    worker.join()
    process = box["process"]
    try:
        time.sleep(0.5)  # PR_SET_PDEATHSIG fires at once when the forking thread exits
        assert process.poll() is None, f"the child died with its starting thread (exit {process.returncode})"
    finally:
        process.kill()
        process.wait()


def test_die_with_parent_still_fires_when_the_process_exits():
    # The child must not hold our stdout pipe, or run() would wait for it.
    code = ("import subprocess; from serving.process import spawn; print(spawn(['sleep', '30'], "
            "die_with_parent=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid, flush=True)")
    parent = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert parent.returncode == 0, parent.stderr
    child = int(parent.stdout.split()[-1])
    assert wait_gone(child), f"sleep (pid {child}) outlived the process that started it"


# ---- the real server ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def one_model_repository(tmp_path_factory) -> Path:
    """One small model: the quickest real server to start (and stop) again and again."""
    repository = tmp_path_factory.mktemp("one") / "model_repository"
    toys.publish(repository, toys.depth_contract("depth"), toys.depth_onnx(seed=1), version=1)
    return repository


def _started(repository: Path, server_settings_factory):
    server = start_server(server_settings_factory(repository))
    stubs = live_processes_under(server.state_dir)
    assert stubs, "the python backend should run one stub per model instance from the state directory"
    return server, stubs


@pytest.mark.integration
def test_cli_stop_after_a_sigkilled_server_leaves_no_stub(one_model_repository, server_settings_factory, capsys):
    server, stubs = _started(one_model_repository, server_settings_factory)
    try:
        os.kill(server.pid, signal.SIGKILL)  # no clean shutdown: Triton cannot stop its stubs
        assert wait_gone(server.pid)
        # `python -m serving stop` from elsewhere: it does not hold the server's Popen, so the dead
        # server stays an unreaped zombie, which the stubs take for a live parent.
        assert serving_main(["stop", "--state-dir", str(server.state_dir)]) == 0
        assert "was not running" in capsys.readouterr().out
        assert live_processes_under(server.state_dir) == []
        assert not [p for p in Path("/dev/shm").iterdir() if p.name.startswith(server.record.shm_prefix)]
        assert state_store.load(server.state_dir) is None
    finally:
        server.stop()  # reaps the zombie; kills anything still left
    assert not live_pids(set(stubs))


@pytest.mark.integration
@pytest.mark.parametrize("timeout_s", [None, 0.01], ids=["sigterm", "escalated-to-sigkill"])
def test_stop_leaves_no_stub(one_model_repository, server_settings_factory, timeout_s):
    server, stubs = _started(one_model_repository, server_settings_factory)
    try:
        server.stop(timeout_s=timeout_s)
        assert not server.is_alive()
        assert live_processes_under(server.state_dir) == []
        assert not live_pids(set(stubs))
    finally:
        server.stop()
