"""User models for the export tests, loaded through `--module file.py:factory` like a user's own.

- `PoolNet`: SyncBatchNorm, nn.AdaptiveAvgPool2d((2, 3)) and a functional F.adaptive_avg_pool2d,
  with its output at 1/4 of the input size (the served graph upsamples it).
- `BrokenNet`: its head branches on a Python int of the input size, so the exporter bakes the
  traced branch into the graph; the parity gate must catch it and name the head.
- `TinyNet`: a few convs, the cheapest thing to export (kill tests, precision variants).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _randomise_bn(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BN statistics, so that a wrong BN conversion would show in the numbers."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def _conv_sbn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.SyncBatchNorm(cout), nn.ReLU())


class PoolNet(nn.Module):
    """(B, 3, H, W) -> (B, num_classes, ceil(H/4), ceil(W/4)) logits."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv_sbn(3, 8, 2), _conv_sbn(8, 8, 2))
        self.pool = nn.AdaptiveAvgPool2d((2, 3))
        self.proj = nn.Conv2d(8, 8, 1)
        self.head = nn.Conv2d(24, num_classes, 1)
        torch.manual_seed(0)
        for p in self.parameters():
            nn.init.normal_(p, std=0.5)
        _randomise_bn(self, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.stem(x)
        size = f.shape[-2:]
        a = F.interpolate(self.proj(self.pool(f)), size=size, mode="bilinear", align_corners=False)
        b = F.interpolate(F.adaptive_avg_pool2d(f, (3, 2)), size=size, mode="bilinear", align_corners=False)
        return self.head(torch.cat([f, a, b], dim=1))


def build_pool_net(num_classes: int = 4) -> PoolNet:
    """The same model through a factory function (export tells class from function)."""
    return PoolNet(num_classes)


class SizeDependentHead(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if x.shape[-1] > 100:  # a Python bool on the size: the exporter keeps the traced branch only
            out = out.flip(1)  # wide inputs get the classes in reverse order: the labels change
        return out


class BrokenNet(nn.Module):
    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = SizeDependentHead(8, num_classes)
        torch.manual_seed(0)
        for p in self.parameters():
            nn.init.normal_(p, std=0.5)
        _randomise_bn(self, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class TinyNet(nn.Module):
    """Two conv-BN-ReLU blocks at stride 2 and a 1x1 head; output at 1/2 resolution."""

    def __init__(self, num_classes: int = 3, task: str = "segmentation") -> None:
        super().__init__()
        out = num_classes if task == "segmentation" else 1
        self.task = task
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, 1, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Conv2d(8, out, 1)
        torch.manual_seed(0)
        for p in self.parameters():
            nn.init.normal_(p, std=0.5)
        _randomise_bn(self, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.body(x))
        if self.task == "depth":
            return F.softplus(out) + 1e-3
        if self.task == "matting":
            return torch.sigmoid(out)
        return out
