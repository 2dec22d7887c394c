"""Build a TensorRT plan from the parity-checked ONNX, with a min/opt/max optimization profile.

Needs the `tensorrt` Python package and an NVIDIA GPU; without them `--tensorrt` fails with a
clear error (`--gpu` instead lets ONNX Runtime's TensorRT accelerator build engines at load time).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from clients.contract import INPUT_NAME, ModelContract

from .errors import ExportError
from .settings import Profile

log = logging.getLogger(__name__)


def require_tensorrt():
    """The tensorrt module, or an ExportError saying how to get it."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise ExportError(
            "--tensorrt needs the `tensorrt` Python package on a machine with an NVIDIA GPU "
            "(pip install tensorrt); or use --gpu to have Triton's ONNX Runtime build TensorRT "
            "engines at load time"
        ) from exc
    return trt


def input_shapes(contract: ModelContract, profile: Profile) -> tuple[tuple[int, ...], ...]:
    """(min, opt, max) input shapes of the served graph, batch first."""
    return (contract.input_shape(1, *profile.min_hw), contract.input_shape(max(1, profile.max_batch // 2), *profile.opt_hw),
            contract.input_shape(profile.max_batch, *profile.max_hw))


def build_plan(onnx_path: Path, plan_path: Path, contract: ModelContract, profile: Profile,
               fp16: bool = False, workspace_bytes: int = 1 << 30) -> float:
    """Serialise an engine for `onnx_path` to `plan_path`; returns the build seconds."""
    trt = require_tensorrt()
    start = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT >= 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse the ONNX model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    lo, opt, hi = input_shapes(contract, profile)
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(INPUT_NAME, lo, opt, hi)
    config.add_optimization_profile(opt_profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise ExportError("TensorRT failed to build an engine (see the TensorRT log above)")
    plan_path.write_bytes(bytes(engine))
    # Deserialise once: a plan that does not load must not be published.
    runtime = trt.Runtime(logger)
    if runtime.deserialize_cuda_engine(plan_path.read_bytes()) is None:
        raise ExportError("the TensorRT plan does not deserialise")
    seconds = time.perf_counter() - start
    log.info("built TensorRT plan %s (profile %s / %s / %s) in %.1f s", plan_path.name, lo, opt, hi, seconds)
    return seconds
