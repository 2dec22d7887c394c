"""`benchmarks soak`: bounded, loopback only, and a report that accounts for every request. Never timings."""

from __future__ import annotations

import json
import os

import pytest

from benchmarks.__main__ import main as bench_main
from benchmarks.soak import SoakSettings, check_loopback, peak_growth, server_processes, windows


@pytest.mark.parametrize("url", ["127.0.0.1:8001", "localhost:8001", "[::1]:8001", "grpc://127.0.0.2:9"])
def test_loopback_urls_are_accepted(url):
    assert check_loopback(url)


@pytest.mark.parametrize("url", ["10.1.2.3:8001", "example.com:8001", "0.0.0.0:8001", "127.0.0.1:1,127.0.0.1:2"])
def test_other_urls_are_refused(url):
    with pytest.raises(ValueError, match="loopback|one server URL"):
        SoakSettings(url=url, model="m")


@pytest.mark.parametrize("field, value, flag", [("clients", 0, "--clients"), ("clients", 65, "--clients"),
                                                ("duration_s", 0, "--duration"), ("duration_s", 1e5, "--duration"),
                                                ("max_requests", 0, "--max-requests")])
def test_count_and_time_are_bounded(field, value, flag):
    with pytest.raises(ValueError, match=flag):
        SoakSettings(url="127.0.0.1:8001", model="m", **{field: value})


def test_windows_put_late_requests_in_the_last_one():
    # (end time, latency s, client kind, error kind)
    records = [(0.5, 0.01, "sync", None), (1.5, 0.02, "async", None), (2.1, 0.03, "sync", "Boom")]
    win = windows(records, 0.0, 2.0, 1.0)
    assert [w["requests"] for w in win] == [1, 2]
    assert [w["errors"] for w in win] == [0, 1]
    assert win[1]["p50_ms"] == pytest.approx(20.0)  # errors are counted, not timed


def test_memory_growth_compares_the_peaks_of_the_first_and_last_full_windows():
    """A leak raises every window's high-water mark; memory a model stub takes and gives back between
    two instants does not (two single readings 5 s and 60 s in swung from +0.1 % to +14.8 %)."""
    records = [(t + 0.5, 0.01, "sync", None) for t in range(3)]
    # (time, server total kB, client kB): window 0 peaks at 120, window 2 at 126 (dips do not count)
    samples = [(0.2, 100, 10), (0.6, 120, 12), (1.1, 90, 11), (1.7, 150, 11), (2.3, 80, 12), (2.9, 126, 15)]
    win = windows(records, 0.0, 3.0, 1.0, samples)
    assert [w["server_rss_peak_kb"] for w in win] == [120, 150, 126]
    assert [w["client_rss_peak_kb"] for w in win] == [12, 11, 15]
    assert peak_growth(win, "server_rss_peak_kb", 1.0) == pytest.approx(0.05)
    assert peak_growth(win, "client_rss_peak_kb", 1.0) == pytest.approx(0.25)
    assert windows(records, 0.0, 3.0, 1.0, [])[0]["server_rss_peak_kb"] is None
    assert peak_growth(win[:1], "server_rss_peak_kb", 1.0) is None  # one window: nothing to compare
    short = windows(records, 0.0, 2.5, 1.0, samples)  # the last window is half long: it is not compared
    assert peak_growth(short, "server_rss_peak_kb", 1.0) == pytest.approx(0.25)


@pytest.mark.integration
def test_soak_two_clients_few_seconds(triton_server, tmp_path, capsys):
    out = tmp_path / "soak"
    rc = bench_main(["soak", "--url", triton_server.grpc_url, "--model", "seg_unet", "--clients", "2",
                     "--duration", "3", "--window-s", "1", "--warmup-s", "0.5", "--out", str(out)])
    result = json.loads((out / "soak.json").read_text())
    assert rc == 0, result["first_error_by_kind"]
    assert result["errors"] == 0 and result["errors_by_kind"] == {}
    # One sync thread and one asyncio client both ran; every request is in some window.
    assert result["requests_by_client_kind"]["sync"] > 0 and result["requests_by_client_kind"]["async"] > 0
    assert sum(w["requests"] for w in result["windows"]) == result["measured_requests"] > 0
    assert len(result["windows"]) == 3
    # The session server and its seg_unet stub are found in /proc, with their memory.
    pids = result["server_pids"]
    assert pids["server"] == triton_server.pid and pids["stubs"]
    for phase in ("start", "after_warmup", "end"):
        assert result["memory"][phase]["server_total_rss_kb"] > 0
        assert result["memory"][phase]["client_rss_kb"] > 0
    # Memory is sampled four times a window; a window a starved sampler missed has no peak.
    peaks = [(w["server_rss_peak_kb"], w["client_rss_peak_kb"]) for w in result["windows"]]
    assert sum(s is not None and s > 0 and c is not None and c > 0 for s, c in peaks) >= 2, peaks
    assert result["server_rss_growth"] is not None and result["client_rss_growth"] is not None
    assert result["leftover_regions"] == 0
    assert "PASS" in capsys.readouterr().out


@pytest.mark.integration
def test_soak_over_shared_memory_leaves_nothing_in_dev_shm(triton_server, tmp_path):
    from clients.shm import region_prefix

    rc = bench_main(["soak", "--url", triton_server.grpc_url, "--model", "depth_unet", "--clients", "2", "--shm",
                     "--duration", "2", "--window-s", "1", "--warmup-s", "0.5", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "soak.json").read_text())
    assert result["transport"] == "shm" and result["errors"] == 0, result["first_error_by_kind"]
    assert result["shm_leftovers"]["dev_shm"] == []
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(region_prefix())]
    # Server-side registrations are reported (a region Triton still holds when the client closes
    # stays registered until the next client's sweep), and the exit code says so.
    assert rc == (0 if result["leftover_regions"] == 0 else 1)


def test_server_processes_is_empty_without_a_server_on_that_port():
    assert server_processes("127.0.0.1:1", "m") == {}
