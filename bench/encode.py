"""open_clip encode rate, and the share of time spent outside the model.

Encodes N synthetic JPEG photos (640×480, written to a temporary folder before the clock starts)
and N captions the way ``inforank ingest --images/--texts`` does (``sources.image_items``: file
read, content hash, decode + the model's own preprocessing on decoder threads, one batch ahead of
the model, transfer, forward pass; ``encode_texts``: tokenizer + forward), and times the model's
forward pass alone on the same preprocessed tensors in the same run. The share outside the model
is ``1 − forward / end-to-end``. Random-initialised weights cost exactly what trained ones cost.
Runs on CUDA with fp16 when a GPU is present, else on the CPU.

    python -m bench.encode [--model ViT-B-32] [--n 512] [--batch 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import report


def _photos(root: Path, n: int, seed: int = 0) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    paths = []
    for i in range(n):
        arr = np.roll(base, i * 7, axis=1) // 2 + rng.integers(0, 128, (1, 640, 3), dtype=np.uint8)
        p = root / f"{i:06d}.jpg"
        Image.fromarray(arr).save(p, quality=90)
        paths.append(p)
    return paths


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def run(model: str = "ViT-B-32", n: int = 512, batch: int = 64) -> dict:
    import torch
    from PIL import Image

    from indexer.encoders import ClipEncoder
    from indexer.items import Item
    from indexer.sources import image_items

    enc = ClipEncoder.load(model, "random-init")
    texts = [f"a photo of object number {i} on a table next to a {i % 7}-coloured cup" for i in range(n)]
    with tempfile.TemporaryDirectory() as d:
        paths = _photos(Path(d), n)
        enc.encode_images(paths[:batch])  # warm-up (kernels, allocator)
        enc.encode_texts(texts[:batch])
        _sync(enc.device)
        t = time.perf_counter()
        got = [it for it in image_items(Path(d), enc, batch) if isinstance(it, Item)]
        _sync(enc.device)
        img_e2e = time.perf_counter() - t
        assert len(got) == n
        t = time.perf_counter()
        tensors = []
        for p in paths:
            with Image.open(p) as im:
                tensors.append(enc.preprocess(im.convert("RGB")))
        dec_serial = time.perf_counter() - t
        t = time.perf_counter()
        assert not any(isinstance(f.result(), str) for f in enc.decode(paths))
        dec_pool = time.perf_counter() - t
    dtype = torch.float16 if enc.device.startswith("cuda") else torch.float32
    batches = [torch.stack(tensors[s : s + batch]).to(enc.device, dtype) for s in range(0, n, batch)]
    _sync(enc.device)
    with torch.no_grad():
        t = time.perf_counter()
        for b in batches:
            enc.model.encode_image(b)
        _sync(enc.device)
        img_fwd = time.perf_counter() - t
        t = time.perf_counter()
        for s in range(0, n, batch):
            enc.encode_texts(texts[s : s + batch])
        _sync(enc.device)
        txt_e2e = time.perf_counter() - t
        tokens = [enc.tokenizer(texts[s : s + batch]).to(enc.device) for s in range(0, n, batch)]
        _sync(enc.device)
        t = time.perf_counter()
        for tk in tokens:
            enc.model.encode_text(tk)
        _sync(enc.device)
        txt_fwd = time.perf_counter() - t
    return report(
        "encode",
        {
            "model": model,
            "device": enc.device if not enc.device.startswith("cuda") else torch.cuda.get_device_name(),
            "precision": "fp16" if enc.device.startswith("cuda") else "fp32",
            "n": n,
            "batch": batch,
            "images_per_s": n / img_e2e,
            "images_forward_only_per_s": n / img_fwd,
            "images_share_outside_model": 1 - img_fwd / img_e2e,
            "decode_preprocess_serial_per_s": n / dec_serial,
            "decode_preprocess_threads_per_s": n / dec_pool,
            "texts_per_s": n / txt_e2e,
            "texts_forward_only_per_s": n / txt_fwd,
            "texts_share_outside_model": 1 - txt_fwd / txt_e2e,
        },
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    a = ap.parse_args()
    run(a.model, a.n, a.batch)
