"""What the fp32 numbers mean against the hardware: the model's FLOPs and this machine's GEMM rate.

FLOPs are counted by PyTorch's FlopCounterMode on the eager model at the benchmark's input size
(a multiply-add is 2 FLOPs: convolutions and matmuls, which dominate dense-prediction models).
The peak is a float32 matrix product through NumPy's BLAS on every core, best of a few runs: what
this machine reaches on the friendliest workload there is, so the ratio reads as "fraction of
what the cores can do".
"""

from __future__ import annotations

import time

import numpy as np


def module_gflop(module, hw: tuple[int, int]) -> float:
    """GFLOP of one forward pass of a torch module on a (1, 3, H, W) input."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(torch.zeros(1, 3, *hw))
    return counter.get_total_flops() / 1e9


def model_gflop(checkpoint: str, hw: tuple[int, int]) -> float:
    """GFLOP of the checkpoint's model (the network, without the served pre/post-processing)."""
    from evaluation.predictors import TorchPredictor

    return module_gflop(TorchPredictor(checkpoint).served.model.eval(), hw)


def gemm_gflops(n: int = 1024, repeats: int = 5) -> float:
    """Best float32 GEMM rate of NumPy's BLAS here, in GFLOP/s."""
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
    a @ b  # warm-up: thread pool, page faults
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9
