"""kill -9 an export mid-way (a real subprocess) and check the repository a Triton would read:
no numeric version without a complete model, no broken config, no stray model directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clients.contract import CONFIG_FILE
from export import ExportSettings, export_model
from export_helpers import ROOT, USER_MODELS, assert_repository_consistent

ARGS = ["--module", f"{USER_MODELS}:TinyNet", "--num-classes", "3", "--resize", "letterbox:32x32"]


def export_tiny(repo: Path) -> int:
    """The same export, in-process (no interpreter start-up)."""
    return export_model(ExportSettings(name="tiny", repository=str(repo), module=f"{USER_MODELS}:TinyNet",
                                       num_classes=3, resize="letterbox:32x32")).version


def export_killed_at(repo: Path, name: str, marker: str, delay: float = 0.0) -> str:
    """Start an export, SIGKILL it `delay` s after its log shows `marker`; return the log."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "export", "--name", name, "--repository", str(repo), *ARGS],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=str(ROOT), env=env)
    log = []
    try:
        for line in proc.stderr:
            log.append(line)
            if marker in line:
                time.sleep(delay)
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        if proc.poll() is None and not any(marker in line for line in log):
            proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the export was not killed at {marker!r}:\n{''.join(log)}"
    return "".join(log)


@pytest.mark.slow
def test_sigkill_at_any_phase_leaves_no_partial_version(tmp_path):
    repo = tmp_path / "repo"
    assert export_tiny(repo) == 1
    published = [("tiny", 1)]

    # an existing model: staging lives inside tiny/ as a hidden, non-numeric directory
    for marker, delay in [("built TinyNet", 1.0), ("exported ONNX", 0.0), ("parity passed", 0.0)]:
        config_before = (repo / "tiny" / CONFIG_FILE).read_text()
        export_killed_at(repo, "tiny", marker, delay)
        seen = assert_repository_consistent(repo)
        # a kill right after "parity passed" may land after the final rename: then the version
        # is there, whole, with its config -- never half of it
        finished = seen == published + [("tiny", published[-1][1] + 1)]
        assert seen == published or finished, f"after a kill at {marker!r} + {delay} s: {seen}"
        if finished:
            published = seen
        else:
            assert (repo / "tiny" / CONFIG_FILE).read_text() == config_before
        leftovers = [p.name for p in (repo / "tiny").iterdir() if not p.name.isdigit()
                     and p.name not in (CONFIG_FILE, "labels.txt")]
        assert all(name.startswith(".") for name in leftovers), leftovers

    # a brand-new model appears whole or not at all
    export_killed_at(repo, "fresh", "parity passed")
    fresh = [m for m in assert_repository_consistent(repo) if m[0] == "fresh"]
    assert fresh in ([], [("fresh", 1)])

    # the next export cleans up after the killed ones and publishes the next version
    assert export_tiny(repo) == published[-1][1] + 1
    versions = [str(v) for m, v in assert_repository_consistent(repo) if m == "tiny"]
    assert sorted(p.name for p in (repo / "tiny").iterdir()) == sorted(versions + [CONFIG_FILE, "labels.txt"])
    assert not list(tmp_path.glob(".pixelport-staging-*")), "the killed new model's staging is gone too"
