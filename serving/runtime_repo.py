"""Derive the embedded mode's runtime repository from a standard Triton model repository.

Every ONNX model keeps its name, inputs, outputs, max batch, dynamic batching, instance groups,
warm-up and parameters, but runs `backend: "python"` with the generic `runtime/model.py`, which
loads the source `model.onnx` (linked, not copied) with onnxruntime. TensorRT plans are skipped.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Optional

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from clients.contract import (CONFIG_FILE, DEFAULT_MAX_QUEUE_SIZE, LABELS_FILE, ONNX_FILE, PARAM_PREFIX, PLAN_FILE, ContractError, ModelContract,
                              is_valid_name, list_versions, read_config_file)

from .errors import ServingError

log = logging.getLogger(__name__)

RUNTIME_MODEL = Path(__file__).parent / "runtime" / "model.py"
# Keys the generic model.py reads; they ride on the derived config only, never on the source one.
REQUESTED_KIND_PARAM = PARAM_PREFIX + "runtime.requested_kind"
ACCELERATOR_PARAM = PARAM_PREFIX + "runtime.accelerator"
ACCELERATOR_PRECISION_PARAM = PARAM_PREFIX + "runtime.accelerator_precision"
# Request bounds model.py enforces (written by export; derived from the contract when a config predates them).
MAX_SIZE_PARAM = PARAM_PREFIX + "max_size"
MAX_BYTES_PARAM = PARAM_PREFIX + "max_request_bytes"
# Safe by default: a config without a queue bound gets the contract's default one.


def find_models(repository: Path) -> list[Path]:
    """Model directories of a repository, as Triton sees them (hidden ones excluded)."""
    repository = Path(repository)
    if not repository.is_dir():
        raise ServingError(
            f"model repository {repository} does not exist: export a model into it first "
            "(`python -m export ...`) or pass the right --repository"
        )
    # Hidden directories are staging areas, never models (Triton would still try them: see DESIGN.md).
    models = sorted(p for p in repository.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not models:
        raise ServingError(
            f"model repository {repository} has no models (no <name>/{CONFIG_FILE}): "
            "export one with `python -m export ...` first"
        )
    return models


def derive_repository(source: Path, runtime: Path, gpu_present: Optional[bool] = None) -> dict[str, str]:
    """(Re)build the whole runtime repository; returns {model: why it is skipped}."""
    models = find_models(source)
    if runtime.exists():
        shutil.rmtree(runtime)
    runtime.mkdir(parents=True)
    gpu = gpu_available() if gpu_present is None else gpu_present
    skipped = {}
    for model_dir in models:
        if not is_valid_name(model_dir.name):
            # Never handed to Triton: such a name can break a URL or a log line, and it can never load.
            skipped[model_dir.name] = (f"{model_dir.name!r} is not a valid model name (letters, digits, '_', "
                                       "'-', '.'); rename the directory")
            continue
        reason = derive_model(model_dir, runtime, gpu)
        if reason:
            skipped[model_dir.name] = reason
    return skipped


def derive_model(model_dir: Path, runtime: Path, gpu_present: bool) -> Optional[str]:
    """(Re)derive one model's runtime directory; returns why it is skipped, or None.

    A config that does not parse is copied as it is, so Triton itself reports the reason.
    """
    dest = Path(runtime) / model_dir.name
    config_path = model_dir / CONFIG_FILE
    try:
        config = read_config_file(config_path)
    except (OSError, ContractError) as exc:
        log.warning("model %s: config unreadable (%s); Triton will report why it fails", model_dir.name, exc)
        _replace_dir(dest, lambda tmp: _copy_if_exists(config_path, tmp / CONFIG_FILE))
        return None
    if config.platform == "tensorrt_plan" or config.backend == "tensorrt" or (
        not list_versions(model_dir, ONNX_FILE) and list_versions(model_dir, PLAN_FILE)
    ):
        if dest.exists():
            shutil.rmtree(dest)
        return (
            f"TensorRT plan ({PLAN_FILE}): the embedded python backend runs ONNX only; serve it with a "
            "full Triton (--tritonserver PATH or the NGC container)"
        )
    runtime_config = runtime_model_config(config, gpu_present)
    versions = list_versions(model_dir, ONNX_FILE)

    def build(tmp: Path) -> None:
        (tmp / CONFIG_FILE).write_text(text_format.MessageToString(runtime_config), encoding="utf-8")
        if (model_dir / LABELS_FILE).is_file():
            (tmp / LABELS_FILE).symlink_to((model_dir / LABELS_FILE).resolve())
        for number, version in versions.items():
            (tmp / str(number)).mkdir()
            # model.py is copied so the runtime repository is self-contained; the ONNX file is linked
            # (it can be large) and model.py loads its real path, so external data files resolve.
            shutil.copyfile(RUNTIME_MODEL, tmp / str(number) / RUNTIME_MODEL.name)
            (tmp / str(number) / ONNX_FILE).symlink_to((version / ONNX_FILE).resolve())

    _replace_dir(dest, build)
    if not versions:
        log.warning("model %s: no <version>/%s; Triton will report it unavailable", model_dir.name, ONNX_FILE)
    return None


def runtime_model_config(config: mc.ModelConfig, gpu_present: bool) -> mc.ModelConfig:
    """The source config with the python backend in place of onnxruntime; all else kept."""
    out = mc.ModelConfig()
    out.CopyFrom(config)
    out.ClearField("platform")
    out.backend = "python"
    out.ClearField("default_model_filename")  # for the python backend it names the .py file
    accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
    if len(accelerators):
        # Triton's ORT accelerator settings mean nothing to the python backend; model.py reads them.
        out.parameters[ACCELERATOR_PARAM].string_value = accelerators[0].name
        precision = accelerators[0].parameters.get("precision_mode", "FP32")
        out.parameters[ACCELERATOR_PRECISION_PARAM].string_value = precision
        out.optimization.ClearField("execution_accelerators")
    _add_request_bounds(config, out)
    for group in out.instance_group:
        if group.kind == mc.ModelInstanceGroup.KIND_GPU:
            out.parameters[REQUESTED_KIND_PARAM].string_value = "KIND_GPU"
            if not gpu_present:
                # Triton refuses KIND_GPU without a GPU; run on CPU and let model.py say so.
                group.kind = mc.ModelInstanceGroup.KIND_CPU
                group.ClearField("gpus")
    return out


def _add_request_bounds(source: mc.ModelConfig, out: mc.ModelConfig) -> None:
    """Make sure the derived config carries the bounds model.py enforces and a bounded queue."""
    if out.HasField("dynamic_batching") and not out.dynamic_batching.default_queue_policy.max_queue_size:
        out.dynamic_batching.default_queue_policy.max_queue_size = DEFAULT_MAX_QUEUE_SIZE
    if MAX_SIZE_PARAM in out.parameters and MAX_BYTES_PARAM in out.parameters:
        return
    try:
        contract = ModelContract.from_model_config(source)
    except ContractError as exc:  # not a pixelport model: model.py then checks only dtype and shape
        log.warning("model %s: no pixelport contract (%s); its requests are not size-bounded", source.name, exc)
        return
    if MAX_SIZE_PARAM not in out.parameters:
        out.parameters[MAX_SIZE_PARAM].string_value = "{}x{}".format(*contract.size_limit)
    if MAX_BYTES_PARAM not in out.parameters:
        out.parameters[MAX_BYTES_PARAM].string_value = str(contract.max_request_bytes)


def gpu_available(proc_gpus: Path = Path("/proc/driver/nvidia/gpus"), dev: Path = Path("/dev")) -> bool:
    """True when the NVIDIA driver shows at least one GPU: in /proc, or as a /dev/nvidiaN device node
    (sandboxed kernels such as gVisor may not expose the /proc entry)."""
    if proc_gpus.is_dir() and any(proc_gpus.iterdir()):
        return True
    return any(p.name[len("nvidia"):].isdigit() for p in dev.glob("nvidia[0-9]*"))


def _replace_dir(dest: Path, build) -> None:
    """Build in a staging dir beside the runtime repository (same filesystem, but not a directory
    Triton lists as a model), then swap it in, so Triton never reads a half-built model."""
    staging = dest.parent.parent / ".staging"
    tmp = staging / f"{dest.name}.{uuid.uuid4().hex[:8]}.new"
    tmp.mkdir(parents=True)
    try:
        build(tmp)
        old = None
        if dest.exists():
            old = staging / f"{dest.name}.{uuid.uuid4().hex[:8]}.old"
            os.rename(dest, old)
        os.rename(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _copy_if_exists(src: Path, dst: Path) -> None:
    if src.is_file():
        shutil.copyfile(src, dst)
