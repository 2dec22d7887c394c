"""Model Analyzer-style config search on the real Triton: instance count x onnxruntime intra-op
threads x max batch x queue delay, each candidate served and measured over a concurrency sweep;
prints the throughput/p99 frontier and publishes the best config as a new version of the model.

    python -m benchmarks tune --model-dir model_repository/seg_unet --budget-p99-ms 120 \\
        [--shape 512x512] [--duration-s 2] [--concurrency 1,2,4] [--max-candidates 8] [--out DIR]

All candidates load in one Triton started on a scratch copy of the repository (each under its own
model name, the model file linked, not copied); only the winner touches the real repository.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from clients.contract import CONFIG_FILE, LABELS_FILE, ModelContract, list_versions, read_config_file

log = logging.getLogger(__name__)

THREADS_PARAM = "pixelport.intra_op_threads"
MAX_BATCH_PARAM = "pixelport.max_batch_size"


@dataclass(frozen=True)
class Candidate:
    """One point of the search space (threads 0 = onnxruntime's own choice)."""

    instances: int
    threads: int
    max_batch: int
    queue_delay_us: int

    @property
    def label(self) -> str:
        return f"i{self.instances}-t{self.threads}-b{self.max_batch}-d{self.queue_delay_us}"


@dataclass
class TuneSettings:
    model_dir: str  # <repository>/<model>
    budget_p99_ms: float
    shape: tuple[int, int] = (512, 512)  # request image size (before letterbox)
    duration_s: float = 2.0  # seconds per measurement window
    windows: int = 3  # the most windows per level (stops early once 2 agree within 15 %)
    concurrency: tuple[int, ...] = (1, 2, 4)
    instances: tuple[int, ...] = (1, 2)
    threads: tuple[int, ...] = (1, 2)
    max_batch: tuple[int, ...] = ()  # default: (1, the model's own)
    queue_delay_us: tuple[int, ...] = (0, 2000)
    max_candidates: int = 8
    cores: int = 0  # instances x threads above this are skipped (0 = the cores this process may use)
    publish: bool = True
    out: Optional[str] = None
    startup_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        if self.budget_p99_ms <= 0:
            raise ValueError(f"--budget-p99-ms must be positive, got {self.budget_p99_ms}")
        if self.max_candidates < 1:
            raise ValueError(f"--max-candidates must be at least 1, got {self.max_candidates}")
        if not (Path(self.model_dir) / CONFIG_FILE).is_file():
            raise ValueError(f"{self.model_dir} has no {CONFIG_FILE}; --model-dir must be <repository>/<model>")


def default_candidate(config) -> Candidate:
    """What the model's current config says, as a Candidate."""
    group = config.instance_group[0] if config.instance_group else None
    threads = config.parameters[THREADS_PARAM].string_value if THREADS_PARAM in config.parameters else "0"
    delay = config.dynamic_batching.max_queue_delay_microseconds if config.HasField("dynamic_batching") else 0
    return Candidate(group.count if group and group.count else 1, int(threads or 0), config.max_batch_size, delay)


def candidates(s: TuneSettings, default: Candidate) -> list[Candidate]:
    """The default first, then the grid: no more instances x threads than cores, no delay without
    batching, no batch above the model's own (the graph was checked up to it); at most max_candidates."""
    cores = s.cores or len(os.sched_getaffinity(0))
    batches = s.max_batch or ((1, default.max_batch) if default.max_batch > 1 else (default.max_batch,))
    out = [default]
    for inst, thr, mb, delay in itertools.product(s.instances, s.threads, batches, s.queue_delay_us):
        c = Candidate(inst, thr, mb, delay if mb > 1 else 0)
        if inst * max(thr, 1) > cores or (default.max_batch > 0 and mb > default.max_batch) or c in out:
            continue
        out.append(c)
    # Under the bound, spread the search: every instances x threads at the default batch first, then
    # other batch sizes, then queue delays (a delay only pays where batching already does).
    rest = sorted(out[1:], key=lambda c: (c.queue_delay_us != 0, c.max_batch != default.max_batch))
    return [default, *rest][: s.max_candidates]


def apply(config, c: Candidate):
    """A copy of `config` (Triton ModelConfig) set to candidate `c`."""
    out = type(config)()
    out.CopyFrom(config)
    if not out.instance_group:
        out.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU)
    out.instance_group[0].count = c.instances
    if c.threads:
        out.parameters[THREADS_PARAM].string_value = str(c.threads)
    elif THREADS_PARAM in out.parameters:
        del out.parameters[THREADS_PARAM]
    if config.max_batch_size > 0:  # a model without a batch dimension keeps it that way
        out.max_batch_size = c.max_batch
        if MAX_BATCH_PARAM in out.parameters:
            out.parameters[MAX_BATCH_PARAM].string_value = str(c.max_batch)
        if c.max_batch > 1:
            out.dynamic_batching.max_queue_delay_microseconds = c.queue_delay_us
        else:
            out.ClearField("dynamic_batching")  # nothing to batch
    return out


