"""A segmentation toy whose every execution is slow, whatever its batch size: for batching tests.

One execution of `slow_segmentation_onnx` runs a fixed chain of matrix products (seeded by the
batch's mean pixel, so onnxruntime cannot fold it into a constant) and adds 0 x its sum to the
confidence. The answers are those of `serving_toys.segmentation_onnx`; only the time differs.
While one execution runs, every request that arrives queues, so a burst sent at once is batched
by Triton's dynamic batcher by construction, not by the luck of the scheduler.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

import serving_toys as toys

SLOW_SIDE = 384  # (SLOW_SIDE x SLOW_SIDE) @ (SLOW_SIDE x SLOW_SIDE) per step
SLOW_STEPS = 40  # about 0.4 s per execution on one idle thread of these machines (more when busy)


def slow_segmentation_onnx(seed: int = 0, steps: int = SLOW_STEPS) -> onnx.ModelProto:
    """`serving_toys.segmentation_onnx(seed=seed)`, plus `steps` batch-size-independent matmuls."""
    model = toys.segmentation_onnx(seed=seed)
    graph = model.graph
    rng = np.random.default_rng(1000 + seed)
    # scaled so tanh(m @ w) neither saturates nor vanishes: the work is real floating point
    w = (rng.normal(0, 1, (SLOW_SIDE, SLOW_SIDE)) / np.sqrt(SLOW_SIDE)).astype(np.float32)
    graph.initializer.extend([numpy_helper.from_array(w, "slow_w"),
                              numpy_helper.from_array(np.zeros((), np.float32), "slow_zero")])
    confidence = next(n for n in graph.node if n.output and n.output[0] == "confidence")
    confidence.output[0] = "confidence_fast"
    nodes = [helper.make_node("ReduceMean", ["x"], ["slow_seed"], keepdims=0),  # () from the batch
             helper.make_node("Mul", ["slow_w", "slow_seed"], ["slow_0"])]
    for i in range(steps):
        nodes += [helper.make_node("MatMul", [f"slow_{i}", "slow_w"], [f"slow_mm{i}"]),
                  helper.make_node("Tanh", [f"slow_mm{i}"], [f"slow_{i + 1}"])]
    nodes += [helper.make_node("ReduceSum", [f"slow_{steps}"], ["slow_sum"], keepdims=0),
              helper.make_node("Mul", ["slow_sum", "slow_zero"], ["slow_nothing"]),
              helper.make_node("Add", ["confidence_fast", "slow_nothing"], ["confidence"])]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return model
