"""The PyTorch peer of the embed benchmark: the same ViT (timm's DINOv2 definition) on the same
number of threads, forward passes only (no data loading), images/s as JSON.

Usage: embed_torch.py small_224|tiny_28 IMAGES BATCH THREADS
"""
import json
import sys
import time

import timm
import torch
from timm.models.vision_transformer import VisionTransformer


def model_for(name: str):
    if name == "small_224":
        m = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, img_size=224)
        return m, (3, 224, 224)
    m = VisionTransformer(img_size=28, patch_size=4, in_chans=1, embed_dim=192, depth=12, num_heads=3,
                          init_values=1e-5, num_classes=0)
    return m, (1, 28, 28)


def main() -> None:
    name, images, batch, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    model, shape = model_for(name)
    model.eval()
    x = torch.randn(batch, *shape)
    with torch.inference_mode():
        model.forward_features(x)  # warm-up
        start = time.perf_counter()
        done = 0
        while done < images:
            model.forward_features(x[: min(batch, images - done)])
            done += min(batch, images - done)
        secs = time.perf_counter() - start
    print(json.dumps({"model": name, "images": done, "seconds": secs, "images_per_s": done / secs}))


if __name__ == "__main__":
    main()
