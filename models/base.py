"""The base every zoo model shares: encoder -> decoder -> 1x1 classifier -> resize -> task output."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import resize_to


class DenseModel(nn.Module):
    """Owns `forward` and `predict`; subclasses only wire `encoder` and `decoder`.

    forward: (B, 3, H, W) normalised float -> (B, C, H, W): logits (segmentation),
    positive depth in metres (depth, C=1) or alpha in [0, 1] (matting, C=1)."""

    def __init__(self, task: str, encoder: nn.Module, decoder: nn.Module, decoder_channels: int,
                 out_channels: int) -> None:
        super().__init__()
        self.task = task
        self.encoder = encoder
        self.decoder = decoder
        self.classifier = nn.Conv2d(decoder_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.classifier(self.decoder(self.encoder(x)))
        out = resize_to(out, x.shape[-2:])
        if self.task == "depth":
            return F.softplus(out) + 1e-3
        if self.task == "matting":
            return torch.sigmoid(out)
        return out

    @torch.inference_mode()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"expected a (B, 3, H, W) float tensor, got shape {tuple(x.shape)}; "
                "add a batch dim with x[None] or move channels first with x.permute(0, 3, 1, 2)"
            )
        if self.training:
            self.eval()
        return self(x)
