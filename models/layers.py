"""Building blocks shared by the zoo: conv-BN-ReLU, a small encoder, the pyramid pooling module."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class Encoder(nn.Module):
    """Four stages at strides 2, 4, 8, 16 (widths w, 2w, 4w, 8w). Works for any H/W: each
    stride-2 conv rounds up, and decoders resize to the skip's actual size."""

    def __init__(self, width: int = 16, in_channels: int = 3) -> None:
        super().__init__()
        widths = [width, width * 2, width * 4, width * 8]
        self.channels = widths
        stages, cin = [], in_channels
        for cout in widths:
            stages.append(nn.Sequential(ConvBNReLU(cin, cout, stride=2), ConvBNReLU(cout, cout)))
            cin = cout
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats  # [(B, w, H/2, W/2), ..., (B, 8w, H/16, W/16)]


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling module: adaptive average pooling at several bin counts.

    nn.AdaptiveAvgPool2d with bins > 1 does not export with dynamic H/W; export/ rewrites it into
    an exact, export-safe form, so the model itself stays plain PyTorch."""

    def __init__(self, cin: int, branch_channels: int, bins: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), ConvBNReLU(cin, branch_channels, kernel=1)) for b in bins
        )
        self.out_channels = cin + branch_channels * len(bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [resize_to(branch(x), size) for branch in self.branches]
        return torch.cat([x, *pooled], dim=1)  # (B, cin + n*bc, h, w)


def resize_to(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
