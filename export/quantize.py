"""INT8 for CPUs: static quantization with a chosen format, types and calibration, and automatic
mixed precision: the layers that cost accuracy stay fp32, found greedily by per-layer sensitivity,
until the int8 model agrees with fp32 and the task metric is within budget.

Calibration runs once per model and method (onnxruntime's calibration cache); each candidate set of
fp32 layers is only a re-quantization. The caller's parity gate still judges the final model.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from clients.contract import INPUT_NAME, ModelContract

from . import accuracy
from .errors import ExportError, ParityError
from .onnx_export import sample_input, save_model
from .parity import GATE_SHAPES, Tolerance, compare_output

log = logging.getLogger(__name__)

FORMATS = ("qdq", "qoperator")
CALIBRATIONS = ("minmax", "entropy", "percentile")
# activation type, weight type. u8s8 is what x86 int8 kernels (VNNI's vpdpbusd, AVX2's vpmaddubsw) take.
TYPES = ("u8s8", "u8u8", "s8s8")
# The compute-heavy ops, and Resize (the last one upsamples the logits the argmax reads): the
# mixed-precision search's choices; the rest follow their neighbours.
WEIGHTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
SEARCH_OPS = WEIGHTED_OPS + ("Resize",)
# What gets quantized. Not the element-wise Mul/Add/Sub/Div: in these graphs they are the in-graph
# input normalisation (a (1,3,1,1) broadcast that QLinearAdd/QLinearMul run slowly: 17% of an int8
# UNet's time when quantized) and int64 shape arithmetic.
QUANT_OPS = WEIGHTED_OPS + ("Concat", "Resize", "MaxPool", "AveragePool", "GlobalAveragePool", "Relu", "Clip")


@dataclass(frozen=True)
class Int8Settings:
    """How to quantize: format, types, calibration, and the mixed-precision search bounds."""

    format: str = "qdq"  # "qdq" (QuantizeLinear/DequantizeLinear pairs, fused by ORT) | "qoperator" (QLinearConv...)
    types: str = "u8s8"  # activations/weights: u8s8 | u8u8 | s8s8
    calibration: str = "minmax"  # minmax | entropy | percentile
    per_channel: bool = True  # one weight scale per output channel
    reduce_range: Optional[bool] = None  # 7-bit weights; None: off on VNNI CPUs, on without (saturation)
    percentile: float = 99.999  # for calibration="percentile"
    max_fp32_layers: int = 8  # the mixed-precision search keeps at most this many layers in fp32
    margin: float = 0.002  # the search aims this far inside the gate's agreement bound

    def check(self) -> None:
        for name, value, allowed in (("format", self.format, FORMATS), ("types", self.types, TYPES),
                                     ("calibration", self.calibration, CALIBRATIONS)):
            if value not in allowed:
                raise ExportError(f"int8 {name} must be one of {', '.join(allowed)}, got {value!r}")
        if self.max_fp32_layers < 0:
            raise ExportError(f"--int8-max-fp32-layers must be >= 0, got {self.max_fp32_layers}")

    def resolved_reduce_range(self) -> bool:
        # Without VNNI, u8 x s8 products go through vpmaddubsw, whose int16 pair sums saturate:
        # 7-bit weights avoid that. VNNI accumulates in int32 and needs no reduction.
        return (not cpu_has_vnni()) if self.reduce_range is None else self.reduce_range

    @property
    def label(self) -> str:
        rr = "rr" if self.resolved_reduce_range() else "full"
        return f"{self.format}-{self.types}-{self.calibration}-{'pc' if self.per_channel else 'pt'}-{rr}"


def cpu_has_vnni() -> bool:
    """Whether this x86 CPU has an int8 dot-product instruction (AVX512-VNNI or AVX-VNNI)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags))


class _Batches:
    """Feeds onnxruntime's calibrator one served-form batch at a time."""

    def __init__(self, batches: Sequence[np.ndarray]) -> None:
        self._batches = list(batches)
        self._it: Iterator[np.ndarray] = iter(self._batches)

    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        batch = next(self._it, None)
        return None if batch is None else {INPUT_NAME: batch}

    def rewind(self) -> None:
        self._it = iter(self._batches)

    def __len__(self) -> int:
        return len(self._batches)


