"""The DINOv2 training iteration in PyTorch, written from dinov2's `ssl_meta_arch.py`, `dino_head.py`,
`loss/*.py` and `param_groups.py` (dinov2.md §2), as the reference for plugins/pretrain/tests/reference.rs.

Usage: pretrain_reference.py DIR [bfloat16]
       pretrain_reference.py bench STEPS BATCH THREADS [PRESET [DEVICE [PRECISION]]]
           training images/s on ready crops, and the FLOPs of one iteration (torch's
           FlopCounterMode: matrix products, convolutions, attention; forward and backward).
           PRESET `tiny-28` (default; make bench): ViT-Ti with patch 4, 28 / 12 px crops, head
           4096/1024/128. `small`: ViT-S/14, 224 / 98 px RGB crops, dinov2's head 65536/2048/256
           (bench/gpu.sh). Both with 8 local crops. DEVICE `cpu` (default) or `cuda`; PRECISION
           `float32` (default) or `bfloat16` (torch.autocast).

Builds a small timm ViT (28 px, patch 4, 1 channel, D 48, 2 blocks, 3 heads, a mask token) with a
shared DINO/iBOT head (K 64, hidden 32, bottleneck 16, 3 layers), random weights (LayerScale and mask
token random so neither is a no-op), a batch of B = 4 images with 2 global (28 px) and 2 local (12 px)
crops of random pixels and random masks on half of the global crops, and runs 2 iterations:
teacher targets with centering, DINO (local and cross-global pairs), KoLeo on the global cls tokens,
iBOT on the masked patches, backward, per-module clipping at 3.0, torch.optim.AdamW with dinov2's
layer-wise lr decay (0.9), patch-embed lr factor (0.2) and weight-decay exemptions, and the EMA
teacher update. Writes DIR/init.safetensors (the student before), DIR/batch.safetensors (crops and
masks), DIR/expected.safetensors (student and `teacher.` after) and DIR/expected.json (the losses of
each iteration and the schedule values used). With `bfloat16`, the forward passes run under
torch.autocast with bfloat16 and the losses in float32 on their outputs.
"""
import json
import math
import time
import sys
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file
from torch.utils.flop_counter import FlopCounterMode
from timm.models.vision_transformer import VisionTransformer

warnings.filterwarnings("ignore", category=FutureWarning)
torch.manual_seed(0)
# torch.autocast's arguments for the forward passes (`bfloat16` on the command line turns it on).
AUTOCAST = {"device_type": "cpu", "dtype": torch.bfloat16, "enabled": False}
# The test's sizes; `bench` replaces them with a preset's.
B, N_LOCAL, K, D, DEPTH, HEADS, HIDDEN, BOTTLENECK = 4, 2, 64, 48, 2, 3, 32, 16
IMG, LOCAL_IMG, PATCH, CHANS, POS_IMG = 28, 12, 4, 1, 28
DEVICE = "cpu"
STEPS = [
    {"lr": 5e-3, "last_layer_lr": 5e-3, "weight_decay": 0.04, "momentum": 0.9, "teacher_temp": 0.04},
    {"lr": 4e-3, "last_layer_lr": 4e-3, "weight_decay": 0.05, "momentum": 0.95, "teacher_temp": 0.05},
]


class Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.vit = VisionTransformer(img_size=POS_IMG, patch_size=PATCH, in_chans=CHANS, embed_dim=D, depth=DEPTH,
                                     num_heads=HEADS, init_values=1e-5, num_classes=0, dynamic_img_size=True)
        self.mask_token = nn.Parameter(torch.randn(1, D) * 0.5)
        with torch.no_grad():
            for blk in self.vit.blocks:
                blk.ls1.gamma.uniform_(0.25, 0.75)
                blk.ls2.gamma.uniform_(0.25, 0.75)

    def forward(self, x, masks=None):
        m = self.vit
        x = m.patch_embed(x)  # B, H, W, D (dynamic size)
        if masks is not None:
            b, h, w, d = x.shape
            x = torch.where(masks.view(b, h, w, 1), self.mask_token.to(x.dtype).view(1, 1, 1, d), x)
        x = m._pos_embed(x)
        x = m.norm_pre(x)
        x = m.blocks(x)
        x = m.norm(x)
        return x[:, 0], x[:, 1:]


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(D, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, HIDDEN), nn.GELU(),
                                 nn.Linear(HIDDEN, BOTTLENECK))
        self.last_layer = nn.utils.weight_norm(nn.Linear(BOTTLENECK, K, bias=False))
        self.last_layer.weight_g.data.fill_(1)

    def forward(self, x):
        x = F.normalize(self.mlp(x), dim=-1, p=2, eps=1e-12)
        return self.last_layer(x)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = Backbone()
        self.dino_head = Head()


