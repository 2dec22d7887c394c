"""`benchmarks crosscheck`: perf_analyzer beside pixelport's own loop. Fields and plumbing, never timings."""

from __future__ import annotations

import json
import math
import subprocess

import pytest

from benchmarks.__main__ import main as bench_main
from benchmarks.crosscheck import (METRICS, CrosscheckSettings, find_perf_analyzer, perf_analyzer_command,
                                   run_perf_analyzer)
from clients.contract import ModelContract, Resize


def _perf_analyzer_or_skip() -> str:
    try:
        binary = find_perf_analyzer()
    except FileNotFoundError as exc:
        pytest.skip(f"perf_analyzer is not available: {exc}")
    # The shared wrapper sets itself up on first use (downloads); a host where that fails has none.
    proc = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.skip(f"perf_analyzer at {binary} does not run: {(proc.stdout + proc.stderr).strip()[-300:]}")
    return binary


def test_command_sends_the_served_layout_at_the_asked_shape():
    contract = ModelContract(name="m", task="segmentation", resize=Resize("letterbox", 64, 96), num_classes=3)
    s = CrosscheckSettings(url="127.0.0.1:8001", model="m", window_s=0.5, windows=4, stability=0.2)
    cmd = perf_analyzer_command("pa", s, contract, (32, 48), 3, "/tmp/x.csv")
    joined = " ".join(cmd)
    assert "--shape image:32,48,3" in joined and "--concurrency-range 3:3" in joined
    assert "--measurement-interval 500" in joined and "--max-trials 4" in joined
    assert "--stability-percentage 20" in joined and "-b 1" in joined
    assert "--warmup-request-count 10" in joined and "--measurement-mode" not in joined


def test_count_windows_and_warmup_go_to_both_tools():
    contract = ModelContract(name="m", task="segmentation", resize=Resize("letterbox", 64, 96), num_classes=3)
    s = CrosscheckSettings(url="127.0.0.1:8001", model="m", window_requests=25, warmup_requests=7)
    joined = " ".join(perf_analyzer_command("pa", s, contract, (64, 96), 1, "/tmp/x.csv"))
    assert "--measurement-mode count_windows --measurement-request-count 25" in joined
    assert "--warmup-request-count 7" in joined
    assert (s.loop.window_requests, s.loop.warmup_requests, s.loop.warmup_s) == (25, 7, 0.0)


def test_a_run_that_writes_no_csv_is_an_error_with_its_output(tmp_path):
    # perf_analyzer exits 0 when it cannot stabilise or its workers fail: the missing CSV is the signal.
    fake = tmp_path / "pa"
    fake.write_text("#!/bin/sh\necho 'Failed to obtain stable measurement.'\nexit 0\n")
    fake.chmod(0o755)
    with pytest.raises(RuntimeError, match="--window-s") as info:
        run_perf_analyzer([str(fake)], str(tmp_path / "none.csv"), timeout_s=30)
    assert "Failed to obtain stable measurement" in str(info.value)


def test_an_explicit_binary_that_is_not_there_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an executable"):
        find_perf_analyzer(str(tmp_path / "missing"))


@pytest.mark.integration
def test_crosscheck_runs_both_tools_side_by_side(triton_server, tmp_path, capsys):
    binary = _perf_analyzer_or_skip()
    out = tmp_path / "cc"
    # The plumbing on a shared, noisy machine, not the numbers: count windows, so a busy moment
    # cannot leave a window with one request (CI once failed that way), and a stability rule no
    # load can break (perf_analyzer wants max/min <= 1 + rule over three windows; at a load of 6 on
    # two cores, 11x between windows happened).
    rc = bench_main(["crosscheck", "--url", triton_server.grpc_url, "--model", "seg_unet", "--perf-analyzer", binary,
                     "--concurrency", "1,2", "--window-s", "0.2", "--windows", "5", "--window-requests", "10",
                     "--stability", "1000", "--out", str(out)])
    assert rc == 0
    result = json.loads((out / "crosscheck.json").read_text())
    assert result["shape"] == [64, 64]  # the model's own letterbox size
    assert [lv["concurrency"] for lv in result["perf_analyzer"]["levels"]] == [1, 2]
    assert [lv["concurrency"] for lv in result["pixelport"]["levels"]] == [1, 2]
    assert len(result["rows"]) == 2 * len(METRICS)
    for row in result["rows"]:
        if row["metric"].startswith(("p50", "throughput", "server compute")):
            assert row["perf_analyzer"] > 0 and row["pixelport"] > 0 and math.isfinite(row["ratio"])
    for c in (1, 2):
        assert (out / f"perf_analyzer_c{c}.csv").read_text().startswith("Concurrency,")
    assert "pixelport / perf_analyzer" in capsys.readouterr().out


@pytest.mark.integration
def test_crosscheck_refuses_a_shape_over_the_model_limit(triton_server, tmp_path, capsys):
    _perf_analyzer_or_skip()
    rc = bench_main(["crosscheck", "--url", triton_server.grpc_url, "--model", "seg_unet", "--shape", "4000x4000",
                     "--out", str(tmp_path)])
    assert rc == 2
    assert "limit" in capsys.readouterr().err
