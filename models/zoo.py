"""The zoo: FCN, UNet, PSPNet and UPerNet, each a small encoder-decoder wired on DenseModel."""

from __future__ import annotations

import torch
from torch import nn

from .base import DenseModel
from .layers import ConvBNReLU, Encoder, PyramidPooling, resize_to
from .registry import register_model


class FCNDecoder(nn.Module):
    """FCN head on the deepest feature: two convs, no skips."""

    def __init__(self, cin: int, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(ConvBNReLU(cin, channels), ConvBNReLU(channels, channels))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.block(feats[-1])


class UNetDecoder(nn.Module):
    """Upsample to each skip's own size (any H/W works), concat, two convs."""

    def __init__(self, channels: list[int]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(ConvBNReLU(cdeep + cskip, cskip), ConvBNReLU(cskip, cskip))
            for cdeep, cskip in zip(channels[:0:-1], channels[-2::-1])
        )

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = feats[-1]
        for block, skip in zip(self.blocks, feats[-2::-1]):
            x = block(torch.cat([resize_to(x, skip.shape[-2:]), skip], dim=1))
        return x  # (B, channels[0], H/2, W/2)


class PSPDecoder(nn.Module):
    """Pyramid pooling (bins 1, 2, 3, 6) on the deepest feature, then a fusing conv."""

    def __init__(self, cin: int, channels: int, bins: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.ppm = PyramidPooling(cin, cin // 4, bins)
        self.fuse = ConvBNReLU(self.ppm.out_channels, channels)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.fuse(self.ppm(feats[-1]))


class UPerDecoder(nn.Module):
    """UPerNet: PPM on the deepest level, a top-down FPN, all levels fused at the finest."""

    def __init__(self, in_channels: list[int], channels: int) -> None:
        super().__init__()
        self.ppm = PyramidPooling(in_channels[-1], in_channels[-1] // 4)
        self.ppm_out = ConvBNReLU(self.ppm.out_channels, channels)
        self.lateral = nn.ModuleList(ConvBNReLU(c, channels, kernel=1) for c in in_channels[:-1])
        self.smooth = nn.ModuleList(ConvBNReLU(channels, channels) for _ in in_channels[:-1])
        self.fuse = ConvBNReLU(channels * len(in_channels), channels)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        top = self.ppm_out(self.ppm(feats[-1]))
        laterals = [lat(f) for lat, f in zip(self.lateral, feats[:-1])] + [top]
        for i in range(len(laterals) - 1, 0, -1):  # top-down pathway
            laterals[i - 1] = laterals[i - 1] + resize_to(laterals[i], laterals[i - 1].shape[-2:])
        outs = [s(l) for s, l in zip(self.smooth, laterals[:-1])] + [laterals[-1]]
        size = outs[0].shape[-2:]
        return self.fuse(torch.cat([outs[0]] + [resize_to(o, size) for o in outs[1:]], dim=1))


@register_model("fcn")
def fcn(task: str, out_channels: int, width: int = 16) -> DenseModel:
    enc = Encoder(width)
    return DenseModel(task, enc, FCNDecoder(enc.channels[-1], width * 4), width * 4, out_channels)


@register_model("unet")
def unet(task: str, out_channels: int, width: int = 16) -> DenseModel:
    enc = Encoder(width)
    return DenseModel(task, enc, UNetDecoder(enc.channels), enc.channels[0], out_channels)


@register_model("pspnet")
def pspnet(task: str, out_channels: int, width: int = 16) -> DenseModel:
    enc = Encoder(width)
    return DenseModel(task, enc, PSPDecoder(enc.channels[-1], width * 4), width * 4, out_channels)


@register_model("upernet")
def upernet(task: str, out_channels: int, width: int = 16) -> DenseModel:
    enc = Encoder(width)
    return DenseModel(task, enc, UPerDecoder(enc.channels, width * 2), width * 2, out_channels)
