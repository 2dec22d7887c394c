"""Cross-check pixelport's latency harness against NVIDIA's perf_analyzer on the same served model.

Both send batch-1 random tensors of the same network size at the same concurrency levels, with
the same window length and stability rule; the levels are measured in turn (perf_analyzer, then
pixelport's own loop from benchmarks.measure) so machine drift hits both alike. Ratios are
pixelport ÷ perf_analyzer: a harness that disagrees with the peer tool is measuring itself.
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from clients.client import DenseClient
from clients.contract import INPUT_NAME, ModelContract

from .latency import TensorSource, make_batch
from .measure import LoopSettings, sweep

log = logging.getLogger(__name__)

# The shared wrapper that runs NVIDIA's perf_analyzer on this host, beside the repository.
SHARED_WRAPPER = Path(__file__).resolve().parents[1].parent / "shared" / "tools" / "perf-analyzer"
# Rows of the side-by-side table: (label, perf_analyzer CSV column(s), pixelport level key(s), scale)
METRICS = (
    ("p50 latency ms", ("p50 latency",), ("p50_us",), 1e-3),
    ("p99 latency ms", ("p99 latency",), ("p99_us",), 1e-3),
    ("throughput infer/s", ("Inferences/Second",), ("throughput",), 1.0),
    ("server queue ms", ("Server Queue",), ("queue",), 1e-3),
    ("server compute ms", ("Server Compute Input", "Server Compute Infer", "Server Compute Output"),
     ("compute_input", "compute_infer", "compute_output"), 1e-3),
)


@dataclass
class CrosscheckSettings:
    url: str
    model: str
    concurrency: tuple[int, ...] = (1, 2)
    shape: Optional[tuple[int, int]] = None  # network-size HxW; default: the model's own input size
    perf_analyzer: Optional[str] = None
    window_s: float = 2.0  # perf_analyzer's --measurement-interval, and pixelport's window
    windows: int = 8  # perf_analyzer's --max-trials, and pixelport's most windows per level
    stability: float = 0.10  # three windows in a row within this fraction (both tools' rule)
    window_requests: int = 0  # > 0: perf_analyzer's count_windows, each window holds at least this many requests
    warmup_requests: int = 10  # sent at each level before measuring, both tools (perf_analyzer's default is none)
    timeout_s: float = 300.0  # per perf_analyzer run

    def __post_init__(self) -> None:
        if not self.concurrency or min(self.concurrency) < 1:
            raise ValueError(f"--concurrency needs levels >= 1, got {self.concurrency}")
        if self.window_s <= 0 or self.windows < 3 or self.stability <= 0:
            raise ValueError("--window-s and --stability must be > 0 and --windows >= 3 (three windows must agree)")
        if self.window_requests < 0 or self.warmup_requests < 0:
            raise ValueError("--window-requests and --warmup-requests must be >= 0")

    @property
    def loop(self) -> LoopSettings:
        # perf_analyzer warms up by count only, so pixelport does too; its count windows still last window_s.
        return LoopSettings(window_s=self.window_s, max_windows=self.windows, min_windows=3, stability=self.stability,
                            warmup_s=0.0, warmup_requests=self.warmup_requests,
                            window_requests=self.window_requests)


def find_perf_analyzer(explicit: Optional[str] = None) -> str:
    """--perf-analyzer PATH, else `perf_analyzer` on PATH, else the shared wrapper beside the repo."""
    if explicit:
        path = shutil.which(explicit) or explicit
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise FileNotFoundError(f"--perf-analyzer {explicit!r} is not an executable file")
        return path
    found = shutil.which("perf_analyzer")
    if found:
        return found
    if SHARED_WRAPPER.is_file() and os.access(SHARED_WRAPPER, os.X_OK):
        return str(SHARED_WRAPPER)
    raise FileNotFoundError(f"perf_analyzer not found: not on PATH and no {SHARED_WRAPPER}; install it "
                            "(pip install perf-analyzer, glibc >= 2.38) or pass --perf-analyzer PATH")


def perf_analyzer_command(binary: str, s: CrosscheckSettings, contract: ModelContract, shape: tuple[int, int],
                          concurrency: int, csv_path: str) -> list[str]:
    dims = ",".join(str(d) for d in contract.input_dims(*shape))
    command = [binary, "-m", s.model, "-u", s.url, "-i", "grpc", "-b", "1", "--shape", f"{INPUT_NAME}:{dims}",
               "--concurrency-range", f"{concurrency}:{concurrency}",
               "--measurement-interval", str(max(1, round(s.window_s * 1000))), "--max-trials", str(s.windows),
               "--stability-percentage", f"{s.stability * 100:g}", "--warmup-request-count", str(s.warmup_requests),
               "-f", csv_path]
    if s.window_requests:
        command += ["--measurement-mode", "count_windows", "--measurement-request-count", str(s.window_requests)]
    return command


def run_perf_analyzer(command: list[str], csv_path: str, timeout_s: float) -> dict[str, float]:
    """One perf_analyzer run; its CSV row as floats (µs and infer/s). It can exit 0 after its
    workers failed, so a missing or empty CSV is an error that quotes its output."""
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"perf_analyzer ran over {timeout_s:.0f} s: {' '.join(command)}") from None
    tail = (proc.stdout + proc.stderr).strip()[-1500:]
    rows = []
    if os.path.isfile(csv_path):
        with open(csv_path, newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("Concurrency")]
    if proc.returncode != 0 or not rows:
        hint = ("; on a busy machine give it longer windows (--window-s), windows of a request count "
                "(--window-requests), more of them (--windows) or a looser --stability"
                if "stable measurement" in tail else "")
        raise RuntimeError(f"perf_analyzer failed (exit {proc.returncode}){hint}; its output ends:\n{tail}")
    return {k: float(v) for k, v in rows[-1].items() if k and _is_number(v)}


def _is_number(text: Optional[str]) -> bool:
    try:
        float(text or "")
        return True
    except ValueError:
        return False


def side_by_side(pa: dict[str, float], ours: dict) -> list[dict]:
    """One row per metric: both values and pixelport ÷ perf_analyzer."""
    rows = []
    for label, pa_keys, our_keys, scale in METRICS:
        a = sum(pa.get(k, float("nan")) for k in pa_keys) * scale
        source = ours if our_keys[0] in ours else ours["server_us"]
        b = sum(source.get(k, float("nan")) for k in our_keys) * scale
        rows.append({"concurrency": ours["concurrency"], "metric": label, "perf_analyzer": a, "pixelport": b,
                     "ratio": b / a if a and a == a else float("nan")})
    return rows


def crosscheck(s: CrosscheckSettings, work_dir: Optional[str] = None) -> dict:
    binary = find_perf_analyzer(s.perf_analyzer)
    with DenseClient(s.url, s.model, retries=2) as probe:  # clear errors: dead server, unknown model
        contract = probe.contract
    shape = s.shape or contract.warmup_hw()
    contract.check_size(*shape)  # a shape the server would refuse is a usage error, said up front
    source = TensorSource(make_batch(contract.input_dtype, contract, 1, shape))
    work = Path(work_dir or tempfile.mkdtemp(prefix="pixelport-crosscheck-"))
    work.mkdir(parents=True, exist_ok=True)
    pa_levels, our_levels, rows = [], [], []
    for c in s.concurrency:
        csv_path = str(work / f"perf_analyzer_c{c}.csv")
        command = perf_analyzer_command(binary, s, contract, shape, c, csv_path)
        log.info("perf_analyzer at concurrency %d", c)
        pa = {"concurrency": c, "command": command, **run_perf_analyzer(command, csv_path, s.timeout_s)}
        ours = asdict(sweep(s.url, s.model, (c,), source, s.loop)[0])
        pa_levels.append(pa)
        our_levels.append(ours)
        rows += side_by_side(pa, ours)
    return {"settings": asdict(s), "model": s.model, "task": contract.task, "shape": list(shape),
            "input_dtype": contract.input_dtype, "perf_analyzer": {"binary": binary, "levels": pa_levels},
            "pixelport": {"levels": our_levels}, "rows": rows}
