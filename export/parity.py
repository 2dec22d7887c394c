"""The parity gate: ONNX Runtime against PyTorch (eval mode) on several batch sizes and H/W.

Shapes: the traced size, sizes the strides and pooling bins do not divide (97x131, 250x333), a
tall non-square one, and the profile's min and max; batch 1 and the max batch (capped at 4). A
fixed-size graph is checked at its size, at batch 1 and the full max batch.
Raw outputs must satisfy |ort - torch| <= atol + rtol*|torch|; label outputs must agree on
>= 99.9 % of pixels (fp32); every output must come out at the input size. The PyTorch model
failing at a shape is a finding, not a crash. A reference that is near-zero or near-constant
everywhere proves nothing, and fails unless allowed. A failure raises ParityError naming the
shape, the worst output and, where it can, the first diverging module.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import onnx
import onnxruntime as ort
import torch

from clients.contract import INPUT_NAME, ModelContract

from .errors import ParityError
from .onnx_export import sample_input
from .settings import HW, Profile
from .wrapper import primary_output

log = logging.getLogger(__name__)
MAX_PARITY_BATCH = 4
# A reference output is degenerate when its magnitude or its spread is below these (fp32 noise).
NEAR_ZERO = 1e-6
NEAR_CONSTANT = 1e-6  # spread relative to the magnitude
GATE_SHAPES: tuple[HW, ...] = ((97, 131), (250, 333), (161, 67))  # odd, non-square, tall


@dataclass(frozen=True)
class Tolerance:
    """How close the exported graph must be to PyTorch."""

    atol: float
    rtol: float
    min_agreement: float  # label outputs: fraction of equal pixels
    max_outliers: float = 0.0  # raw outputs: fraction of elements allowed outside atol + rtol*|ref|
    max_metric_drop: float = 0.0  # fp16/int8: worst allowed metric loss against fp32 on sample images

    @classmethod
    def for_precision(cls, precision: str, atol: Optional[float] = None, rtol: Optional[float] = None) -> "Tolerance":
        base = {
            "fp32": cls(1e-4, 1e-3, 0.999, max_metric_drop=0.005),
            # fp16 keeps ~3 significant digits; int8 is judged on labels and the sample metric.
            "fp16": cls(1e-2, 1e-2, 0.99, max_outliers=1e-3, max_metric_drop=0.01),
            "int8": cls(5e-2, 5e-2, 0.95, max_outliers=0.05, max_metric_drop=0.03),
        }[precision]
        return cls(base.atol if atol is None else atol, base.rtol if rtol is None else rtol, base.min_agreement,
                   base.max_outliers, base.max_metric_drop)


@dataclass
class OutputCheck:
    name: str
    kind: str  # "raw" | "labels"
    passed: bool
    max_abs: float = 0.0
    max_rel: float = 0.0  # over elements with |ref| > atol
    outliers: float = 0.0  # fraction outside atol + rtol*|ref|
    agreement: float = 1.0  # labels only

    def describe(self, tol: Tolerance) -> str:
        if self.kind == "labels":
            return (f"output {self.name!r} agrees on {100 * self.agreement:.3f}% of pixels "
                    f"(need >= {100 * tol.min_agreement:.1f}%)")
        return (f"output {self.name!r} max abs err {self.max_abs:.3g}, max rel err {self.max_rel:.3g}, "
                f"{100 * self.outliers:.3g}% of values outside atol {tol.atol:g} + rtol {tol.rtol:g}")


@dataclass
class CaseResult:
    batch: int
    hw: HW
    outputs: list[OutputCheck] = field(default_factory=list)
    error: Optional[str] = None  # PyTorch or onnxruntime failed at this shape, or an output size is wrong

    @property
    def passed(self) -> bool:
        return self.error is None and all(o.passed for o in self.outputs)

    @property
    def label(self) -> str:
        return f"batch {self.batch} at {self.hw[0]}x{self.hw[1]}"


@dataclass
class ParityReport:
    precision: str
    tolerance: Tolerance
    cases: list[CaseResult] = field(default_factory=list)
    seconds: float = 0.0
    divergence: Optional[str] = None
    metric: Optional[dict[str, Any]] = None  # the end-to-end metric on sample images (vs the baseline)
    degenerate: Optional[str] = None  # why the reference output proves nothing (near-zero/constant)
    allow_degenerate: bool = False
    fallback: Optional[str] = None  # why a fixed-size graph replaced the dynamic one (letterbox mode)

    @property
    def cases_passed(self) -> bool:
        return bool(self.cases) and all(c.passed for c in self.cases)

    @property
    def passed(self) -> bool:
        return self.cases_passed and (self.degenerate is None or self.allow_degenerate)

    @property
    def shapes(self) -> list[HW]:
        return sorted({c.hw for c in self.cases})

    def worst(self, kind: str, key: str) -> Optional[float]:
        values = [getattr(o, key) for c in self.cases for o in c.outputs if o.kind == kind]
        if not values:
            return None
        return min(values) if key == "agreement" else max(values)

    def summary(self) -> str:
        parts = [f"parity {'passed' if self.passed else 'FAILED'} on {len(self.cases)} cases over "
                 f"{len(self.shapes)} shapes"]
        if (err := self.worst("raw", "max_abs")) is not None:
            parts.append(f"worst max abs err {err:.2g}")
        if (agree := self.worst("labels", "agreement")) is not None:
            parts.append(f"min label agreement {100 * agree:.3f}%")
        if self.degenerate:
            parts.append(f"degenerate reference ({self.degenerate})")
        if self.fallback:
            parts.append("fixed-size graph")
        if self.metric:
            m = self.metric
            parts.append(f"{m['metric']} {m['candidate']} vs {m['baseline']}: {m['change']:+.4f} "
                         f"on {m['images']} images")
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        return data


def gate_shapes(profile: Profile) -> list[HW]:
    """The shapes the gate runs: traced, not divisible by strides/bins, non-square, min, max."""
    if profile.static:
        return [profile.opt_hw]
    wanted = [profile.opt_hw, *GATE_SHAPES, profile.min_hw, profile.max_hw]
    shapes: list[HW] = []
    for hw in wanted:
        if not profile.contains(hw):
            log.info("parity: %dx%d lies outside the profile %s..%s, skipped", *hw, profile.min_hw, profile.max_hw)
        elif hw not in shapes:
            shapes.append(tuple(hw))
    return shapes


def gate_cases(profile: Profile) -> list[tuple[int, HW]]:
    if profile.static:  # the only shapes the contract can produce: HxW at batch 1 and the max batch
        return [(b, profile.opt_hw) for b in sorted({1, profile.max_batch})]
    batches = sorted({1, min(profile.max_batch, MAX_PARITY_BATCH)})
    # The largest batch at the profile maximum costs the most and checks nothing new
    # (unless the maximum is the traced shape, as in a static graph).
    return [(b, hw) for hw in gate_shapes(profile) for b in batches
            if b == 1 or hw != profile.max_hw or hw == profile.opt_hw]


def compare_output(name: str, got: np.ndarray, ref: np.ndarray, tol: Tolerance) -> OutputCheck:
    if got.shape != ref.shape:
        return OutputCheck(name, "raw", False, max_abs=float("inf"), outliers=1.0)
    if np.issubdtype(ref.dtype, np.integer):
        agreement = float((got == ref).mean()) if ref.size else 1.0
        return OutputCheck(name, "labels", agreement >= tol.min_agreement, agreement=agreement)
    ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
    diff = np.abs(got64 - ref64)
    finite = np.isfinite(got64)
    diff[~finite] = np.inf
    bound = tol.atol + tol.rtol * np.abs(ref64)
    outliers = float((diff > bound).mean()) if diff.size else 0.0
    big = np.abs(ref64) > tol.atol
    max_rel = float((diff[big] / np.abs(ref64[big])).max()) if big.any() else 0.0
    max_abs = float(diff.max()) if diff.size else 0.0
    passed = bool(finite.all()) and outliers <= tol.max_outliers
    return OutputCheck(name, "raw", passed, max_abs=max_abs, max_rel=max_rel, outliers=outliers)


def check_graph_io(model_path: Path, contract: ModelContract) -> Optional[str]:
    """The graph's input/outputs against the contract; a fixed H/W where the contract says dynamic
    means the export baked the traced size in."""
    graph = onnx.load(str(model_path), load_external_data=False).graph
    inputs = [(i.name, [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]) for i in graph.input]
    if [n for n, _ in inputs] != [INPUT_NAME]:
        return f"the graph's inputs are {[n for n, _ in inputs]}, expected [{INPUT_NAME!r}]"
    dims = inputs[0][1]
    axes = {"batch": 0}
    if contract.static_shape is None:
        axes.update(zip(("height", "width"), contract.hw_axes))
    for axis, idx in axes.items():
        if isinstance(dims[idx], int) and dims[idx] > 0:
            return (f"the exported graph fixed the input {axis} to {dims[idx]} (the traced size): the model's "
                    f"forward turns the input size into a Python number (e.g. int(x.shape[-1]) or a branch "
                    f"on it); keep sizes symbolic, or pass --static")
    outs = [o.name for o in graph.output]
    want = list(contract.output_names)
    if outs != want:
        return f"the graph's outputs are {outs}, expected {want}"
    return None


def _session(model_path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 4  # a shape that fails is a finding in the report, not an error log line
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


def run_gate(reference: torch.nn.Module, model_path: Path, contract: ModelContract, profile: Profile,
             tolerance: Tolerance, precision: str = "fp32") -> ParityReport:
    """Compare onnxruntime on `model_path` against the eager `reference` (a ServedModel around the
    untouched model). Returns the report; raises nothing (see `enforce`)."""
    start = time.perf_counter()
    report = ParityReport(precision, tolerance)
    session = _session(model_path)
    names = [o.name for o in session.get_outputs()]
    reference.eval()
    spread = _Spread()
    raw: list[np.ndarray] = []
    hook = _watch_raw_output(reference, raw)
    try:
        _run_cases(reference, session, names, contract, profile, tolerance, report, spread, raw)
    finally:
        if hook is not None:
            hook.remove()
    report.degenerate = spread.degenerate()
    report.seconds = time.perf_counter() - start
    return report


def _watch_raw_output(reference: torch.nn.Module, sink: list) -> Optional[Any]:
    """Keep the wrapped model's own output (logits, before the served argmax) as it runs.

    Degeneracy is judged on it: a trained segmenter may well label noise with one class at
    every pixel, while an untrained one has near-constant logits; the labels cannot tell them apart."""
    inner = getattr(reference, "model", None)
    if not isinstance(inner, torch.nn.Module):
        return None

    def keep(_module, _inputs, output):
        try:
            sink.append(primary_output(output).detach().float().numpy())
        except TypeError:
            pass

    try:
        return inner.register_forward_hook(keep)
    except RuntimeError:  # TorchScript modules take no hooks: judge the served output instead
        return None


def _run_cases(reference, session, names, contract, profile, tolerance, report, spread, raw) -> None:
    for i, (batch, hw) in enumerate(gate_cases(profile)):
        x = sample_input(contract, batch, hw, seed=1000 + i)
        case = CaseResult(batch, hw)
        report.cases.append(case)
        try:
            with torch.no_grad():
                ref = [t.numpy() for t in reference(x)]
        except Exception as exc:  # the user's model at a size it cannot take: a finding, not a crash
            case.error = f"the PyTorch model itself fails at {hw[0]}x{hw[1]}: {_first_line(exc)}"
            continue
        spread.update(raw.pop() if raw else ref[0])
        raw.clear()
        case.error = _size_error(names, ref, hw)
        if case.error:
            continue
        try:
            got = session.run(names, {INPUT_NAME: x.numpy()})
        except Exception as exc:  # onnxruntime's shape/kernel failures at this size
            case.error = f"onnxruntime failed: {_first_line(exc)}"
            continue
        case.outputs = [compare_output(n, g, r, tolerance) for n, g, r in zip(names, got, ref)]
        log.debug("parity %s: %s", case.label, "ok" if case.passed else "FAILED")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


def _size_error(names: list[str], ref: list[np.ndarray], hw: HW) -> Optional[str]:
    """Every served output is at the input resolution (the contract's promise), at every shape."""
    for name, out in zip(names, ref):
        if tuple(out.shape[-2:]) != tuple(hw):
            return (f"output {name!r} is {out.shape[-2]}x{out.shape[-1]} for a {hw[0]}x{hw[1]} input (the contract "
                    "promises the input size): the model crops or rounds sizes it cannot divide; serve it at sizes "
                    "it divides (--resize stride:N with its patch size or stride, or letterbox:HxW)")
    return None


class _Spread:
    """Magnitude, range and label set of the reference's primary output over every gate case."""

    def __init__(self) -> None:
        self.lo, self.hi, self.peak = np.inf, -np.inf, 0.0
        self.labels: set[int] = set()
        self.integer = False

    def update(self, out: np.ndarray) -> None:
        if out.size == 0:
            return
        if np.issubdtype(out.dtype, np.integer):
            self.integer = True
            self.labels.update(np.unique(out).tolist()[:2])
            return
        finite = out[np.isfinite(out)].astype(np.float64)
        if finite.size:
            self.lo, self.hi = min(self.lo, finite.min()), max(self.hi, finite.max())
            self.peak = max(self.peak, float(np.abs(finite).max()))

    def degenerate(self) -> Optional[str]:
        if self.integer:
            if len(self.labels) == 1:
                return f"every pixel is class {next(iter(self.labels))} at every gate shape"
            return None
        if self.hi < self.lo:
            return None  # no output seen (every case failed): the failures say it
        if self.peak < NEAR_ZERO:
            return f"the output is near zero everywhere (max |value| {self.peak:.3g})"
        if self.hi - self.lo <= NEAR_CONSTANT * self.peak:
            return f"the output is near-constant ({self.lo:.6g} .. {self.hi:.6g})"
        return None


def failure_message(report: ParityReport) -> str:
    bad = [c for c in report.cases if not c.passed]
    if not bad:
        if report.degenerate and not report.allow_degenerate:
            return (f"parity gate failed ({report.precision}): the PyTorch reference is degenerate: "
                    f"{report.degenerate}, so matching it proves nothing; check the weights (untrained or not "
                    "loaded?) or pass --allow-degenerate; nothing was published")
        return f"parity gate failed ({report.precision}): no case ran; nothing was published"
    first = bad[0]
    if first.error:
        what = first.error
    else:
        worst = [o for o in first.outputs if not o.passed][0]
        what = worst.describe(report.tolerance)
    msg = (f"parity gate failed ({report.precision}) at {first.label}: {what}; "
           f"{len(bad)} of {len(report.cases)} cases failed")
    if report.divergence:
        msg += f"; first diverging module: {report.divergence}"
    return msg + "; nothing was published"


def enforce(report: ParityReport) -> None:
    if not report.passed:
        raise ParityError(failure_message(report), report)
    log.info("%s in %.1f s", report.summary(), report.seconds)


def first_failing_input(report: ParityReport, contract: ModelContract) -> Optional[torch.Tensor]:
    """The input of the first case whose outputs differ, regenerated from its seed (for the
    divergence probe); None when no case got as far as comparing (PyTorch itself failed, or the
    output size was wrong: no module comparison can explain those)."""
    for i, case in enumerate(report.cases):
        if not case.passed and case.outputs:
            return sample_input(contract, case.batch, case.hw, seed=1000 + i)
    return None
