"""`export_model(settings)`: load -> rewrite -> export ONNX -> parity gate -> variants -> publish.

Everything is staged; only a model that passed the gate is renamed into the repository.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Optional

import torch

from clients.contract import ONNX_FILE, PLAN_FILE, ModelContract
from clients.files import atomic_write

from . import accuracy
from .divergence import first_divergence
from .errors import ExportError, ParityError
from .metadata import build_contract, resolve_resize, resolve_task
from .onnx_export import TRACE_BATCH, convert_fp16, export_onnx, probe_input
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
    """Export, verify and publish one model; raises ExportError (ParityError when the gate fails)."""
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
        timings["export"] = export_onnx(served, contract, profile, fp32, settings.opset)
        try:
            tol = Tolerance.for_precision("fp32", settings.atol, settings.rtol)
            report = _gate(reference, fp32, contract, profile, tol, "fp32")
            report.metric = _metric_check(accuracy.torch_runner(reference, contract), accuracy.onnx_runner(fp32),
                                          ("pytorch", "fp32"), contract, samples, report)
            timings["parity"] = report.seconds
            if settings.precision != "fp32":
                final = _variant(settings, pub, fp32, contract, samples, int8)
                tol = Tolerance.for_precision(settings.precision, settings.atol, settings.rtol)
                report = _gate(reference, final, contract, profile, tol, settings.precision)
                report.metric = _metric_check(accuracy.onnx_runner(fp32), accuracy.onnx_runner(final),
                                              ("fp32", settings.precision), contract, samples, report)
                timings["variant_parity"] = report.seconds
            else:
                final = fp32
        except ParityError as exc:
            _write_report(settings, exc.report)
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


def _contract_for(settings: ExportSettings, loaded: LoadedModel) -> tuple[ModelContract, bool]:
    task = loaded.task or resolve_task(settings, loaded.meta)
    resize = resolve_resize(settings, loaded.meta)
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
    return rewrite_modules(loaded.module)[0]


def _gate(reference: torch.nn.Module, model: Path, contract: ModelContract, profile: Profile,
          tolerance: Tolerance, precision: str) -> ParityReport:
    problem = check_graph_io(model, contract)
    if problem:
        raise ParityError(f"parity gate failed ({precision}): {problem}; nothing was published")
    report = run_gate(reference, model, contract, profile, tolerance, precision)
    if not report.passed:
        x = first_failing_input(report, contract)
        if precision == "fp32" and x is not None:  # fp16/int8 differ everywhere a little, by design
            report.divergence = first_divergence(reference, str(model), x)
        raise ParityError(failure_message(report), report)
    enforce(report)
    return report


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


def _write_report(settings: ExportSettings, report: Optional[ParityReport]) -> None:
    if settings.report and report is not None:
        atomic_write(settings.report, json.dumps(report.to_json(), indent=2, default=float) + "\n")


__all__ = ["export_model", "ExportError"]
