"""Writes the ViT parity fixtures: timm DINOv2 models with random weights, inputs and timm's outputs.

Usage: python tests/vit_parity.py OUT_DIR [--weights-only]

For each model (ViT-S/14 without and with 4 registers, and a 2-block D=192 model with timm's packed
SwiGLU feed-forward as in ViT-g, named `swiglu_2block`) this writes OUT_DIR/<model>.weights.safetensors
(timm's state dict, timm key names) and OUT_DIR/<model>.io.safetensors with, per resolution R in
{518 (native grid), 224 (interpolated position embedding)}: `input_R` (2, 3, R, R), `cls_R` (2, D),
`patches_R` (2, N, D) from forward_features, and `last4_cls_R` (n, 2, D): the final-norm cls token
of each of the last n = min(4, depth) blocks (DINOv2's get_intermediate_layers(n, norm=True)). The
Rust test plugins/vision/tests/parity.rs loads these and compares.
"""

import sys

import timm
import torch
from safetensors.torch import save_file
from timm.layers import SwiGLUPacked
from timm.models.vision_transformer import VisionTransformer

MODELS = ["vit_small_patch14_dinov2", "vit_small_patch14_reg4_dinov2", "swiglu_2block"]


def create(name: str) -> torch.nn.Module:
    if name == "swiglu_2block":
        # ViT-g's block design (timm's vit_giant_patch14_dinov2 arguments) at a testable size.
        return VisionTransformer(
            img_size=518, patch_size=14, embed_dim=192, depth=2, num_heads=3, init_values=1e-5,
            mlp_ratio=2.66667 * 2, mlp_layer=SwiGLUPacked, act_layer=torch.nn.SiLU, num_classes=0,
            dynamic_img_size=True,
        )
    return timm.create_model(name, pretrained=False, num_classes=0, dynamic_img_size=True)
RESOLUTIONS = [518, 224]


def randomise(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Random weights everywhere, including LayerScale and norms, so no block is an identity."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(torch.rand(p.shape, generator=gen) * 0.5 + 0.25)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name in ("cls_token", "reg_token", "pos_embed"):
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))


def last4_cls(model, x: torch.Tensor) -> torch.Tensor:
    x = model.patch_embed(x)
    x = model._pos_embed(x)
    x = model.norm_pre(x)
    outs = []
    n = min(4, len(model.blocks))
    for i, blk in enumerate(model.blocks):
        x = blk(x)
        if i >= len(model.blocks) - n:
            outs.append(model.norm(x)[:, 0])
    return torch.stack(outs)


def main(out_dir: str, weights_only: bool) -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1234)
    for name in MODELS:
        model = create(name)
        model.eval()
        randomise(model, gen)
        prefix = 1 + model.num_reg_tokens
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, f"{out_dir}/{name}.weights.safetensors")
        if weights_only:
            continue
        io = {}
        with torch.no_grad():
            for r in RESOLUTIONS:
                x = torch.randn(2, 3, r, r, generator=gen)
                tokens = model.forward_features(x)
                io[f"input_{r}"] = x
                io[f"cls_{r}"] = tokens[:, 0].contiguous()
                io[f"patches_{r}"] = tokens[:, prefix:].contiguous()
                io[f"last4_cls_{r}"] = last4_cls(model, x).contiguous()
        save_file(io, f"{out_dir}/{name}.io.safetensors")
        print(name, {k: tuple(v.shape) for k, v in io.items()})


if __name__ == "__main__":
    main(sys.argv[1], "--weights-only" in sys.argv[2:])
