"""Variant comparison in one run: PyTorch eager, onnxruntime in-process, Triton over gRPC and over
shared memory, uint8 vs float32 input, labels vs logits output, with each variant's accuracy.

Variants are timed interleaved (round-robin over several rounds) so machine drift hits all of
them alike; the report gives medians and ratios against onnxruntime in-process at the same batch.
All variants get the same network-size tensors, so the comparison isolates what serving costs;
client preprocessing is measured by `benchmarks latency`.

Neither side steals cores from the other: each variant's timed calls start only once this
process and the server's (its python-backend stubs included) have stopped using the CPU
(benchmarks.quiet), because onnxruntime's and OpenMP's threads spin on after a run. With
--perf-analyzer the served p50 is measured by NVIDIA's tool too, and its served / in-process
ratio is reported beside compare's own. The fp32 efficiency is the model's FLOPs per second
(counted by PyTorch on the checkpoint) against this machine's float32 GEMM rate.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from clients.contract import CONFIG_FILE, ModelContract, read_config_file

from .latency import TensorSource, make_batch
from .measure import LoopSettings, percentile, sweep, timed_calls
from .quiet import wait_idle

log = logging.getLogger(__name__)


@dataclass
class CompareSettings:
    out: str
    checkpoint: Optional[str] = None
    model_dir: Optional[str] = None
    image_size: tuple[int, int] = (512, 512)
    batches: tuple[int, ...] = (1, 4)
    rounds: int = 8
    iters: int = 3  # timed calls per variant and batch in each round
    precisions: tuple[str, ...] = ("fp16", "int8")  # extra onnxruntime variants (need --checkpoint)
    concurrency: tuple[int, ...] = (1, 2, 4, 8)  # throughput sweep over gRPC
    window_s: float = 2.0
    windows: int = 4
    stability: float = 0.10  # three windows in a row within this fraction: the sweep and perf_analyzer
    data: Optional[str] = None  # synthetic dataset for accuracy (val split) and int8 calibration
    eval_images: int = 16
    threads: int = 0  # in-process intra-op threads (0 = library default, as served)
    perf_analyzer: Optional[str] = None  # "" = find it (PATH, then the shared wrapper); None = do not run it

    def __post_init__(self) -> None:
        if bool(self.checkpoint) == bool(self.model_dir):
            raise ValueError("give exactly one of --checkpoint CKPT or --model-dir DIR")
        if min(self.batches) < 1 or self.rounds < 1 or self.iters < 1:
            raise ValueError("--batch values, --rounds and --iters must be >= 1")


@dataclass
class Variant:
    name: str
    kind: str  # "torch" | "onnxruntime" | "triton"
    run: Callable[[np.ndarray], dict]
    input_dtype: str  # "uint8" (NHWC) | "float32" (NCHW, normalised)
    notes: str = ""
    times_ms: dict[int, list[float]] = field(default_factory=dict)  # batch -> per-call latency
    accuracy: dict = field(default_factory=dict)


# name, served input, served output, precision: the models compare publishes from a checkpoint.
SERVED_FORMS = {
    "u8_labels": ("uint8", "labels", "fp32"),
    "f32_labels": ("float", "labels", "fp32"),
    "u8_logits": ("uint8", "logits", "fp32"),
}

# Triton variant -> (served form it calls, whether tensors travel through system shared memory)
TRITON_VARIANTS = {
    "triton grpc": ("u8_labels", False),
    "triton shm": ("u8_labels", True),
    "triton grpc f32 in": ("f32_labels", False),
    "triton grpc logits out": ("u8_logits", False),
}


def publish_variants(s: CompareSettings, repository: Path, skipped: dict[str, str]) -> dict[str, Path]:
    """Export the served forms (and fp16/int8) of the checkpoint; with --model-dir, copy it.
    Variants that fail their parity gate land in `skipped` with the reason."""
    if s.model_dir:
        src = Path(s.model_dir).resolve()
        if not (src / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{src} has no {CONFIG_FILE}; --model-dir must be <repository>/<model>")
        name = read_config_file(src).name
        shutil.copytree(src, repository / name, symlinks=True)
        return {"u8_labels": repository / name}
    from export import ExportError, ExportSettings, export_model
    from models.checkpoint import read_checkpoint

    arch = read_checkpoint(s.checkpoint)[1].get("arch")
    if not arch:
        raise ValueError(f"checkpoint {s.checkpoint!r} has no meta.arch; export it and use --model-dir")
    forms = dict(SERVED_FORMS)
    for precision in s.precisions:
        forms[f"u8_labels_{precision}"] = ("uint8", "labels", precision)
    dirs = {}
    for name, (inp, out, precision) in forms.items():
        calibration = None
        if precision == "int8":
            if not s.data:
                log.info("skipping int8: it needs --data for calibration images")
                continue
            calibration = os.path.join(s.data, "images", "train")
        # the served network size is the compared size: a letterbox model takes only its own HxW
        h, w = s.image_size
        settings = ExportSettings(name=f"cmp_{name}", repository=str(repository), arch=arch, checkpoint=s.checkpoint,
                                  input=inp, output=out, fp16=precision == "fp16", int8=precision == "int8",
                                  calibration=calibration, version=1, force=True, resize=f"letterbox:{h}x{w}",
                                  max_size=(h, w))
        log.info("exporting %s", settings.name)
        try:
            dirs[name] = Path(export_model(settings).model_dir)
        except ExportError as exc:
            if precision == "fp32":
                raise
            # A reduced-precision variant that fails its own gate is a finding, not a crash.
            log.warning("%s not compared: %s", settings.name, exc)
            skipped[name] = str(exc)
    return dirs


def make_variants(s: CompareSettings, dirs: dict[str, Path], url: str) -> tuple[list[Variant], list]:
    from clients.client import DenseClient
    from evaluation.predictors import OnnxPredictor, TorchPredictor

    closers: list = []
    variants: list[Variant] = []
    base = dirs["u8_labels"]
    if s.checkpoint:
        torch_pred = TorchPredictor(s.checkpoint, threads=s.threads)
        variants.append(Variant("pytorch eager", "torch", torch_pred.run, "uint8"))
    for key, path in dirs.items():
        if key.startswith("u8_labels"):
            pred = OnnxPredictor(str(path), threads=s.threads)
            label = "onnxruntime " + (key.split("_")[-1] if key != "u8_labels" else "fp32")
            variants.append(Variant(label, "onnxruntime", pred.run, "uint8"))
    base_name = read_config_file(base).name
    for label, (key, shm) in TRITON_VARIANTS.items():
        if key not in dirs:
            continue
        name = base_name if key == "u8_labels" else read_config_file(dirs[key]).name
        client = DenseClient(url, name, use_shm=shm, retries=0)
        closers.append(client)
        variants.append(Variant(label, "triton", client.infer_tensors, client.contract.input_dtype))
    return variants, closers


def time_interleaved(s: CompareSettings, variants: list[Variant], contract: ModelContract,
                     quiet: Callable[[], float] = lambda: 0.0) -> float:
    """Rounds over every variant; `quiet` blocks until the machine is idle before each timed block.
    Returns the seconds spent waiting for it."""
    inputs = {(v.name, b): make_batch(v.input_dtype, contract, b, s.image_size) for v in variants for b in s.batches}
    for v in variants:  # warm-up: first calls pay for allocation, graph optimisation, channel setup
        for b in s.batches:
            v.run(inputs[(v.name, b)])
    waited = 0.0
    for r in range(s.rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]  # rotate who goes first
        for v in order:
            for b in s.batches:
                x = inputs[(v.name, b)]
                waited += quiet()
                v.times_ms.setdefault(b, []).extend(timed_calls(lambda: v.run(x), s.iters))
        log.info("round %d/%d done", r + 1, s.rounds)
    return waited


def inprocess_throughput(run: Callable, contract: ModelContract, hw: tuple[int, int], batches=(1, 2, 4, 8),
                         calls: int = 3) -> dict[int, float]:
    """Images/s of the in-process onnxruntime session at each batch size (median of `calls`)."""
    out = {}
    for b in batches:
        x = make_batch("uint8", contract, b, hw)
        run(x)  # warm-up
        out[b] = b / percentile(timed_calls(lambda: run(x), calls), 50) * 1e3
    return out


def served_throughput(s: CompareSettings, url: str, model: str, contract: ModelContract) -> list[dict]:
    """The latency sweep's own loop over batch-1 network-size tensors (no client pre/post-processing)."""
    loop = LoopSettings(window_s=s.window_s, max_windows=s.windows, warmup_s=min(1.0, s.window_s),
                        stability=s.stability)
    source = TensorSource(make_batch("uint8", contract, 1, s.image_size))
    return [asdict(level) for level in sweep(url, model, s.concurrency, source, loop)]


