"""Soak a served model on this host: many sync and async clients, mixed image sizes, bounded in
clients, time and requests, and what the run leaves behind.

Reports requests, errors by kind, p50/p99 per window, the RSS of tritonserver and of the model's
python-backend stubs (found in /proc by the server's gRPC port) and of this client at start and
end and its peak in each window (memory growth compares the first and last full windows' peaks),
and shared-memory regions left registered on the server or in /dev/shm. Loopback only: it
reads the server's memory from /proc, and a soak is not a load test against someone else's host.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from clients.aio import AsyncDenseClient
from clients.client import DenseClient, parse_urls, split_url
from clients.shm import SHM_DIR, region_prefix

from .measure import percentile, statistics_client

log = logging.getLogger(__name__)

MAX_CLIENTS = 64
MAX_DURATION_S = 3600.0
MAX_REQUESTS = 1_000_000
# Mixed shapes a production client sees: small, odd, wide, tall, portrait and a VGA-ish frame.
DEFAULT_SIZES = ((48, 64), (64, 64), (97, 131), (37, 300), (300, 41), (240, 320), (480, 640))
LOOPBACK_NAMES = ("localhost",)


@dataclass
class SoakSettings:
    url: str
    model: str
    clients: int = 8  # even indices are sync DenseClient threads, odd ones AsyncDenseClient tasks
    duration_s: float = 60.0
    shm: bool = False
    window_s: float = 10.0
    warmup_s: float = 5.0  # before the clock: allocations, first shapes; errors still count
    max_requests: int = MAX_REQUESTS
    timeout_s: float = 30.0  # per request
    sizes: tuple[tuple[int, int], ...] = DEFAULT_SIZES
    seed: int = 0

    def __post_init__(self) -> None:
        check_loopback(self.url)
        if not 1 <= self.clients <= MAX_CLIENTS:
            raise ValueError(f"--clients must be 1..{MAX_CLIENTS}, got {self.clients}")
        if not 0 < self.duration_s <= MAX_DURATION_S:
            raise ValueError(f"--duration must be in (0, {MAX_DURATION_S:.0f}] seconds, got {self.duration_s}")
        if not 1 <= self.max_requests <= MAX_REQUESTS:
            raise ValueError(f"--max-requests must be 1..{MAX_REQUESTS}, got {self.max_requests}")
        if self.window_s <= 0 or self.warmup_s < 0 or self.timeout_s <= 0:
            raise ValueError("--window-s and --timeout-s must be > 0, --warmup-s >= 0")
        if not self.sizes:
            raise ValueError("give at least one image size")


def url_host(url: str) -> str:
    target = split_url(url)[0]
    host = target.rsplit(":", 1)[0]
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def check_loopback(url: str) -> str:
    """The one server URL, if it is on this host's loopback; ValueError naming the fix otherwise."""
    urls = parse_urls(url)
    if len(urls) != 1:
        raise ValueError(f"soak takes one server URL, got {len(urls)}: {url!r}")
    host = url_host(urls[0])
    try:
        loopback = host.lower() in LOOPBACK_NAMES or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"soak runs only against a server on this host's loopback (127.0.0.1, ::1, localhost), "
                         f"got {host!r}: it reads the server's memory from /proc and /dev/shm")
    return urls[0]


# ---- what the server and this process hold --------------------------------------------------------
def rss_kb(pid: int) -> Optional[int]:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def server_processes(url: str, model: str) -> dict:
    """{"server": pid, "stubs": [pids of `model`'s python-backend stubs]}, found in /proc: the
    tritonserver whose --grpc-port is the URL's port (8001 when it gives none), and its children
    that run `<model>/<version>/model.py`. Empty when no such server runs here (e.g. in a container)."""
    from serving.leftovers import processes
    from serving.wheel import STUB_NAME

    port = split_url(url)[0].rsplit(":", 1)[1]
    procs = list(processes())
    server = None
    for p in procs:
        if os.path.basename(p.argv[0]) != "tritonserver":
            continue
        ports = [a.split("=", 1)[1] for a in p.argv if a.startswith("--grpc-port=")]
        if (ports[-1] if ports else "8001") == port:
            server = p.pid
    if server is None:
        return {}
    stubs = [p.pid for p in procs if p.ppid == server and os.path.basename(p.argv[0]) == STUB_NAME
             and len(p.argv) > 1 and Path(p.argv[1]).parts[-3:-2] == (model,)]
    return {"server": server, "stubs": sorted(stubs)}


def memory_snapshot(pids: dict) -> dict:
    server = rss_kb(pids["server"]) if pids else None
    stubs = {str(pid): rss_kb(pid) for pid in pids.get("stubs", [])}
    total = None if server is None else server + sum(v for v in stubs.values() if v)
    return {"client_rss_kb": rss_kb(os.getpid()), "server_rss_kb": server, "stub_rss_kb": stubs,
            "server_total_rss_kb": total}


