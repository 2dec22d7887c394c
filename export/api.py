"""`export_model(settings)`: load -> rewrite -> export ONNX -> parity gate -> variants -> publish.

Everything is staged; only a model that passed the gate is renamed into the repository. In
letterbox mode a model whose dynamic-size graph cannot pass falls back to a fixed-size graph (the
client only ever sends HxW); in stride mode it is refused with the guard that fixes its size.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

import torch

from clients.contract import ONNX_FILE, PLAN_FILE, ModelContract
from clients.files import atomic_write

from . import accuracy
from .divergence import first_divergence
from .errors import ExportError, ParityError
from .hints import patch_size, resize_hint
from .metadata import build_contract, resolve_resize, resolve_task
from .onnx_export import TRACE_BATCH, convert_fp16, export_onnx, pin_input_hw, probe_input, size_guards
from .parity import ParityReport, Tolerance, check_graph_io, enforce, failure_message, first_failing_input, run_gate
from .quantize import Int8Settings, build_int8
from .repository import Publisher
from .rewrites import rewrite_modules, torchscript_to_module
from .settings import ExportSettings, Profile, PublishResult
from .sources import LoadedModel, load_model
from .tensorrt import build_plan, require_tensorrt
from .wrapper import ServedModel, check_channels, probe_output

log = logging.getLogger(__name__)


def export_model(settings: ExportSettings, int8: Optional[Int8Settings] = None) -> PublishResult:
    """Export, verify and publish one model; raises ExportError (ParityError when the gate fails).

    `--report` is written whatever happens: the gate's report, or the error that stopped the export."""
    try:
        return _export_model(settings, int8)
    except Exception as exc:
        report = getattr(exc, "report", None)
        _write_report(settings, report if isinstance(report, ParityReport) else None, exc)
        raise


def _export_model(settings: ExportSettings, int8: Optional[Int8Settings] = None) -> PublishResult:
    settings.check()
    timings: dict[str, float] = {}
    start = time.perf_counter()
    if settings.tensorrt:
        require_tensorrt()  # fail in a second, not after the export
    loaded = load_model(settings)
    contract, resize_output = _contract_for(settings, loaded)
    profile = Profile.for_contract(contract, settings)
    timings["load"] = time.perf_counter() - start
    with Publisher(settings.repository, settings.name, settings.version, settings.force) as pub:
        reference = ServedModel(loaded.module, contract, resize_output).eval()
        served = ServedModel(_exportable(loaded, contract, profile), contract, resize_output).eval()

        # sample images: the end-to-end metric check (and int8 calibration), loaded once
        samples = accuracy.load_samples(settings.calibration, contract.task, settings.samples)
        fp32 = pub.work_dir() / "fp32.onnx"
        tol = Tolerance.for_precision("fp32", settings.atol, settings.rtol)
        contract, profile, report = _export_fp32(settings, loaded, reference, served, contract, profile, fp32,
                                                 tol, timings)
        try:
            report.metric = _metric_check(accuracy.torch_runner(reference, contract), accuracy.onnx_runner(fp32),
                                          ("pytorch", "fp32"), contract, samples, report)
            timings["parity"] = report.seconds
            if settings.precision != "fp32":
                final = _variant(settings, pub, fp32, contract, samples, int8)
                tol = Tolerance.for_precision(settings.precision, settings.atol, settings.rtol)
                report = _gate(reference, final, contract, profile, tol, settings.precision,
                               settings.allow_degenerate)
                report.metric = _metric_check(accuracy.onnx_runner(fp32), accuracy.onnx_runner(final),
                                              ("fp32", settings.precision), contract, samples, report)
                timings["variant_parity"] = report.seconds
            else:
                final = fp32
        except ParityError as exc:
            if exc.report is not None:
                exc.report.fallback = report.fallback
            raise
        _write_report(settings, report)

        if contract.platform == "tensorrt_plan":
            timings["tensorrt"] = build_plan(final, pub.model_path(PLAN_FILE), contract, profile, fp16=settings.fp16)
        else:
            final.rename(pub.model_path(ONNX_FILE))
        version, version_dir = pub.commit(contract)
    timings["total"] = time.perf_counter() - start
    files = sorted(p for p in version_dir.iterdir())
    result = PublishResult(version_dir.parent, version, version_dir, contract, report, files, timings)
    log.info("%s in %.1f s", result.summary(), timings["total"])
    return result


