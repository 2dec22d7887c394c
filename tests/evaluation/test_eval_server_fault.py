"""The server is SIGKILLed in the middle of a Triton evaluation. The run stops at the first image
whose retries found no server (exit 1, "could not finish"), instead of spending the retry budget
again on every image left, with every image done so far kept in its --state; the same command,
once the server is back, ends with the report an uninterrupted run writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evalkit import make_pixelport, publish_toy

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
IMAGES = 24


def report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def without_run(r: dict) -> dict:
    return {k: v for k, v in r.items() if k != "run"}


def test_server_sigkilled_mid_eval_then_back_resumes_to_the_same_report(tmp_path, own_server):
    repository = tmp_path / "repo"
    publish_toy(repository, "seg", "segmentation")
    data = make_pixelport(tmp_path / "data", n=IMAGES, sizes=(20, 28))
    server = own_server(repository)
    ports = dict(http_port=server.record.http_port, grpc_port=server.record.grpc_port,
                 metrics_port=server.record.metrics_port)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "evaluation", "eval", "--backend", "triton", "--url", server.grpc_url,
           "--model", "seg", "--data", str(data), "--pictures", "2"]
    subprocess.run(cmd + ["--out", str(tmp_path / "ref")], check=True, cwd=ROOT, env=env, capture_output=True,
                   timeout=300)

    state = tmp_path / "state.json"
    # --max-rate keeps the run slow enough to kill the server mid-way; --state-every 0 saves each image.
    resumable = cmd + ["--state", str(state), "--state-every", "0", "--max-rate", "8", "--out", str(tmp_path / "out")]
    proc = subprocess.Popen(resumable, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                done = len(json.loads(state.read_text())["done"])
            except (FileNotFoundError, json.JSONDecodeError):
                done = 0
            if done >= 5:
                break
            assert proc.poll() is None, "eval ended before the server could be killed"
            time.sleep(0.02)
        os.kill(server.pid, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == 1, stderr
    assert "stopped after" in stderr and "with the same --state to resume" in stderr, stderr
    assert not (tmp_path / "out" / "report.json").exists()  # no report for a run that could not finish
    killed_at = json.loads(state.read_text())
    assert not killed_at["complete"] and 5 <= len(killed_at["done"]) < IMAGES
    assert {f["stage"] for f in killed_at["failed"]} <= {"predict"}  # retried on resume

    back = own_server(repository, **ports)  # the same address: the same command resumes against it
    assert back.grpc_url == server.grpc_url
    resumed = subprocess.run(resumable, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    final = report(tmp_path / "out")
    assert final["run"]["resumed"] and final["run"]["evaluated_this_run"] == IMAGES - len(killed_at["done"])
    assert final["num_evaluated"] == IMAGES and final["num_failed"] == 0
    assert without_run(final) == without_run(report(tmp_path / "ref"))