def stage_candidates(model_dir: Path, cands: list[Candidate], repo: Path) -> dict[str, Candidate]:
    """One model per candidate in the scratch repository `repo`, each with the newest version linked."""
    config = read_config_file(model_dir / CONFIG_FILE)
    versions = list_versions(model_dir)
    if not versions:
        raise ValueError(f"{model_dir} has no version directory to tune")
    newest = model_dir / str(max(versions))
    staged = {}
    for i, c in enumerate(cands):
        name = f"{config.name}__tune{i}"
        dst = repo / name
        (dst / "1").mkdir(parents=True)
        for f in newest.iterdir():
            (dst / "1" / f.name).symlink_to(f.resolve())
        if (model_dir / LABELS_FILE).is_file():
            shutil.copyfile(model_dir / LABELS_FILE, dst / LABELS_FILE)
        cfg = apply(config, c)
        cfg.name = name
        (dst / CONFIG_FILE).write_text(text_format.MessageToString(cfg), encoding="utf-8")
        staged[name] = c
    return staged


@dataclass
class Point:
    candidate: dict
    label: str
    concurrency: int
    throughput: float
    p50_ms: float
    p99_ms: float
    queue_ms: float = float("nan")
    compute_ms: float = float("nan")
    frontier: bool = False


@dataclass
class TuneResult:
    model: str
    budget_p99_ms: float
    points: list[Point] = field(default_factory=list)
    best: Optional[dict] = None  # candidate
    best_throughput: float = 0.0  # at the budget
    default_throughput: float = 0.0  # at the budget
    default_on_frontier: bool = False
    published_version: Optional[int] = None
    notes: list[str] = field(default_factory=list)


def frontier(points: list[Point]) -> list[Point]:
    """Pareto points: no other point has both more throughput and a lower p99."""
    front = []
    for p in points:
        dominated = any(q.throughput >= p.throughput and q.p99_ms <= p.p99_ms and
                        (q.throughput > p.throughput or q.p99_ms < p.p99_ms) for q in points)
        p.frontier = not dominated
        if not dominated:
            front.append(p)
    return sorted(front, key=lambda p: p.p99_ms)


def at_budget(points: list[Point], label: str, budget_ms: float) -> float:
    """A candidate's best throughput among its levels whose p99 fits the budget (0 if none)."""
    return max((p.throughput for p in points if p.label == label and p.p99_ms <= budget_ms), default=0.0)


def measure_candidate(url: str, name: str, c: Candidate, s: TuneSettings) -> list[Point]:
    from .latency import LatencySettings, measure

    settings = LatencySettings(url=url, model=name, concurrency=s.concurrency, image_size=s.shape,
                               window_s=s.duration_s, windows=s.windows, min_windows=min(2, s.windows),
                               stability=0.15, warmup_s=min(1.0, s.duration_s))
    result = measure(settings)
    points = []
    for lv in result["levels"]:
        server = lv.get("server_us") or {}
        points.append(Point(asdict(c), c.label, lv["concurrency"], lv["throughput"], lv["p50_us"] / 1e3,
                            lv["p99_us"] / 1e3, server.get("queue", float("nan")) / 1e3,
                            server.get("compute_infer", float("nan")) / 1e3))
        log.info("%s c=%d: %.1f infer/s, p99 %.1f ms", c.label, lv["concurrency"], lv["throughput"],
                 lv["p99_us"] / 1e3)
    return points


def search(s: TuneSettings, scratch: Path) -> TuneResult:
    """Serve every candidate from one scratch Triton and measure them one after another."""
    from serving import ServerSettings, free_ports, start_server

    model_dir = Path(s.model_dir).resolve()
    config = read_config_file(model_dir / CONFIG_FILE)
    default = default_candidate(config)
    cands = candidates(s, default)
    repo = scratch / "repository"
    staged = stage_candidates(model_dir, cands, repo)
    log.info("tuning %s: %d candidates (%s)", config.name, len(cands), ", ".join(c.label for c in cands))
    http, grpc, metrics = free_ports(3)
    server = start_server(ServerSettings(repository=repo, http_port=http, grpc_port=grpc, metrics_port=metrics,
                                         state_dir=scratch / "state", mode="embedded", die_with_parent=True,
                                         startup_timeout_s=s.startup_timeout_s))
    result = TuneResult(config.name, s.budget_p99_ms)
    try:
        for name, c in staged.items():
            result.points.extend(measure_candidate(server.grpc_url, name, c, s))
    finally:
        server.stop()
    frontier(result.points)
    scores = {c.label: at_budget(result.points, c.label, s.budget_p99_ms) for c in cands}
    best = max(cands, key=lambda c: (scores[c.label], c == default))  # ties keep the default
    result.best, result.best_throughput = asdict(best), scores[best.label]
    result.default_throughput = scores[default.label]
    result.default_on_frontier = any(p.frontier for p in result.points if p.label == default.label)
    if result.best_throughput == 0.0:
        result.notes.append(f"no candidate met p99 <= {s.budget_p99_ms} ms at any concurrency; nothing published")
    return result