def preprocess(src: Path, dst: Path) -> None:
    """onnxruntime's pre-quantization pass: ONNX shape inference and graph optimisation (folds
    BatchNorm into Conv), so that more tensors have shapes and fewer ops need quantizing."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # No symbolic shape inference: it gives up on the exporter's dynamic-shape arithmetic, and when it
    # does it dumps sym_shape_infer_temp.onnx (+ a .data file) into the current directory.
    quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)


def quantize(src: Path, dst: Path, batches: Sequence[np.ndarray], settings: Int8Settings,
             fp32_nodes: Sequence[str] = (), cache: Optional[Path] = None) -> None:
    """Static int8 quantization of `src` (pre-processed) into `dst`; `fp32_nodes` stay fp32.
    `cache` holds the calibration ranges: computed on the first call, reused after."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    settings.check()
    if not batches and not (cache and cache.is_file()):
        raise ExportError("--int8 found no calibration images; --calibration must hold some images")
    qtype = {"u": QuantType.QUInt8, "s": QuantType.QInt8}
    act, weight = qtype[settings.types[0]], qtype[settings.types[2]]
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[settings.calibration]
    extra = {"CalibPercentile": settings.percentile} if settings.calibration == "percentile" else {}
    fmt = QuantFormat.QDQ if settings.format == "qdq" else QuantFormat.QOperator
    try:
        quantize_static(
            str(src), str(dst), _Batches(batches), quant_format=fmt, activation_type=act, weight_type=weight,
            per_channel=settings.per_channel, reduce_range=settings.resolved_reduce_range(),
            calibrate_method=method, nodes_to_exclude=list(fp32_nodes), op_types_to_quantize=list(QUANT_OPS),
            extra_options=extra,
            calibration_cache_path=str(cache) if cache else None,
        )
    except Exception as exc:  # quantizer failures are assorted
        raise ExportError(f"int8 quantization ({settings.label}) failed: {type(exc).__name__}: {exc}") from exc
    save_model(onnx.load(str(dst)), dst)  # one self-contained file, as for fp32


def weighted_nodes(model_path: Path) -> list[str]:
    """Names of the nodes the mixed-precision search may keep in fp32 (Conv/MatMul/Gemm/Resize)."""
    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type in SEARCH_OPS and n.name]


@dataclass
class Verdict:
    """How an int8 candidate compares with fp32: the gate-like agreement and the metric drop."""

    agreement: float  # worst fraction of pixels within tolerance on the probe inputs (labels: equal)
    drop: float  # task-metric loss against fp32 on the sample images
    ok: bool

    @property
    def score(self) -> float:
        return self.agreement - (self.drop if math.isfinite(self.drop) else 1.0)


Judge = Callable[[Path], Verdict]


def make_judge(fp32: Path, contract: ModelContract, samples: list[accuracy.Sample],
               probe_hws: Sequence[tuple[int, int]], tolerance: Tolerance, margin: float = 0.0) -> Judge:
    """A cheap stand-in for the parity gate: agreement with the fp32 ONNX on the gate's own kind of
    input (seeded noise at `probe_hws`) and the end-to-end metric on `samples`."""
    probes = [sample_input(contract, 1, hw, seed=1000 + i).numpy() for i, hw in enumerate(probe_hws)]
    base = accuracy.onnx_runner(fp32)
    refs = [base(x) for x in probes]

    def judge(candidate: Path) -> Verdict:
        run = accuracy.onnx_runner(candidate)
        fractions = []
        for x, ref in zip(probes, refs):
            got = run(x)
            for name, r in ref.items():
                check = compare_output(name, got[name], r, tolerance)
                fractions.append(check.agreement if check.kind == "labels" else 1.0 - check.outliers)
        agreement = min(fractions) if fractions else 1.0
        drop = accuracy.compare_on_samples(base, run, contract, samples, ("fp32", "int8"))["drop"] if samples else 0.0
        need = tolerance.min_agreement + margin if any(r.dtype.kind in "iu" for ref in refs for r in ref.values()) \
            else 1.0 - tolerance.max_outliers + margin
        ok = agreement >= need and drop <= tolerance.max_metric_drop
        return Verdict(agreement, float(drop), bool(ok))

    return judge