def state(net, prefix=""):
    out = {}
    for name, p in net.named_parameters():
        name = name.replace("backbone.vit.", "backbone.")
        out[prefix + name] = p.detach().clone().contiguous()
    return out


def lr_multiplier(name):
    """dinov2 get_vit_lr_decay_rate with rate 0.9, then the patch_embed factor."""
    layer_id = DEPTH + 1
    if name.startswith("backbone"):
        if any(k in name for k in (".pos_embed", ".patch_embed", ".mask_token", ".cls_token", ".reg_token")):
            layer_id = 0
        elif ".blocks." in name:
            layer_id = int(name[name.find(".blocks."):].split(".")[2]) + 1
    mult = 0.9 ** (DEPTH + 1 - layer_id)
    return mult * 0.2 if "patch_embed" in name else mult


def dino_loss(students, teachers):
    total = 0
    for s in students:
        lsm = F.log_softmax(s / 0.1, dim=-1)
        for t in teachers:
            total -= torch.sum(t * lsm, dim=-1).mean()
    return total


def koleo(x, eps=1e-8):
    x = F.normalize(x, eps=eps, p=2, dim=-1)
    dots = torch.mm(x, x.t())
    n = x.shape[0]
    dots.view(-1)[:: (n + 1)].fill_(-1)
    _, idx = torch.max(dots, dim=1)
    dist = nn.PairwiseDistance(2, eps=eps)(x, x[idx])
    return -torch.log(dist + eps).mean()


