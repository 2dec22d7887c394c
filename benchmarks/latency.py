"""perf_analyzer-style latency/throughput of one served model over gRPC, across concurrency levels.

    python -m benchmarks latency --url 127.0.0.1:8001 --model NAME --concurrency 1,2,4,8 --out DIR

Warm-up, then measurement windows per level until three consecutive windows agree within 10 %
(or --windows is reached). The server's own queue/compute split comes from Triton's statistics
API as deltas over the measured windows.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import numpy as np
import tritonclient.grpc as grpcclient

from clients.client import DenseClient
from clients.contract import ModelContract

log = logging.getLogger(__name__)

STAT_FIELDS = ("queue", "compute_input", "compute_infer", "compute_output")


@dataclass
class LatencySettings:
    url: str
    model: str
    concurrency: tuple[int, ...] = (1, 2, 4, 8)
    shm: bool = False
    image_size: Optional[tuple[int, int]] = None  # random images of this HxW (before letterbox)
    images_dir: Optional[str] = None
    window_s: float = 2.0
    windows: int = 8  # the most windows per level
    min_windows: int = 3  # windows that must agree (perf_analyzer's stability criterion)
    stability: float = 0.10
    warmup_s: float = 1.0
    seed: int = 0


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


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


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


class RequestSource:
    """Prepared requests: the images are letterboxed per request, as a production client would."""

    def __init__(self, images: list[np.ndarray], contract: ModelContract) -> None:
        from clients import pipeline  # the client's own preprocessing, timed as part of the client

        self.images = images
        self.contract = contract
        self.pipeline = pipeline

    def prepare(self, i: int):
        batch, transforms = self.pipeline.preprocess([self.images[i % len(self.images)]], self.contract)
        return batch, transforms

    def finish(self, outputs: dict[str, np.ndarray], transforms) -> None:
        self.pipeline.postprocess(outputs, transforms, self.contract)


class TensorSource:
    """Already network-size tensors: no client pre/post-processing on the clock."""

    def __init__(self, batch: np.ndarray) -> None:
        self.batch = batch

    def prepare(self, i: int):
        return self.batch, None

    def finish(self, outputs: dict[str, np.ndarray], transforms) -> None:
        pass


def load_images(settings: LatencySettings) -> list[np.ndarray]:
    if settings.images_dir:
        from pathlib import Path

        from clients.images import load_image

        paths = sorted(p for p in Path(settings.images_dir).iterdir() if p.is_file())[:32]
        images = [load_image(str(p)) for p in paths]
        if not images:
            raise ValueError(f"no images in {settings.images_dir!r}")
        return images
    h, w = settings.image_size or (512, 512)
    rng = np.random.default_rng(settings.seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(4)]


class Worker(threading.Thread):
    """One closed-loop client: send, wait, record, repeat (perf_analyzer's concurrency mode)."""

    def __init__(self, make_infer: Callable[[], Callable], source: RequestSource, index: int,
                 stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.infer = make_infer()
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


def infer_factory(settings: LatencySettings) -> Callable[[], Callable]:
    """Each worker gets its own DenseClient (own channel, own shm regions), as separate production
    clients would; only its request path (`infer_tensors`) is on the clock as request time."""
    clients: list[DenseClient] = []

    def make():
        client = DenseClient(settings.url, settings.model, use_shm=settings.shm, retries=0)
        clients.append(client)
        return client.infer_tensors

    make.clients = clients  # closed by measure(), also on error
    return make


def run_level(settings: LatencySettings, concurrency: int, make_infer, source: RequestSource,
              stats_client) -> LevelResult:
    stop = threading.Event()
    workers = [Worker(make_infer, source, i, stop) for i in range(concurrency)]
    for w in workers:
        w.start()
    time.sleep(settings.warmup_s)
    window_stats: list[dict] = []
    stable = False
    snapshot = stats_client.get_inference_statistics(settings.model)
    while len(window_stats) < settings.windows:
        start = time.perf_counter()
        time.sleep(settings.window_s)
        end = time.perf_counter()
        after = stats_client.get_inference_statistics(settings.model)
        records = [r for w in workers for r in w.records if start <= r[0] < end]
        lat = [r[2] * 1e6 for r in records]
        window_stats.append({"records": records, "throughput": len(records) / (end - start),
                             "p50": percentile(lat, 50), "before": snapshot, "after": after})
        snapshot = after
        if any(w.error for w in workers):
            break
        recent = window_stats[-settings.min_windows:]
        if len(recent) == settings.min_windows and all(_agree([w[k] for w in recent], settings.stability)
                                                        for k in ("throughput", "p50")):
            stable = True
            break
    stop.set()
    for w in workers:
        w.join(timeout=60)
    errors = [w.error for w in workers if w.error]
    if errors:
        raise RuntimeError(f"model {settings.model!r} failed at concurrency {concurrency}: {errors[0]}")
    used = window_stats[-settings.min_windows:]
    records = [r for w in used for r in w["records"]]
    lat = [r[2] * 1e6 for r in records]
    seconds = settings.window_s * len(used)
    return LevelResult(
        concurrency=concurrency,
        throughput=len(records) / seconds,
        p50_us=percentile(lat, 50), p90_us=percentile(lat, 90), p95_us=percentile(lat, 95),
        p99_us=percentile(lat, 99), mean_us=float(np.mean(lat)) if lat else float("nan"),
        count=len(records), windows=len(window_stats), stable=stable,
        client_preprocess_us=float(np.mean([r[1] for r in records]) * 1e6) if records else float("nan"),
        client_postprocess_us=float(np.mean([r[3] for r in records]) * 1e6) if records else float("nan"),
        server_us=server_split(used[0]["before"], used[-1]["after"], settings.model),
        window_throughputs=[w["throughput"] for w in window_stats],
    )


def _agree(values: list[float], tolerance: float) -> bool:
    if any(v != v for v in values) or min(values) <= 0:
        return False
    return (max(values) - min(values)) / statistics.mean(values) <= tolerance


def measure(settings: LatencySettings) -> dict:
    probe = DenseClient(settings.url, settings.model, retries=2)  # clear errors: dead server, no model
    stats_client = grpcclient.InferenceServerClient(settings.url)
    make_infer = infer_factory(settings)
    try:
        source = RequestSource(load_images(settings), probe.contract)
        levels = []
        for c in settings.concurrency:
            result = run_level(settings, c, make_infer, source, stats_client)
            log.info("concurrency %d: %.1f infer/s, p50 %.0f us%s", c, result.throughput, result.p50_us,
                     "" if result.stable else " (not stable)")
            levels.append(result)
            for client in make_infer.clients:  # one level's workers never outlive it
                client.close()
            make_infer.clients.clear()
    finally:
        for client in make_infer.clients:
            client.close()
        stats_client.close()
        probe.close()
    return {"settings": asdict(settings), "model": settings.model, "task": probe.contract.task,
            "transport": "shm" if settings.shm else "grpc", "levels": [asdict(level) for level in levels]}
