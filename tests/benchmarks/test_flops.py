"""benchmarks.flops: FLOPs against the textbook count, and a GEMM rate that is a rate."""

from __future__ import annotations

import pytest

from benchmarks.flops import gemm_gflops, module_gflop


def test_convolution_and_linear_flops_are_two_per_multiply_add():
    torch = pytest.importorskip("torch")
    conv = torch.nn.Conv2d(3, 8, kernel_size=3, padding=1, bias=False)
    # 8 output channels x 3 input channels x 3x3 taps per output pixel, 16x24 pixels, 2 FLOPs each.
    assert module_gflop(conv, (16, 24)) * 1e9 == 2 * 8 * 3 * 9 * 16 * 24
    net = torch.nn.Sequential(conv, torch.nn.ReLU(), torch.nn.Conv2d(8, 4, kernel_size=1, bias=False))
    assert module_gflop(net, (16, 24)) * 1e9 == 2 * (8 * 3 * 9 + 4 * 8) * 16 * 24


def test_gemm_rate_is_positive_and_plausible_for_a_cpu():
    rate = gemm_gflops(n=256, repeats=3)
    assert 0.5 < rate < 1e5  # GFLOP/s: more than a calculator, less than a data centre
