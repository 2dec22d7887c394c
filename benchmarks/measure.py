"""The one measurement loop behind `latency`, `compare` and `crosscheck`: warm-up, timed windows
until they agree, percentiles, and Triton's own queue/compute split from its statistics API.

Closed-loop workers (perf_analyzer's concurrency mode) each own a DenseClient, as separate
production clients would; the statistics client is opened and closed in one place.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Protocol, Sequence

import numpy as np
import tritonclient.grpc as grpcclient

log = logging.getLogger(__name__)

STAT_FIELDS = ("queue", "compute_input", "compute_infer", "compute_output")


@dataclass(frozen=True)
class LoopSettings:
    """How long to warm up and measure each concurrency level."""

    window_s: float = 2.0
    max_windows: int = 8  # the most windows per level
    min_windows: int = 3  # windows that must agree (perf_analyzer's stability criterion)
    stability: float = 0.10
    warmup_s: float = 1.0
    # perf_analyzer's count_windows and --warmup-request-count: a window (or the warm-up) also lasts
    # until it holds this many requests, so a slow or busy server still fills every window.
    window_requests: int = 0
    warmup_requests: int = 0


@dataclass
class LevelResult:
    concurrency: int
    throughput: float  # inferences/s over the stable windows
    p50_us: float
    p90_us: float
    p95_us: float
    p99_us: float
    mean_us: float
    count: int
    windows: int
    stable: bool
    client_preprocess_us: float  # letterbox + tensor packing per request
    client_postprocess_us: float  # inverse letterbox per request
    server_us: dict[str, float] = field(default_factory=dict)  # per-request averages from Triton
    window_throughputs: list[float] = field(default_factory=list)


class Source(Protocol):
    """What a worker sends: `prepare(i)` -> (batch, transforms); `finish(outputs, transforms)`."""

    def prepare(self, i: int) -> tuple[np.ndarray, object]: ...

    def finish(self, outputs: dict[str, np.ndarray], transforms: object) -> None: ...


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if len(values) else float("nan")


def timed_calls(fn: Callable[[], object], calls: int) -> list[float]:
    """Wall time (ms) of `calls` consecutive calls of fn; warm up before calling this."""
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


@contextlib.contextmanager
def statistics_client(url: str) -> Iterator[grpcclient.InferenceServerClient]:
    """A gRPC client for Triton's statistics API, always closed."""
    client = grpcclient.InferenceServerClient(url)
    try:
        yield client
    finally:
        client.close()


def server_split(before, after, model: str) -> dict[str, float]:
    """Average per-request server time (µs) for each stage, from two statistics snapshots."""
    def totals(stats) -> dict[str, tuple[int, int]]:
        out = {f: (0, 0) for f in STAT_FIELDS}
        for ms in stats.model_stats:
            if ms.name != model:
                continue
            for f in STAT_FIELDS:
                d = getattr(ms.inference_stats, f)
                out[f] = (out[f][0] + d.count, out[f][1] + d.ns)
        return out

    b, a = totals(before), totals(after)
    split = {}
    for f in STAT_FIELDS:
        count = a[f][0] - b[f][0]
        split[f] = (a[f][1] - b[f][1]) / count / 1e3 if count else float("nan")
    return split