def make_batch():
    global_crops = torch.randn(2 * B, CHANS, IMG, IMG)
    local_crops = torch.randn(N_LOCAL * B, CHANS, LOCAL_IMG, LOCAL_IMG)
    patches = (IMG // PATCH) ** 2
    masks = torch.zeros(2 * B, patches, dtype=torch.bool)
    for i in range(0, 2 * B, 2):  # half of the crops, with different counts
        masks[i, torch.randperm(patches)[: (5 + 3 * i) % 25]] = True
    return global_crops, local_crops, masks


def make_nets():
    student, teacher = Net(), Net()
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    return student, teacher


class Trainer:
    """Student, teacher, AdamW with dinov2's parameter groups, and the two centres."""

    def __init__(self, student, teacher):
        self.student, self.teacher = student, teacher
        groups = []
        for name, p in student.named_parameters():
            clean = name.replace("backbone.vit.", "backbone.")
            no_wd = clean.endswith(".bias") or "norm" in clean or "gamma" in clean
            groups.append({"params": [p], "lr_mult": lr_multiplier(clean), "wd_mult": 0.0 if no_wd else 1.0,
                           "last": "last_layer" in clean})
        self.opt = torch.optim.AdamW(groups, betas=(0.9, 0.999))
        self.dino_center = torch.zeros(1, K, device=DEVICE)
        self.ibot_center = torch.zeros(1, K, device=DEVICE)

    def step(self, global_crops, local_crops, masks, v):
        student, teacher, opt = self.student, self.teacher, self.opt
        dino_center, ibot_center = self.dino_center, self.ibot_center
        mask_idx = masks.flatten().nonzero().flatten()
        weights = (1 / masks.sum(-1).clamp(min=1.0)).unsqueeze(-1).expand_as(masks)[masks]
        temp = v["teacher_temp"]
        with torch.no_grad(), torch.autocast(**AUTOCAST):
            t_cls, t_patch = teacher.backbone(global_crops)
            t_cls = torch.cat((t_cls[B:], t_cls[:B]))
            t_cls_logits = teacher.dino_head(t_cls).float()
            t_patch_logits = teacher.dino_head(t_patch.flatten(0, 1)[mask_idx]).float()
        with torch.no_grad():
            t_dino = F.softmax((t_cls_logits - dino_center) / temp, dim=-1)
            t_ibot = F.softmax((t_patch_logits - ibot_center) / temp, dim=-1)
            self.dino_center = dino_center * 0.9 + t_cls_logits.mean(0, keepdim=True) * 0.1
            self.ibot_center = ibot_center * 0.9 + t_patch_logits.mean(0, keepdim=True) * 0.1
        with torch.autocast(**AUTOCAST):
            s_cls, s_patch = student.backbone(global_crops, masks)
            s_local_cls, _ = student.backbone(local_crops)
            s_local_logits = student.dino_head(s_local_cls).float()
            s_global_logits = student.dino_head(s_cls).float()
            s_patch_logits = student.dino_head(s_patch.flatten(0, 1)[mask_idx]).float()
        s_cls = s_cls.float()
        pairs = N_LOCAL * 2 + 2
        t_list = list(t_dino.view(2, B, K))
        local = dino_loss(list(s_local_logits.chunk(N_LOCAL)), t_list) / pairs
        glob = dino_loss([s_global_logits], [t_dino]) * 2 / pairs
        kol = 0.1 * sum(koleo(c) for c in s_cls.chunk(2))
        lsm = F.log_softmax(s_patch_logits / 0.1, dim=-1)
        ibot = -(torch.sum(t_ibot * lsm, dim=-1) * weights).sum() / (2 * B) * 2 * 0.5
        total = local + glob + kol + ibot
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(student.backbone.parameters(), 3.0)
        torch.nn.utils.clip_grad_norm_(student.dino_head.parameters(), 3.0)
        for g in opt.param_groups:
            g["lr"] = (v["last_layer_lr"] if g["last"] else v["lr"]) * g["lr_mult"]
            g["weight_decay"] = v["weight_decay"] * g["wd_mult"]
        opt.step()
        with torch.no_grad():
            m = v["momentum"]
            for pt, ps in zip(teacher.parameters(), student.parameters()):
                pt.mul_(m).add_(ps.detach(), alpha=1 - m)
        return {"dino_local": local.item(), "dino_global": glob.item(), "koleo": kol.item(),
                "ibot": ibot.item(), "total": total.item()}


PRESETS = {
    # B is the command line's; N_LOCAL, K, D, DEPTH, HEADS, HIDDEN, BOTTLENECK, IMG, LOCAL_IMG, PATCH,
    # CHANS, POS_IMG (the position embedding's side, interpolated to IMG as dinoflow does).
    "tiny-28": (8, 4096, 192, 12, 3, 1024, 128, 28, 12, 4, 1, 28),
    "small": (8, 65536, 384, 12, 6, 2048, 256, 224, 98, 14, 3, 518),
}


def bench(steps, batch, threads, preset="tiny-28", device="cpu", precision="float32"):
    global B, N_LOCAL, K, D, DEPTH, HEADS, HIDDEN, BOTTLENECK, IMG, LOCAL_IMG, PATCH, CHANS, POS_IMG, DEVICE
    B = batch
    N_LOCAL, K, D, DEPTH, HEADS, HIDDEN, BOTTLENECK, IMG, LOCAL_IMG, PATCH, CHANS, POS_IMG = PRESETS[preset]
    DEVICE = device
    AUTOCAST.update(device_type=device, enabled=precision == "bfloat16")
    torch.set_num_threads(threads)
    student, teacher = make_nets()
    trainer = Trainer(student.to(device), teacher.to(device))
    crops = [t.to(device) for t in make_batch()]
    v = STEPS[0]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    trainer.step(*crops, v)  # warm-up
    with FlopCounterMode(display=False) as counter:
        trainer.step(*crops, v)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step(*crops, v)
    sync()
    secs = time.perf_counter() - start
    print(json.dumps({"preset": preset, "device": device, "precision": precision, "steps": steps,
                      "batch": batch, "threads": threads, "seconds": secs,
                      "images_per_s": steps * batch / secs, "flops_per_step": counter.get_total_flops()}))


def main():
    if sys.argv[1] == "bench":
        bench(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), *sys.argv[5:8])
        return
    out = Path(sys.argv[1])
    AUTOCAST["enabled"] = sys.argv[2:] == ["bfloat16"]
    out.mkdir(parents=True, exist_ok=True)
    student, teacher = make_nets()
    init = state(student)
    save_file(init, str(out / "init.safetensors"))
    global_crops, local_crops, masks = make_batch()
    save_file({"global": global_crops, "local": local_crops, "masks": masks.to(torch.uint8)},
              str(out / "batch.safetensors"))
    trainer = Trainer(student, teacher)
    losses = [trainer.step(global_crops, local_crops, masks, v) for v in STEPS]
    expected = state(student)
    expected.update(state(teacher, "teacher."))
    save_file(expected, str(out / "expected.safetensors"))
    (out / "expected.json").write_text(json.dumps({"steps": STEPS, "losses": losses, "prototypes": K}))
    print(json.dumps({"losses": losses, "tensors": len(init)}))


if __name__ == "__main__":
    main()