def accuracy(s: CompareSettings, variants_spec: list[tuple[str, object]]) -> dict[str, dict]:
    """mIoU (segmentation) or abs_rel (depth) of each variant on the first val images."""
    from evaluation.evaluate import EvalSettings, evaluate

    results = {}
    for name, predictor in variants_spec:
        report = evaluate(predictor, EvalSettings(data=s.data, split="val", limit=s.eval_images))
        m = report["metrics"]
        keep = {k: m[k] for k in ("mIoU", "aAcc", "mAcc", "abs_rel", "delta1", "sad", "mse") if k in m}
        keep["num_images"], keep["num_failed"] = report["num_images"], report["num_failed"]
        results[name] = keep
    return results


def summarise(variants: list[Variant], batches: tuple[int, ...]) -> list[dict]:
    ref = next((v for v in variants if v.name == "onnxruntime fp32"), None)
    rows = []
    for v in variants:
        for b in batches:
            med = percentile(v.times_ms[b], 50)
            ref_med = percentile(ref.times_ms[b], 50) if ref else float("nan")
            rows.append({"variant": v.name, "kind": v.kind, "batch": b, "p50_ms": med,
                         "p90_ms": percentile(v.times_ms[b], 90), "images_per_s": b / med * 1e3,
                         "vs_onnxruntime": med / ref_med, "calls": len(v.times_ms[b]), **v.accuracy})
    return rows