def shm_leftovers(url: str) -> dict:
    """This process's client regions still registered on the server or present in /dev/shm."""
    prefix = region_prefix()
    with statistics_client(url) as client:
        status = client.get_system_shared_memory_status(as_json=True)
    registered = sorted(status.get("regions", {}))
    return {"server_registered": [n for n in registered if n.startswith(prefix)],
            "server_registered_total": len(registered),
            "dev_shm": sorted(n for n in os.listdir(SHM_DIR) if n.startswith(prefix))}


# ---- the clients --------------------------------------------------------------------------------
@dataclass
class Ledger:
    """Every request, from every client: (end time, latency s, client kind, error kind or None)."""

    deadline: float
    max_requests: int
    records: list[tuple[float, float, str, Optional[str]]] = field(default_factory=list)
    first_error: dict[str, str] = field(default_factory=dict)
    _count: itertools.count = field(default_factory=itertools.count)

    def take(self) -> Optional[int]:
        """The next request's index, or None when time or the request budget is spent."""
        i = next(self._count)  # atomic under the GIL
        return i if i < self.max_requests and time.perf_counter() < self.deadline else None

    def add(self, t0: float, kind: str, error: Optional[BaseException] = None, what: str = "") -> None:
        end = time.perf_counter()
        name = None
        if error is not None or what:
            status = getattr(error, "status", "")
            name = what or type(error).__name__ + (f"/{status}" if status else "")
            self.first_error.setdefault(name, str(error) if error is not None else what)
        self.records.append((end, end - t0, kind, name))


def _check(pred, image: np.ndarray) -> str:
    return "" if tuple(pred.shape) == image.shape[:2] else "wrong_output_shape"


def _sync_client(s: SoakSettings, images: list[np.ndarray], ledger: Ledger) -> None:
    t0 = time.perf_counter()
    try:
        client = DenseClient(s.url, s.model, use_shm=s.shm, retries=0, timeout_s=s.timeout_s)
    except Exception as exc:  # counted, like any request that fails
        ledger.add(t0, "sync", exc)
        return
    try:
        while (i := ledger.take()) is not None:
            image = images[i % len(images)]
            t0 = time.perf_counter()
            try:
                pred = client.predict(image, f"soak {i}")
            except Exception as exc:
                ledger.add(t0, "sync", exc)
            else:
                ledger.add(t0, "sync", what=_check(pred, image))
    finally:
        client.close()


async def _async_client(s: SoakSettings, images: list[np.ndarray], ledger: Ledger) -> None:
    t0 = time.perf_counter()
    client = AsyncDenseClient(s.url, s.model, concurrency=1, use_shm=s.shm, retries=0, timeout_s=s.timeout_s)
    try:
        await client.connect()
        while (i := ledger.take()) is not None:
            image = images[i % len(images)]
            t0 = time.perf_counter()
            try:
                pred = await client.predict(image, f"soak {i}")
            except Exception as exc:
                ledger.add(t0, "async", exc)
            else:
                ledger.add(t0, "async", what=_check(pred, image))
    except Exception as exc:  # connect failed
        ledger.add(t0, "async", exc)
    finally:
        await client.close()


def _async_clients(s: SoakSettings, count: int, images: list[np.ndarray], ledger: Ledger) -> None:
    async def main() -> None:
        await asyncio.gather(*(_async_client(s, images, ledger) for _ in range(count)))

    asyncio.run(main())


def run_clients(s: SoakSettings, images: list[np.ndarray], ledger: Ledger) -> None:
    n_async = s.clients // 2
    threads = [threading.Thread(target=_sync_client, args=(s, images, ledger), daemon=True)
               for _ in range(s.clients - n_async)]
    if n_async:
        threads.append(threading.Thread(target=_async_clients, args=(s, n_async, images, ledger), daemon=True))
    for t in threads:
        t.start()
    for t in threads:  # each request is bounded by timeout_s, so this ends soon after the deadline
        t.join(timeout=max(0.0, ledger.deadline - time.perf_counter()) + 2 * s.timeout_s + 30)
    alive = sum(t.is_alive() for t in threads)
    if alive:
        raise RuntimeError(f"{alive} soak client thread(s) did not stop after the deadline plus twice "
                           f"--timeout-s; the server may be hung")


# ---- the run ------------------------------------------------------------------------------------
def windows(records: list, start: float, end: float, window_s: float, samples: list = ()) -> list[dict]:
    """Requests per window, and the peak RSS of the server (with its stubs) and of this client among
    the memory samples (time, server total kB, client kB) taken in it."""
    out = []
    n = max(1, int(np.ceil((end - start) / window_s - 1e-9)))
    for k in range(n):
        lo, hi = start + k * window_s, min(end, start + (k + 1) * window_s)
        last = k == n - 1
        rows = [r for r in records if lo <= r[0] < hi or (last and r[0] >= hi)]
        ok = [r[1] * 1e3 for r in rows if r[3] is None]
        seen = [m for m in samples if lo <= m[0] < hi or (last and m[0] >= hi)]
        out.append({"window": k, "start_s": lo - start, "seconds": hi - lo, "requests": len(rows),
                    "errors": sum(r[3] is not None for r in rows), "p50_ms": percentile(ok, 50),
                    "p99_ms": percentile(ok, 99), "requests_per_s": len(rows) / (hi - lo) if hi > lo else 0.0,
                    "server_rss_peak_kb": _peak(m[1] for m in seen), "client_rss_peak_kb": _peak(m[2] for m in seen)})
    return out


