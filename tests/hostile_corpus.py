"""A corpus of malformed and adversarial image files for tests/hostile_inputs.rs, with what
Pillow (an independent decoder) says each one is.

    python tests/hostile_corpus.py make DIR        # writes the files, prints {file: expectation}
    python tests/hostile_corpus.py read STORE FP   # prints the images and errors of an ingest run

Expectations: {"expect": "image", "width", "height", "channels", "format"} for files that must be
ingested (size after EXIF orientation, 1 channel for grey with or without alpha, else 3),
{"expect": "error", "reason": TEXT} for files that must be listed in `errors` with TEXT in the
reason, {"expect": "either"} for damaged files a decoder may or may not recover.
"""

import io
import json
import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image, ImageOps

GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


def gradient(w, h):
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None].repeat(w, 1)
    return Image.fromarray(np.stack([x, y, np.full_like(x, 77)], -1).astype(np.uint8), "RGB")


def encoded(img, fmt, **kw):
    out = io.BytesIO()
    img.save(out, fmt, **kw)
    return out.getvalue()


def with_orientation(img, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encoded(img, "JPEG", exif=exif.tobytes())


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_bomb(w, h, colour=2):
    """A PNG that claims w×h pixels and holds a few rows of zeros."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)
    idat = zlib.compress(b"\0" * (1 << 16), 9)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def jpeg_with_size(w, h):
    """A small JPEG whose frame header is rewritten to claim w×h."""
    data = bytearray(encoded(gradient(16, 16), "JPEG"))
    i = data.index(b"\xff\xc0")
    data[i + 5:i + 9] = struct.pack(">HH", h, w)
    return bytes(data)


def gif_with_screen(w, h):
    data = bytearray(encoded(gradient(8, 8).convert("P"), "GIF"))
    data[6:10] = struct.pack("<HH", w, h)
    return bytes(data)


def make(root):
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    files = {}
    base = gradient(300, 200)
    files["good.jpg"] = encoded(base, "JPEG")
    files["progressive.jpg"] = encoded(base, "JPEG", progressive=True)
    files["png_named.jpg"] = encoded(gradient(64, 48), "PNG")
    files["jpeg_named.png"] = encoded(gradient(50, 40), "JPEG")
    files["no_extension"] = encoded(gradient(33, 22), "JPEG")
    files["UPPER.JPG"] = encoded(gradient(20, 30), "JPEG")
    files["cmyk.jpg"] = encoded(gradient(40, 30).convert("CMYK"), "JPEG")
    files["grey.jpg"] = encoded(gradient(40, 30).convert("L"), "JPEG")
    files["grey16.png"] = encoded(Image.fromarray(np.arange(200, dtype=np.uint16).reshape(10, 20) * 300), "PNG")
    files["palette.png"] = encoded(gradient(30, 20).convert("P", palette=Image.Palette.ADAPTIVE, colors=16), "PNG")
    files["bilevel.png"] = encoded(gradient(30, 20).convert("1"), "PNG")
    files["rgba.png"] = encoded(gradient(30, 20).convert("RGBA"), "PNG")
    files["grey_alpha.png"] = encoded(gradient(30, 20).convert("LA"), "PNG")
    for o in (2, 3, 5, 6, 7, 8):
        files[f"exif_orientation_{o}.jpg"] = with_orientation(gradient(40, 20), o)
    frames = [gradient(24, 16), gradient(24, 16).transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    files["animated.gif"] = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    files["still.gif"] = encoded(gradient(24, 16).convert("P"), "GIF")
    files["image.bmp"] = encoded(gradient(21, 13), "BMP")
    files["image.tiff"] = encoded(gradient(21, 13), "TIFF")
    files["image.webp"] = encoded(gradient(21, 13), "WEBP", lossless=True)
    files["one_pixel.png"] = encoded(gradient(1, 1), "PNG")
    files["very_wide.png"] = encoded(Image.new("L", (10000, 1), 128), "PNG")
    files["very_tall.png"] = encoded(Image.new("RGB", (2, 5000), (1, 2, 3)), "PNG")
    # A decompression bomb within the default limit: 64 million zero pixels in a small file.
    files["zeros_8000x8000.png"] = encoded(Image.new("L", (8000, 8000), 0), "PNG", optimize=False)

    errors = {}
    errors["empty.png"] = (b"", "zero-byte file")
    errors["truncated.jpg"] = (files["good.jpg"][: len(files["good.jpg"]) // 2], "truncated jpeg")
    errors["header_only.png"] = (b"\x89PNG\r\n\x1a\n", "png")
    errors["text.txt"] = (b"this is not an image\n", "unrecognised image format")
    errors["html.png"] = (b"<!doctype html><html><body>hi</body></html>", "unrecognised image format")
    errors["noise.jpg"] = (bytes((i * 7919 + 13) % 251 for i in range(4096)), "unrecognised image format")
    errors["png_bomb_50000x50000.png"] = (png_header_bomb(50000, 50000), "max_pixels")
    errors["png_bomb_grey_100000x100000.png"] = (png_header_bomb(100000, 100000, colour=0), "max_pixels")
    errors["jpeg_bomb_65000x65000.jpg"] = (jpeg_with_size(65000, 65000), "max_pixels")
    errors["gif_bomb_65535x65535.gif"] = (gif_with_screen(65535, 65535), "max_pixels")
    errors["zero_width.png"] = (png_header_bomb(0, 10), "")
    errors["truncated.png"] = (encoded(base, "PNG")[:200], "png")

    either = {}
    # One flipped byte inside the compressed data of a PNG (its CRC no longer matches).
    damaged = bytearray(encoded(base, "PNG"))
    damaged[len(damaged) // 2] ^= 0xFF
    either["flipped_byte.png"] = bytes(damaged)
    # A JPEG with a flipped byte in its entropy-coded data: decoders show garbage, not an error.
    damaged = bytearray(files["good.jpg"])
    damaged[len(damaged) * 2 // 3] ^= 0x55
    either["flipped_byte.jpg"] = bytes(damaged)

    expectations = {}
    for name, data in files.items():
        (root / name).write_bytes(data)
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format.lower()
            mode = im.mode
            im = ImageOps.exif_transpose(im)
            w, h = im.size
        expectations[name] = {"expect": "image", "width": w, "height": h,
                              "channels": 1 if mode in GREY_MODES else 3, "format": fmt}
    for name, (data, reason) in errors.items():
        (root / name).write_bytes(data)
        expectations[name] = {"expect": "error", "reason": reason}
    for name, data in either.items():
        (root / name).write_bytes(data)
        expectations[name] = {"expect": "either"}
    # A link to nowhere: reading it fails.
    os.symlink(root / "does-not-exist.jpg", root / "dangling_link.jpg")
    expectations["dangling_link.jpg"] = {"expect": "error", "reason": ""}
    print(json.dumps(expectations))


def read(store, fingerprint):
    obj = Path(store) / "objects" / fingerprint
    manifest = json.loads((obj / "manifest.json").read_text())
    out = {}
    for port in ("images", "errors"):
        files = [str(obj / f["path"]) for f in manifest["outputs"][port]["files"]]
        table = pq.ParquetDataset(files).read() if files else None
        rows = table.to_pylist() if table is not None else []
        for r in rows:
            r.pop("pixels", None)
        out[port] = rows
    print(json.dumps(out))


if __name__ == "__main__":
    {"make": make, "read": read}[sys.argv[1]](*sys.argv[2:])