def compare(s: CompareSettings) -> dict:
    from serving import ServerSettings, free_ports, start_server

    work = Path(tempfile.mkdtemp(prefix="pixelport-compare-"))
    repository = work / "repository"
    repository.mkdir()
    closers: list = []
    try:
        t0 = time.perf_counter()
        skipped: dict[str, str] = {}
        dirs = publish_variants(s, repository, skipped)
        export_s = time.perf_counter() - t0
        contract = ModelContract.from_model_config(read_config_file(dirs["u8_labels"]))
        http, grpc, metrics = free_ports(3)
        with start_server(ServerSettings(repository=str(repository), grpc_port=grpc, http_port=http,
                                         metrics_port=metrics, state_dir=work / "state",
                                         log_file=str(work / "triton.log"))) as server:
            variants, closers = make_variants(s, dirs, server.grpc_url)
            quiet = partial(wait_idle, [os.getpid(), server.pid])
            quiet_s = time_interleaved(s, variants, contract, quiet)
            ort = next(v for v in variants if v.name == "onnxruntime fp32")
            best_batch = inprocess_throughput(ort.run, contract, s.image_size)
            levels = served_throughput(s, server.grpc_url, contract.name, contract)
            quiet()
            pa = served_by_perf_analyzer(s, server.grpc_url, contract, work) if s.perf_analyzer is not None else None
            acc = accuracy_of_variants(s, variants, dirs, server.grpc_url) if s.data else {}
            for c in closers:  # while the server is up, so shm regions are unregistered cleanly
                c.close()
        for v in variants:
            v.accuracy = acc.get(v.name, {})
        rows = summarise(variants, s.batches)
        result = build_result(s, rows, best_batch, levels, export_s, contract)
        result["variants_not_published"] = skipped
        result["seconds_waiting_for_idle"] = quiet_s
        if pa is not None:
            result["perf_analyzer"] = pa
            result["ratios"]["served_grpc_over_onnxruntime_p50_by_perf_analyzer"] = (
                pa["p50_ms"] / p50_of(rows, "onnxruntime fp32", 1))
        if s.checkpoint:
            result["efficiency"] = efficiency(s, rows)
        return result
    finally:
        for c in closers:
            c.close()
        shutil.rmtree(work, ignore_errors=True)