def _peak(values) -> Optional[int]:
    return max((v for v in values if v is not None), default=None)


def _is_full(w: dict, window_s: float) -> bool:
    """The window lasted its whole length (the last one may be cut short by the deadline)."""
    return w["seconds"] >= window_s * 0.999


def peak_growth(win: list[dict], key: str, window_s: float) -> Optional[float]:
    """Growth of the peak `key` from the first full window to the last. A leak raises every window's
    high-water mark; memory that a stub takes and gives back between two instants does not."""
    full = [w for w in win if _is_full(w, window_s) and w[key] is not None]
    return _growth(full[0][key], full[-1][key]) if len(full) > 1 else None


class MemorySampler(threading.Thread):
    """(time, server total kB, client kB) every `interval_s` until stopped."""

    def __init__(self, pids: dict, interval_s: float) -> None:
        super().__init__(daemon=True)
        self.pids, self.interval_s, self.samples = pids, interval_s, []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            m = memory_snapshot(self.pids)
            self.samples.append((time.perf_counter(), m["server_total_rss_kb"], m["client_rss_kb"]))
            self.stopped.wait(self.interval_s)


def make_images(s: SoakSettings) -> list[np.ndarray]:
    rng = np.random.default_rng(s.seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in s.sizes]


def soak(s: SoakSettings) -> dict:
    with DenseClient(s.url, s.model, retries=2) as probe:  # clear errors first: dead server, unknown model
        task = probe.contract.task
    images = make_images(s)
    pids = server_processes(s.url, s.model)
    if not pids:
        log.warning("no tritonserver with gRPC port %s found in /proc: server RSS is not reported", s.url)
    memory = {"start": memory_snapshot(pids)}
    shm_before = shm_leftovers(s.url)
    t_start = time.perf_counter()
    measure_from = t_start + s.warmup_s
    ledger = Ledger(deadline=measure_from + s.duration_s, max_requests=s.max_requests)
    watcher = threading.Timer(s.warmup_s, lambda: memory.setdefault("after_warmup", memory_snapshot(pids)))
    sampler = MemorySampler(pids, interval_s=min(1.0, s.window_s / 4))
    watcher.start()
    sampler.start()
    try:
        run_clients(s, images, ledger)
    finally:
        watcher.cancel()
        sampler.stopped.set()
        sampler.join()
    t_end = time.perf_counter()
    memory.setdefault("after_warmup", memory["start"])  # the run ended inside the warm-up
    memory["end"] = memory_snapshot(pids)
    leftovers = shm_leftovers(s.url)
    return build_result(s, task, pids, ledger, t_start, measure_from, t_end, memory, sampler.samples, shm_before,
                        leftovers)


def _growth(before: Optional[int], after: Optional[int]) -> Optional[float]:
    return (after - before) / before if before and after is not None else None


def build_result(s: SoakSettings, task: str, pids: dict, ledger: Ledger, t_start: float, measure_from: float,
                 t_end: float, memory: dict, samples: list, shm_before: dict, leftovers: dict) -> dict:
    records = list(ledger.records)
    errors: dict[str, int] = {}
    for r in records:
        if r[3] is not None:
            errors[r[3]] = errors.get(r[3], 0) + 1
    measured = [r for r in records if r[0] >= measure_from]
    by_kind = {k: sum(r[2] == k for r in records) for k in ("sync", "async")}
    # Windows end at the deadline (or earlier, when the request budget ran out); requests still in
    # flight then land in the last window.
    win = windows(measured, measure_from, max(min(t_end, ledger.deadline), measure_from + 1e-6), s.window_s,
                  [m for m in samples if m[0] >= measure_from])
    full = [w for w in win if _is_full(w, s.window_s) and w["requests"]]
    first, last = (full[0], full[-1]) if full else (None, None)
    return {
        "settings": asdict(s), "model": s.model, "task": task, "transport": "shm" if s.shm else "grpc",
        "wall_s": t_end - t_start, "requests": len(records), "requests_by_client_kind": by_kind,
        "measured_requests": len(measured), "errors": sum(errors.values()), "errors_by_kind": errors,
        "first_error_by_kind": dict(ledger.first_error), "windows": win,
        "p99_last_over_first_window": (last["p99_ms"] / first["p99_ms"]) if first and first is not last else None,
        "server_pids": pids, "memory": memory,
        "server_rss_growth": peak_growth(win, "server_rss_peak_kb", s.window_s),
        "client_rss_growth": peak_growth(win, "client_rss_peak_kb", s.window_s),
        "shm_before": shm_before, "shm_leftovers": leftovers,
        "leftover_regions": len(leftovers["server_registered"]) + len(leftovers["dev_shm"]),
    }
