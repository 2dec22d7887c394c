"""Third-party architectures from Hugging Face `transformers`, built from tiny configs with random
weights (no downloads), as a user's `--module file.py:factory` would build them.

Each factory returns the stock `transformers` model. Weights are re-drawn with a larger spread than
the library's init (whose DPT depth is ~1e-8 everywhere): a gate that compares near-zero outputs
proves nothing.
"""

from __future__ import annotations

import torch
from torch import nn

SEED = 0


def _non_degenerate(model: nn.Module, std: float = 0.2, seed: int = SEED) -> nn.Module:
    """Re-draw every weight matrix/kernel from N(0, std) and every bias from N(0, std/4); norms keep
    unit scale, so activations stay O(1) through the tiny networks."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)  # O(1) activations
            elif "norm" in name.lower() or "bn" in name.lower() or "layernorm" in name.lower():
                if name.endswith("weight"):
                    p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * std / 4)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def segformer(num_classes: int = 5) -> nn.Module:
    """SegFormer (MiT encoder, all-MLP decoder); logits at H/4.

    Two encoder stages, not the stock four: every op kind stays (overlapping patch embedding,
    efficient attention with and without its sequence-reduction conv, Mix-FFN, the decoder's
    per-stage MLPs and upsampling), at half the export time."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    config = SegformerConfig(num_encoder_blocks=2, hidden_sizes=[8, 16], depths=[1, 1], num_attention_heads=[1, 2],
                             sr_ratios=[2, 1], patch_sizes=[7, 3], strides=[4, 2], mlp_ratios=[4, 4],
                             decoder_hidden_size=32, num_labels=num_classes)
    return _non_degenerate(SegformerForSemanticSegmentation(config))


def upernet_convnext(num_classes: int = 5) -> nn.Module:
    """UperNet (PSP pooling + FPN) on a ConvNeXt backbone.

    Two backbone stages, not the stock four: the FPN still fuses two levels and the PSP module
    still pools the last one into 1, 2, 3 and 6 bins (more bins than it has pixels at small sizes)."""
    from transformers import ConvNextConfig, UperNetConfig, UperNetForSemanticSegmentation

    backbone = ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], out_features=["stage1", "stage2"])
    config = UperNetConfig(backbone_config=backbone, hidden_size=16, use_auxiliary_head=False, num_labels=num_classes)
    return _non_degenerate(UperNetForSemanticSegmentation(config))


def dpt(task: str = "depth") -> nn.Module:
    """DPT (ViT-style encoder, patch 16) for depth.

    Two encoder layers and neck stages, not four: both reassemble by transposed convs (factors 4
    and 2) and fuse, the patch grid is still baked in, and depth still comes out at the input size."""
    from transformers import DPTConfig, DPTForDepthEstimation

    config = DPTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       image_size=64, patch_size=16, backbone_out_indices=[0, 1], reassemble_factors=[4, 2],
                       neck_hidden_sizes=[8, 16], fusion_hidden_size=16, head_in_index=-1)
    return _non_degenerate(DPTForDepthEstimation(config))


def depth_anything(task: str = "depth") -> nn.Module:
    """Depth Anything (Dinov2 backbone, patch 14, DPT head).

    Two backbone layers and neck stages, not four: the neck still reassembles up (transposed conv,
    factor 4) and down (strided conv, factor 0.5) and fuses, and the head still sizes its output
    with `int()` from the patch grid (depth at the input size)."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            image_size=56, patch_size=14, out_features=["stage1", "stage2"],
                            reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, neck_hidden_sizes=[8, 32], reassemble_factors=[4, 0.5],
                                 fusion_hidden_size=16, head_hidden_size=8, reassemble_hidden_size=32, patch_size=14)
    return _non_degenerate(DepthAnythingForDepthEstimation(config))


def mobilevit(num_classes: int = 5) -> nn.Module:
    """MobileViT (conv + unfold/fold transformer blocks, DeepLabV3 ASPP head)."""
    from transformers import MobileViTConfig, MobileViTForSemanticSegmentation

    config = MobileViTConfig(image_size=64, hidden_sizes=[16, 24, 32], neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64],
                             num_attention_heads=2, aspp_out_channels=16, num_labels=num_classes)
    return _non_degenerate(MobileViTForSemanticSegmentation(config))


def glpn(task: str = "depth") -> nn.Module:
    """GLPN (hierarchical MiT encoder, selective feature fusion decoder) for depth."""
    from transformers import GLPNConfig, GLPNForDepthEstimation

    config = GLPNConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 2, 2],
                        decoder_hidden_size=16, head_in_index=-1)
    return _non_degenerate(GLPNForDepthEstimation(config))


def beit(num_classes: int = 5) -> nn.Module:
    """BEiT (ViT, patch 16, relative position bias) with its UperNet-style head."""
    from transformers import BeitConfig, BeitForSemanticSegmentation

    config = BeitConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                        image_size=64, patch_size=16, out_indices=[0, 1, 2, 3], use_relative_position_bias=True,
                        pool_scales=[1, 2, 3, 6], auxiliary_channels=16, use_auxiliary_head=False,
                        num_labels=num_classes)
    return _non_degenerate(BeitForSemanticSegmentation(config))