def _export_fp32(settings: ExportSettings, loaded: LoadedModel, reference: torch.nn.Module,
                 served: torch.nn.Module, contract: ModelContract, profile: Profile, path: Path, tol: Tolerance,
                 timings: dict[str, float]) -> tuple[ModelContract, Profile, ParityReport]:
    """Export and gate the fp32 graph; returns the contract and profile it was published for.

    Letterbox mode: when the dynamic-size graph fails (the export, or the gate at other sizes), a
    fixed HxW graph with a dynamic batch replaces it: the contract only ever sends HxW. Stride mode
    must take any size, so the failure stands, with torch.export's guard as its cause."""
    try:
        timings["export"] = export_onnx(served, contract, profile, path, settings.opset)
        return contract, profile, _gate(reference, path, contract, profile, tol, "fp32", settings.allow_degenerate)
    except ExportError as exc:
        degenerate_only = isinstance(exc, ParityError) and exc.report is not None and exc.report.cases_passed
        if degenerate_only or profile.static:
            raise
        if contract.resize.mode != "letterbox":
            raise _refusal(exc, served, contract, profile, patch_size(loaded.module)) from exc
        reason = str(exc).removesuffix("; nothing was published")
    fixed_contract = replace(contract, static_shape=profile.opt_hw)
    fixed = Profile.fixed(profile.opt_hw, profile.max_batch)
    log.info("the dynamic-size graph failed (%s); letterbox:%dx%d only ever sends %dx%d images, so a fixed-size "
             "graph with a dynamic batch replaces it, gated at batch 1 and %d", reason, *fixed.opt_hw,
             *fixed.opt_hw, fixed.max_batch)
    try:
        report = None
        if path.is_file():  # the traced graph is often right at its traced size: pin H/W and gate that
            try:
                pin_input_hw(path, fixed_contract, fixed.opt_hw)
                report = _gate(reference, path, fixed_contract, fixed, tol, "fp32", settings.allow_degenerate)
            except ParityError as exc:
                if exc.report is not None and exc.report.cases_passed:
                    raise  # degenerate: a new export would not change that
                log.debug("the pinned graph failed too (%s); exporting a fixed-size graph", exc)
        if report is None:
            timings["export"] = timings.get("export", 0.0) + export_onnx(served, fixed_contract, fixed, path,
                                                                         settings.opset)
            report = _gate(reference, path, fixed_contract, fixed, tol, "fp32", settings.allow_degenerate)
    except ParityError as exc:
        if exc.report is not None:
            exc.report.fallback = reason
        raise
    report.fallback = reason
    return fixed_contract, fixed, report


def _refusal(exc: ExportError, served: torch.nn.Module, contract: ModelContract, profile: Profile,
             patch: Optional[int]) -> ExportError:
    """The stride-mode failure, led by the real cause: torch.export's guards on the input size."""
    guards = size_guards(served, contract, profile)
    hint = resize_hint(patch, contract.resize)
    parts = []
    if guards:
        parts.append("stride mode serves any size, but the model's code fixes its input size: torch.export "
                     "guard " + "; guard ".join(guards) + " (make that code size-independent, or serve a fixed "
                     "size with --resize letterbox:HxW)")
    parts.append(str(exc).removesuffix("; nothing was published"))
    if hint:
        parts.append(hint)
    message = "; ".join(parts) + "; nothing was published"
    return ParityError(message, exc.report) if isinstance(exc, ParityError) else ExportError(message)


def _contract_for(settings: ExportSettings, loaded: LoadedModel) -> tuple[ModelContract, bool]:
    task = loaded.task or resolve_task(settings, loaded.meta)
    patch = patch_size(loaded.module)
    try:
        resize = resolve_resize(settings, loaded.meta)
    except ExportError as exc:
        hint = resize_hint(patch, None)
        raise ExportError(f"{exc}; {hint}" if hint else str(exc)) from exc
    if (hint := resize_hint(patch, resize)) is not None:
        log.warning("%s (--resize %s)", hint, resize)
    opt_hw = (resize.height, resize.width) if resize.mode == "letterbox" else (8 * resize.stride,) * 2
    channels, resize_output = probe_output(loaded.module, probe_input(TRACE_BATCH, opt_hw))
    if task == "segmentation":
        num_classes = loaded.num_classes or settings.num_classes or int(loaded.meta.get("num_classes") or 0) or channels
    else:
        num_classes = 1
    contract = build_contract(settings, loaded.meta, task, num_classes)
    check_channels(channels, contract)
    if resize_output:
        log.info("the model outputs below its input size: the served graph upsamples it (bilinear)")
    return contract, resize_output