def publish(model_dir: Path, best: Candidate) -> int:
    """The newest version's files as a new version, then the tuned config (the export's order:
    version first, config second, so a kill in between serves a complete model)."""
    from clients.files import atomic_write
    from export.repository import make_readable, next_version, repository_lock

    config = read_config_file(model_dir / CONFIG_FILE)
    newest = model_dir / str(max(list_versions(model_dir)))
    with repository_lock(model_dir.parent):
        version = next_version(model_dir)
        # staged inside the model directory: Triton ignores its non-numeric subdirectories
        staging = Path(tempfile.mkdtemp(prefix=".pixelport-staging-tune-", dir=model_dir))
        try:
            for f in newest.iterdir():
                shutil.copy2(f, staging / f.name)
            make_readable(staging)
            os.rename(staging, model_dir / str(version))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        tuned = apply(config, best)
        text = text_format.MessageToString(tuned)
        ModelContract.from_model_config(text)  # Triton's schema, and still a contract clients can read
        atomic_write(model_dir / CONFIG_FILE, text)
    return version


def tune(s: TuneSettings) -> TuneResult:
    with tempfile.TemporaryDirectory(prefix="pixelport-tune-") as tmp:
        result = search(s, Path(tmp))
    if s.publish and result.best_throughput > 0 and result.best_throughput > result.default_throughput:
        result.published_version = publish(Path(s.model_dir).resolve(), Candidate(**result.best))
        log.info("published the tuned config as %s version %d", result.model, result.published_version)
    elif result.best_throughput > 0:
        result.notes.append("the default config is the best at the budget: nothing published")
    if s.out:
        Path(s.out).mkdir(parents=True, exist_ok=True)
        (Path(s.out) / "tune.json").write_text(json.dumps(asdict(result), indent=2, default=float) + "\n")
    return result


def table(result: TuneResult) -> str:
    lines = [f"{'candidate':<18} {'conc':>4} {'infer/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'queue ms':>8}  frontier"]
    for p in sorted(result.points, key=lambda p: (p.label, p.concurrency)):
        lines.append(f"{p.label:<18} {p.concurrency:4d} {p.throughput:8.1f} {p.p50_ms:8.1f} {p.p99_ms:8.1f} "
                     f"{p.queue_ms:8.1f}  {'*' if p.frontier else ''}")
    best = Candidate(**result.best).label if result.best else "none"
    lines.append(f"budget p99 <= {result.budget_p99_ms} ms: best {best} at {result.best_throughput:.1f} infer/s; "
                 f"default {result.default_throughput:.1f} infer/s "
                 f"({'on' if result.default_on_frontier else 'off'} the frontier)")
    if result.published_version:
        lines.append(f"published as version {result.published_version}")
    lines.extend(result.notes)
    return "\n".join(lines)


# ---- command line (registered by benchmarks/__main__.py) -----------------------------------------
def add_parser(sub) -> None:
    from clients.cli_args import hw_arg

    from .cli_latency import int_list

    p = sub.add_parser("tune", help="search instances x threads x max batch x queue delay on the real Triton",
                       description=__doc__)
    p.add_argument("--model-dir", required=True, help="the model to tune: <repository>/<model>")
    p.add_argument("--budget-p99-ms", type=float, required=True,
                   help="p99 latency budget; the best config has the most throughput within it")
    p.add_argument("--shape", type=hw_arg, default=(512, 512), help="request image HxW (default 512x512)")
    p.add_argument("--duration-s", type=float, default=2.0, help="seconds per measurement window (default 2)")
    p.add_argument("--windows", type=int, default=3, help="most windows per concurrency level (default 3)")
    p.add_argument("--concurrency", type=int_list, default=(1, 2, 4),
                   help="closed-loop client counts measured per candidate (default 1,2,4)")
    p.add_argument("--instances", type=int_list, default=(1, 2), help="instance counts to try (default 1,2)")
    p.add_argument("--threads", type=int_list, default=(1, 2),
                   help="onnxruntime intra-op threads per instance to try (default 1,2)")
    p.add_argument("--max-batch", type=int_list, default=(),
                   help="max batch sizes to try (default: 1 and the model's own)")
    p.add_argument("--queue-delay-us", type=lambda t: tuple(int(v) for v in t.split(",")), default=(0, 2000),
                   help="dynamic-batching queue delays in microseconds to try (default 0,2000)")
    p.add_argument("--max-candidates", type=int, default=8, help="most configs measured, default first (default 8)")
    p.add_argument("--no-publish", action="store_true", help="report only; do not write a new version")
    p.add_argument("--out", help="folder for tune.json")
    p.set_defaults(run=run)


def run(args) -> int:
    s = TuneSettings(model_dir=args.model_dir, budget_p99_ms=args.budget_p99_ms, shape=tuple(args.shape),
                     duration_s=args.duration_s, windows=args.windows, concurrency=args.concurrency,
                     instances=args.instances, threads=args.threads, max_batch=args.max_batch,
                     queue_delay_us=args.queue_delay_us, max_candidates=args.max_candidates,
                     publish=not args.no_publish, out=args.out)
    print(table(tune(s)))
    return 0
