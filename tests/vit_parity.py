"""Writes the ViT parity fixtures: timm DINOv2 models with random weights, inputs and timm's outputs.

Usage: python tests/vit_parity.py OUT_DIR

For each model (ViT-S/14 without and with 4 registers) this writes OUT_DIR/<model>.weights.safetensors
(timm's state dict, timm key names) and OUT_DIR/<model>.io.safetensors with, per resolution R in
{518 (native grid), 224 (interpolated position embedding)}: `input_R` (2, 3, R, R), `cls_R` (2, 384),
`patches_R` (2, N, 384) from forward_features, and `last4_cls_R` (4, 2, 384): the final-norm cls token
of each of the last four blocks (DINOv2's get_intermediate_layers(n=4, norm=True)). The Rust test
plugins/vision/tests/parity.rs loads these and compares.
"""

import sys

import timm
import torch
from safetensors.torch import save_file

MODELS = ["vit_small_patch14_dinov2", "vit_small_patch14_reg4_dinov2"]
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
    for i, blk in enumerate(model.blocks):
        x = blk(x)
        if i >= len(model.blocks) - 4:
            outs.append(model.norm(x)[:, 0])
    return torch.stack(outs)


def main(out_dir: str) -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1234)
    for name in MODELS:
        model = timm.create_model(name, pretrained=False, num_classes=0, dynamic_img_size=True)
        model.eval()
        randomise(model, gen)
        prefix = 1 + model.num_reg_tokens
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, f"{out_dir}/{name}.weights.safetensors")
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
    main(sys.argv[1])
