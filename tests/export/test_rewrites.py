"""The exportability rewrites: exact adaptive pooling, SyncBatchNorm -> BatchNorm, the pooling mode."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from export.rewrites import (AnyDimBatchNorm, ExactAdaptiveAvgPool2d, ExactPooling, exact_adaptive_avg_pool2d,
                             pooling_matrix, rewrite_modules)
from user_models import PoolNet

SIZES = [1, 2, 3, 5, 6, 7, 13, 17, 31, 61, 83, 97, 131, 200]
BINS = [(1, 1), (2, 2), (2, 3), (3, 2), (6, 6), (4, 7), (1, 6), (6, 1)]


@pytest.mark.parametrize("bins", BINS)
def test_exact_pooling_equals_pytorch_in_float64(bins):
    g = torch.Generator().manual_seed(0)
    for h in SIZES:
        for w in SIZES[::3]:
            x = torch.randn(2, 3, h, w, dtype=torch.float64, generator=g)
            got = exact_adaptive_avg_pool2d(x, bins)
            want = F.adaptive_avg_pool2d(x, bins)
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, msg=f"{h}x{w} -> {bins}")


def test_exact_pooling_sizes_smaller_than_the_bins():
    x = torch.randn(1, 2, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(exact_adaptive_avg_pool2d(x, (6, 6)), F.adaptive_avg_pool2d(x, (6, 6)))
    torch.testing.assert_close(exact_adaptive_avg_pool2d(x, 5), F.adaptive_avg_pool2d(x, 5))


def test_exact_pooling_keeps_a_none_axis_and_int_sizes():
    x = torch.randn(1, 4, 11, 9, dtype=torch.float64)
    torch.testing.assert_close(exact_adaptive_avg_pool2d(x, (None, 3)), F.adaptive_avg_pool2d(x, (None, 3)))
    torch.testing.assert_close(exact_adaptive_avg_pool2d(x, (2, None)), F.adaptive_avg_pool2d(x, (2, None)))
    torch.testing.assert_close(exact_adaptive_avg_pool2d(x, 3), F.adaptive_avg_pool2d(x, 3))


def test_pooling_matrix_rows_follow_pytorch_bin_edges():
    # n=5, b=3: bins [0,2), [1,4), [3,5) -- overlapping, as PyTorch's floor/ceil edges make them
    p = pooling_matrix(5, 3, torch.float64)
    expect = torch.tensor([[.5, .5, 0, 0, 0], [0, 1 / 3, 1 / 3, 1 / 3, 0], [0, 0, 0, .5, .5]], dtype=torch.float64)
    torch.testing.assert_close(p, expect)


def test_rewrite_replaces_sync_bn_and_pooling_without_touching_the_original():
    model = PoolNet()
    clone, counts = rewrite_modules(model)
    assert counts == {"SyncBatchNorm -> BatchNorm": 2, "AdaptiveAvgPool2d -> exact pooling matrices": 1}
    assert any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())  # original untouched
    assert not any(isinstance(m, (nn.SyncBatchNorm, nn.AdaptiveAvgPool2d)) for m in clone.modules())
    assert sum(isinstance(m, AnyDimBatchNorm) for m in clone.modules()) == 2
    assert isinstance(clone.pool, ExactAdaptiveAvgPool2d)
    x = torch.randn(2, 3, 45, 71)
    with torch.no_grad():
        torch.testing.assert_close(clone(x), model(x), rtol=1e-5, atol=1e-5)


def test_pooling_mode_intercepts_functional_and_aten_calls():
    x = torch.randn(1, 2, 7, 5)
    with ExactPooling() as mode:
        a = F.adaptive_avg_pool2d(x, (2, 3))
        b = torch.ops.aten._adaptive_avg_pool2d.default(x, [3, 2])
        c = nn.AdaptiveAvgPool2d(4)(x)
    assert mode.calls == 3
    torch.testing.assert_close(a, F.adaptive_avg_pool2d(x, (2, 3)))
    torch.testing.assert_close(b, F.adaptive_avg_pool2d(x, (3, 2)))
    torch.testing.assert_close(c, F.adaptive_avg_pool2d(x, 4))


class _Pool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x, (2, 3))


def test_pooling_exports_with_symbolic_sizes_and_matches_at_sizes_the_bins_do_not_divide(tmp_path):
    """Traced at 30x40, then run at sizes neither 2 nor 3 divides: the graph is not baked."""
    path = tmp_path / "pool.onnx"
    dims = {0: torch.export.Dim("b", min=1, max=8), 2: torch.export.Dim("h", min=2), 3: torch.export.Dim("w", min=2)}
    with ExactPooling():
        program = torch.onnx.export(_Pool().eval(), (torch.randn(2, 3, 30, 40),), dynamo=True, dynamic_shapes=(dims,),
                                    input_names=["x"], verbose=False)
    program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for h, w in [(13, 17), (61, 83), (6, 200), (97, 131), (2, 2)]:
        x = np.random.default_rng(h).standard_normal((1, 3, h, w)).astype(np.float32)
        got = session.run(None, {"x": x})[0]
        want = F.adaptive_avg_pool2d(torch.from_numpy(x), (2, 3)).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"{h}x{w}")
