"""Benchmarks in a tiny configuration: the files and fields they write, never their timings."""

from __future__ import annotations

import csv
import json

import pytest

from benchmarks.__main__ import main as bench_main
from benchmarks.report import CSV_COLUMNS

pytestmark = pytest.mark.integration


def test_latency_writes_perf_analyzer_csv_json_and_plot(triton_server, tmp_path, capsys):
    out = tmp_path / "lat"
    rc = bench_main(["latency", "--url", triton_server.grpc_url, "--model", "seg_unet", "--concurrency", "1,2",
                     "--image-size", "48x80", "--window-s", "0.3", "--windows", "3", "--out", str(out)])
    assert rc == 0
    with open(out / "latency.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == CSV_COLUMNS
    assert [int(r[0]) for r in rows[1:]] == [1, 2]
    result = json.loads((out / "latency.json").read_text())
    for level in result["levels"]:
        assert level["count"] > 0 and level["throughput"] > 0
        assert level["p50_us"] <= level["p90_us"] <= level["p95_us"] <= level["p99_us"]
        # Triton's own split is read from its statistics API: a real server always queues and computes.
        assert level["server_us"]["compute_infer"] > 0
    assert (out / "latency.png").stat().st_size > 0
    assert "Inferences/Second" in capsys.readouterr().out


def test_latency_over_shared_memory_leaves_no_region(triton_server, tmp_path):
    import os

    from clients.shm import region_prefix

    # Only this process's regions: other test sessions on the host make and free their own.
    before = {n for n in os.listdir("/dev/shm") if n.startswith(region_prefix())}
    rc = bench_main(["latency", "--url", triton_server.grpc_url, "--model", "depth_unet", "--concurrency", "2",
                     "--shm", "--image-size", "64x64", "--window-s", "0.3", "--windows", "3",
                     "--out", str(tmp_path / "shm")])
    assert rc == 0
    assert json.loads((tmp_path / "shm" / "latency.json").read_text())["transport"] == "shm"
    after = {n for n in os.listdir("/dev/shm") if n.startswith(region_prefix())}
    assert after <= before


def test_latency_names_a_missing_model(triton_server, tmp_path, capsys):
    rc = bench_main(["latency", "--url", triton_server.grpc_url, "--model", "nope", "--out", str(tmp_path)])
    assert rc == 2
    assert "nope" in capsys.readouterr().err


@pytest.mark.slow
def test_compare_tiny_run_writes_json_table_and_chart(zoo_checkpoints, zoo_dataset, tmp_path):
    from benchmarks.crosscheck import find_perf_analyzer

    try:  # a clone without ../shared/tools has no perf_analyzer: compare then runs without it
        pa_flag = ["--perf-analyzer", find_perf_analyzer()]
    except FileNotFoundError:
        pa_flag = []
    out = tmp_path / "cmp"
    # larger than the checkpoint's own 64x64: compare serves its models at the compared size, which
    # a model published at the checkpoint's letterbox size would refuse (its max_size bound)
    rc = bench_main(["compare", "--checkpoint", str(zoo_checkpoints["seg_unet"]), "--image-size", "72x96",
                     "--batch", "1,2", "--rounds", "2", "--iters", "1", "--precisions", "fp16",
                     "--concurrency", "1,2", "--window-s", "0.3", "--windows", "3", "--data", str(zoo_dataset),
                     "--eval-images", "2", *pa_flag, "--stability", "1000", "--out", str(out)])
    assert rc == 0
    result = json.loads((out / "compare.json").read_text())
    # perf_analyzer's served p50 beside ours (where this host has it), and the efficiency against the GEMM rate
    if pa_flag:
        assert result["perf_analyzer"]["p50_ms"] > 0
        assert result["ratios"]["served_grpc_over_onnxruntime_p50_by_perf_analyzer"] > 0
    else:
        assert "perf_analyzer" not in result
    efficiency = result["efficiency"]
    assert efficiency["model_gflop_per_image"] > 0 and 0 < efficiency["fraction_of_gemm_peak"] < 10
    assert result["seconds_waiting_for_idle"] >= 0
    variants = {r["variant"] for r in result["rows"]}
    assert variants == {"pytorch eager", "onnxruntime fp32", "onnxruntime fp16", "triton grpc", "triton shm",
                        "triton grpc f32 in", "triton grpc logits out"}
    assert {r["batch"] for r in result["rows"]} == {1, 2}
    for key in ("served_grpc_over_onnxruntime_p50", "served_shm_over_onnxruntime_p50",
                "served_best_throughput_over_onnxruntime_best_batch", "onnxruntime_speedup_over_pytorch",
                "float32_input_over_uint8_input", "logits_output_over_labels_output"):
        assert result["ratios"][key] > 0
    # Speed and accuracy side by side: every variant of one fp32 model scores the same mIoU.
    fp32 = [r["mIoU"] for r in result["rows"] if r["variant"] != "onnxruntime fp16"]
    assert max(fp32) - min(fp32) <= 1e-3
    assert "| variant |" in (out / "compare.md").read_text()
    assert (out / "compare.png").stat().st_size > 0