class Worker(threading.Thread):
    """One closed-loop client: send, wait, record, repeat (perf_analyzer's concurrency mode)."""

    def __init__(self, infer: Callable[[np.ndarray], dict], source: Source, index: int,
                 stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.infer = infer
        self.source = source
        self.index = index
        self.stop_event = stop
        self.records: list[tuple[float, float, float, float]] = []  # (end time, pre, request, post) s
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        i = self.index
        try:
            while not self.stop_event.is_set():
                t0 = time.perf_counter()
                batch, transforms = self.source.prepare(i)
                t1 = time.perf_counter()
                outputs = self.infer(batch)
                t2 = time.perf_counter()
                self.source.finish(outputs, transforms)
                t3 = time.perf_counter()
                self.records.append((t2, t1 - t0, t2 - t1, t3 - t2))
                i += 1
        except BaseException as exc:  # surfaced by the level runner; never swallowed
            self.error = exc


def _wait(workers: Sequence[Worker], since: float, seconds: float, requests: int) -> None:
    """Sleep `seconds`, then on until the workers finished `requests` calls after `since` (or one failed)."""
    time.sleep(seconds)
    while requests and not any(w.error for w in workers) and any(w.is_alive() for w in workers):
        if sum(1 for w in workers for r in w.records[-requests:] if r[0] >= since) >= requests:
            return
        time.sleep(0.005)


def _agree(values: list[float], tolerance: float) -> bool:
    if any(v != v for v in values) or min(values) <= 0:
        return False
    return (max(values) - min(values)) / statistics.mean(values) <= tolerance


def run_level(model: str, concurrency: int, infers: Sequence[Callable], source: Source, stats_client,
              loop: LoopSettings) -> LevelResult:
    """Warm up, then measure windows until `min_windows` in a row agree (or `max_windows`)."""
    stop = threading.Event()
    workers = [Worker(infers[i], source, i, stop) for i in range(concurrency)]
    for w in workers:
        w.start()
    _wait(workers, 0.0, loop.warmup_s, loop.warmup_requests)
    window_stats: list[dict] = []
    stable = False
    snapshot = stats_client.get_inference_statistics(model)
    while len(window_stats) < loop.max_windows:
        start = time.perf_counter()
        _wait(workers, start, loop.window_s, loop.window_requests)
        end = time.perf_counter()
        after = stats_client.get_inference_statistics(model)
        records = [r for w in workers for r in w.records if start <= r[0] < end]
        lat = [r[2] * 1e6 for r in records]
        window_stats.append({"records": records, "seconds": end - start, "throughput": len(records) / (end - start),
                             "p50": percentile(lat, 50), "before": snapshot, "after": after})
        snapshot = after
        if any(w.error for w in workers):
            break
        recent = window_stats[-loop.min_windows:]
        if len(recent) == loop.min_windows and all(_agree([w[k] for w in recent], loop.stability)
                                                    for k in ("throughput", "p50")):
            stable = True
            break
    stop.set()
    for w in workers:
        w.join(timeout=60)
    errors = [w.error for w in workers if w.error]
    if errors:
        raise RuntimeError(f"model {model!r} failed at concurrency {concurrency}: {errors[0]}")
    used = window_stats[-loop.min_windows:]
    return _level_result(model, concurrency, used, window_stats, stable)


def _level_result(model: str, concurrency: int, used: list[dict], window_stats: list[dict],
                  stable: bool) -> LevelResult:
    records = [r for w in used for r in w["records"]]
    lat = [r[2] * 1e6 for r in records]
    return LevelResult(
        concurrency=concurrency,
        throughput=len(records) / sum(w["seconds"] for w in used),
        p50_us=percentile(lat, 50), p90_us=percentile(lat, 90), p95_us=percentile(lat, 95),
        p99_us=percentile(lat, 99), mean_us=float(np.mean(lat)) if lat else float("nan"),
        count=len(records), windows=len(window_stats), stable=stable,
        client_preprocess_us=float(np.mean([r[1] for r in records]) * 1e6) if records else float("nan"),
        client_postprocess_us=float(np.mean([r[3] for r in records]) * 1e6) if records else float("nan"),
        server_us=server_split(used[0]["before"], used[-1]["after"], model),
        window_throughputs=[w["throughput"] for w in window_stats],
    )


def sweep(url: str, model: str, concurrency: Sequence[int], source: Source, loop: LoopSettings,
          shm: bool = False) -> list[LevelResult]:
    """run_level at each concurrency; each worker gets its own DenseClient (own channel, own shm
    regions), and one level's clients never outlive it. Only `infer_tensors` is request time."""
    from clients.client import DenseClient

    levels = []
    with statistics_client(url) as stats:
        for c in concurrency:
            clients: list[DenseClient] = []
            try:
                for _ in range(c):
                    clients.append(DenseClient(url, model, use_shm=shm, retries=0))
                result = run_level(model, c, [cl.infer_tensors for cl in clients], source, stats, loop)
            finally:
                for client in clients:
                    client.close()
            log.info("concurrency %d: %.1f infer/s, p50 %.0f us%s", c, result.throughput, result.p50_us,
                     "" if result.stable else " (not stable)")
            levels.append(result)
    return levels
