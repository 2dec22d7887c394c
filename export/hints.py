"""What the model itself says about the sizes it can take: a ViT's patch size, so that refusals and
the missing-size error can suggest `--resize stride:N` (or letterbox sizes it divides)."""

from __future__ import annotations

from typing import Optional

from torch import nn

from clients.contract import Resize


def patch_size(model: nn.Module) -> Optional[int]:
    """The patch size of a ViT-style patch embedding (a conv on RGB whose kernel equals its stride,
    as ViT, DPT, Dinov2 and BEiT embed patches), or None."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            k, s = module.kernel_size, module.stride
            if k == s and k[0] == k[1] and k[0] > 1:
                return int(k[0])
            return None  # the first conv on RGB is an ordinary stem
    return None


def resize_hint(patch: Optional[int], resize: Optional[Resize]) -> Optional[str]:
    """A sentence suggesting sizes the patch grid divides, or None when the resize already fits."""
    if not patch:
        return None
    if resize is not None and resize.mode == "stride" and resize.stride % patch == 0:
        return None
    if resize is not None and resize.mode == "letterbox" and resize.height % patch == 0 and resize.width % patch == 0:
        return None
    return (f"the model embeds {patch}x{patch} patches: serve it with --resize stride:{patch} (any size, padded to "
            f"a multiple of {patch}) or --resize letterbox:HxW with H and W multiples of {patch}")