def _exportable(loaded: LoadedModel, contract: ModelContract, profile: Profile) -> torch.nn.Module:
    if loaded.kind == "torchscript":
        return torchscript_to_module(loaded.module, probe_input(TRACE_BATCH, profile.opt_hw))
    if loaded.kind == "exported":
        return loaded.module  # a graph: the exact-pooling mode rewrites its aten pooling ops
    return rewrite_modules(loaded.module, probe_input(1, profile.opt_hw))[0]


def _gate(reference: torch.nn.Module, model: Path, contract: ModelContract, profile: Profile,
          tolerance: Tolerance, precision: str, allow_degenerate: bool = False) -> ParityReport:
    problem = check_graph_io(model, contract)
    if problem:
        raise ParityError(f"parity gate failed ({precision}): {problem}; nothing was published")
    report = run_gate(reference, model, contract, profile, tolerance, precision)
    report.allow_degenerate = allow_degenerate
    if report.degenerate and allow_degenerate:
        log.warning("the PyTorch reference is degenerate (%s); publishing anyway (--allow-degenerate)",
                    report.degenerate)
    if not report.passed:
        x = first_failing_input(report, contract)
        if precision == "fp32" and x is not None:  # fp16/int8 differ everywhere a little, by design
            report.divergence = _divergence(reference, model, x)
        raise ParityError(failure_message(report), report)
    enforce(report)
    return report


def _divergence(reference: torch.nn.Module, model: Path, x: torch.Tensor) -> str:
    """The divergence probe is best effort: it never replaces the gate's own finding."""
    try:
        return first_divergence(reference, str(model), x)
    except Exception as exc:  # e.g. the PyTorch model itself fails at this shape
        first = str(exc).strip().splitlines()
        return f"not located (the probe failed: {type(exc).__name__}: {first[0] if first else ''})"


def _variant(settings: ExportSettings, pub: Publisher, fp32: Path, contract: ModelContract,
             samples: list[accuracy.Sample], int8: Optional[Int8Settings] = None) -> Path:
    out = pub.work_dir() / f"{settings.precision}.onnx"
    t = time.perf_counter()
    if settings.fp16:
        if not (settings.gpu or settings.tensorrt):
            log.warning("fp16 for a CPU-only target: onnxruntime's CPU kernels run fp16 3-10%% slower than "
                        "fp32 (measured on 2 cores); publish fp32 or --int8 for CPU serving, or add --gpu")
        convert_fp16(fp32, out)
    else:
        build_int8(fp32, out, contract, samples, int8)  # layers that cost accuracy stay fp32
    log.info("built the %s variant in %.1f s", settings.precision, time.perf_counter() - t)
    return out


def _metric_check(baseline: accuracy.Runner, candidate: accuracy.Runner, names: tuple[str, str],
                  contract: ModelContract, samples: list[accuracy.Sample], report: ParityReport) -> dict:
    """The end-to-end metric on sample images must not drop past the tolerance."""
    t = time.perf_counter()
    metric = accuracy.compare_on_samples(baseline, candidate, contract, samples, names)
    report.seconds += time.perf_counter() - t
    allowed = report.tolerance.max_metric_drop
    log.info("%s on %d sample images (vs %s): %s %.4f, %s %.4f", metric["metric"], metric["images"],
             metric["reference"], names[0], metric[names[0]], names[1], metric[names[1]])
    if not metric["drop"] <= allowed:  # NaN fails too
        report.metric = metric
        raise ParityError(
            f"parity gate failed ({report.precision}): {metric['metric']} drops by {metric['drop']:.4f} from "
            f"{names[0]} to {names[1]} on {metric['images']} sample images (allowed {allowed}); "
            "nothing was published", report)
    return metric


def _write_report(settings: ExportSettings, report: Optional[ParityReport], error: Optional[BaseException] = None) -> None:
    """The gate's report as JSON; when the export stopped before (or outside) the gate, the error."""
    if not settings.report:
        return
    data = report.to_json() if report is not None else {"passed": False, "cases": []}
    if error is not None:
        data["error"] = str(error) or type(error).__name__
    try:
        atomic_write(settings.report, json.dumps(data, indent=2, default=float) + "\n")
    except OSError as exc:  # the export's own outcome matters more than its report
        log.warning("cannot write --report %s: %s", settings.report, exc)


__all__ = ["export_model", "ExportError"]