def served_by_perf_analyzer(s: CompareSettings, url: str, contract: ModelContract, work: Path) -> dict:
    """perf_analyzer on the served fp32 model at batch 1, concurrency 1, the same tensor shape."""
    from .crosscheck import CrosscheckSettings, find_perf_analyzer, perf_analyzer_command, run_perf_analyzer

    binary = find_perf_analyzer(s.perf_analyzer or None)
    pa = CrosscheckSettings(url=url, model=contract.name, concurrency=(1,), window_s=s.window_s,
                            windows=max(8, s.windows), stability=s.stability,
                            window_requests=max(5, s.rounds * s.iters // 2))
    csv_path = str(work / "perf_analyzer.csv")
    row = run_perf_analyzer(perf_analyzer_command(binary, pa, contract, s.image_size, 1, csv_path), csv_path,
                            pa.timeout_s)
    return {"binary": binary, "p50_ms": row["p50 latency"] / 1e3, "p99_ms": row["p99 latency"] / 1e3,
            "throughput": row["Inferences/Second"]}


def efficiency(s: CompareSettings, rows: list[dict]) -> dict:
    """fp32 onnxruntime at batch 1: the model's GFLOP/s against this machine's float32 GEMM rate."""
    from .flops import gemm_gflops, model_gflop

    gflop = model_gflop(s.checkpoint, s.image_size)
    ort_ms = p50_of(rows, "onnxruntime fp32", 1)
    peak = gemm_gflops()
    achieved = gflop / (ort_ms / 1e3)
    return {"model_gflop_per_image": gflop, "onnxruntime_fp32_gflops": achieved, "gemm_peak_gflops": peak,
            "fraction_of_gemm_peak": achieved / peak}


def accuracy_of_variants(s: CompareSettings, variants: list[Variant], dirs: dict[str, Path], url: str) -> dict:
    from evaluation.predictors import OnnxPredictor, TorchPredictor, TritonPredictor

    spec: list[tuple[str, object]] = []
    if s.checkpoint:
        spec.append(("pytorch eager", TorchPredictor(s.checkpoint, contract=OnnxPredictor(str(dirs["u8_labels"])).contract)))
    for v in variants:
        if v.kind == "onnxruntime":
            key = "u8_labels" if v.name.endswith("fp32") else f"u8_labels_{v.name.split()[-1]}"
            spec.append((v.name, OnnxPredictor(str(dirs[key]))))
    for v in variants:
        if v.name in TRITON_VARIANTS:
            key, shm = TRITON_VARIANTS[v.name]
            name = read_config_file(dirs[key]).name
            spec.append((v.name, TritonPredictor(url, name, use_shm=shm)))
    try:
        return accuracy(s, spec)
    finally:
        for _, p in spec:
            p.close()


def p50_of(rows: list[dict], variant: str, batch: int) -> float:
    """A summarised row's p50 in ms; NaN where the variant was not measured at that batch."""
    return next((r["p50_ms"] for r in rows if r["variant"] == variant and r["batch"] == batch), float("nan"))


def build_result(s: CompareSettings, rows: list[dict], best_batch: dict[int, float], levels: list[dict],
                 export_s: float, contract: ModelContract) -> dict:
    def p50(name: str, batch: int) -> float:
        return p50_of(rows, name, batch)

    b1 = s.batches[0]
    best_served = max(levels, key=lambda lv: lv["throughput"]) if levels else None
    best_b = max(best_batch, key=best_batch.get)
    ratios = {
        "served_grpc_over_onnxruntime_p50": p50("triton grpc", b1) / p50("onnxruntime fp32", b1),
        "served_shm_over_onnxruntime_p50": p50("triton shm", b1) / p50("onnxruntime fp32", b1),
        "served_best_throughput_over_onnxruntime_best_batch":
            (best_served["throughput"] / best_batch[best_b]) if best_served else float("nan"),
        "onnxruntime_speedup_over_pytorch": p50("pytorch eager", b1) / p50("onnxruntime fp32", b1),
        "float32_input_over_uint8_input": p50("triton grpc f32 in", b1) / p50("triton grpc", b1),
        "logits_output_over_labels_output": p50("triton grpc logits out", b1) / p50("triton grpc", b1),
    }
    targets = {"served_grpc_over_onnxruntime_p50": ("<=", 1.15), "served_shm_over_onnxruntime_p50": ("<=", 1.05),
               "served_best_throughput_over_onnxruntime_best_batch": (">=", 0.85)}
    missed = {k: {"value": ratios[k], "target": f"{op} {t}"} for k, (op, t) in targets.items()
              if ratios[k] == ratios[k] and not (ratios[k] <= t if op == "<=" else ratios[k] >= t)}
    return {
        "settings": {**asdict(s)}, "model": contract.name, "task": contract.task, "batch_for_ratios": b1,
        "export_seconds": export_s, "rows": rows, "ratios": ratios, "targets_missed": missed,
        "onnxruntime_images_per_s_by_batch": {str(k): v for k, v in best_batch.items()},
        "onnxruntime_best_batch": best_b, "served_throughput": levels,
        "served_best_concurrency": best_served["concurrency"] if best_served else None,
    }