@dataclass
class Int8Result:
    """What `quantize_within_budget` built and how it got there."""

    settings: dict
    fp32_layers: list[str]
    verdict: dict
    quantized_layers: int
    steps: list[dict] = field(default_factory=list)  # each candidate tried: fp32 layers, verdict
    sensitivity: dict[str, float] = field(default_factory=dict)  # layer -> score when it alone stays fp32
    seconds: float = 0.0


def quantize_within_budget(src: Path, dst: Path, batches: Sequence[np.ndarray], settings: Int8Settings,
                           judge: Judge, workdir: Optional[Path] = None) -> Int8Result:
    """Quantize everything; while the judge says no, keep layers in fp32, the most sensitive first
    (leave-one-out: each layer's score when it alone stays fp32), up to `max_fp32_layers`."""
    start = time.perf_counter()
    settings.check()
    tmp = Path(tempfile.mkdtemp(prefix="pixelport-int8-", dir=workdir))
    try:
        prepared, cache = tmp / "prepared.onnx", tmp / f"calibration-{settings.calibration}.json"
        preprocess(src, prepared)
        layers = weighted_nodes(prepared)
        result = Int8Result(asdict(settings), [], {}, len(layers))

        def attempt(fp32_layers: list[str], out: Path) -> Verdict:
            quantize(prepared, out, batches, settings, fp32_layers, cache)
            verdict = judge(out)
            result.steps.append({"fp32_layers": list(fp32_layers), **asdict(verdict)})
            log.info("int8 %s with %d fp32 layer(s): agreement %.4f, metric drop %.4f -> %s", settings.label,
                     len(fp32_layers), verdict.agreement, verdict.drop, "ok" if verdict.ok else "not yet")
            return verdict

        verdict = attempt([], dst)
        if not verdict.ok and settings.max_fp32_layers > 0 and layers:
            trial = tmp / "trial.onnx"
            result.sensitivity = {n: attempt([n], trial).score for n in layers}
            result.steps = result.steps[:1]  # keep the log readable: the greedy steps follow
            ranked = sorted(layers, key=lambda n: -result.sensitivity[n])
            kept: list[str] = []
            for layer in ranked[: settings.max_fp32_layers]:
                kept.append(layer)
                verdict = attempt(kept, dst)
                if verdict.ok:
                    break
            result.fp32_layers = kept
        result.verdict = asdict(verdict)
        result.quantized_layers = len(layers) - len(result.fp32_layers)
        result.seconds = time.perf_counter() - start
        if not verdict.ok:  # the gate would refuse it: say so as the gate does (exit 1, nothing published)
            raise ParityError(
                f"int8 ({settings.label}) stays out of budget with {len(result.fp32_layers)} of {len(layers)} layers "
                f"in fp32 (agreement {verdict.agreement:.4f}, metric drop {verdict.drop:.4f}); try another "
                "--int8-calibration, allow more fp32 layers (--int8-max-fp32-layers), or publish fp32")
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_int8(fp32: Path, dst: Path, contract: ModelContract, samples: list[accuracy.Sample],
               settings: Optional[Int8Settings] = None, probe_hw: Optional[tuple[int, int]] = None) -> Int8Result:
    """The export's int8 step: calibrate on `samples`, judge against fp32 with the gate's int8
    tolerance, keep sensitive layers in fp32 as needed. The caller still runs the parity gate."""
    settings = settings or Int8Settings()
    tolerance = Tolerance.for_precision("int8")
    hw = probe_hw or contract.warmup_hw()
    # the gate's first case (the traced shape, seed 1000) and one of its odd shapes
    judge = make_judge(fp32, contract, samples, [hw, GATE_SHAPES[0]], tolerance, settings.margin)
    result = quantize_within_budget(fp32, dst, accuracy.calibration_batches(samples, contract), settings, judge,
                                    workdir=dst.parent)
    log.info("int8 (%s): %d layers int8, %d kept fp32%s", settings.label, result.quantized_layers,
             len(result.fp32_layers), f" ({', '.join(result.fp32_layers)})" if result.fp32_layers else "")
    return result


def session(path: Path, threads: int = 0, profile_prefix: Optional[str] = None) -> ort.InferenceSession:
    """A CPU session as the benchmarks use it: `threads` intra-op threads (0 = library default)."""
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
