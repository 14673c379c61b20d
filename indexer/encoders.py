"""open_clip encoders for images and texts (the optional ``clip`` extra).

Weights come from a model name + pretrained tag (the hub) or a local checkpoint path. Offline,
the weights' host is probed for two seconds first, so a missing network fails fast instead of
after open_clip's ~50 s of retries; with ``HF_HUB_OFFLINE=1`` the local cache is used as is.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from indexer.errors import InvalidItemError, ModelUnavailableError

RANDOM_INIT = "random-init"
HOW_TO = (
    "Download the weights on a machine with network access and pass the checkpoint path as "
    "--pretrained /path/to/open_clip_model.pt (or .safetensors), or set HF_HUB_OFFLINE=1 "
    "with the weights already in the Hugging Face cache."
)


@dataclass
class ClipEncoder:
    """A loaded open_clip model with its own preprocessing; batched, CUDA/fp16 when present."""

    model_name: str
    pretrained: str
    model: Any
    preprocess: Any
    tokenizer: Any
    device: str
    dim: int
    _pool: ThreadPoolExecutor | None = field(default=None, repr=False)

    @classmethod
    def load(cls, model_name: str, pretrained: str, device: str | None = None) -> ClipEncoder:
        try:
            import open_clip
            import torch
        except ImportError as exc:
            raise ModelUnavailableError("Encoding needs the optional extra: pip install 'inforank[clip]'.") from exc
        if model_name not in open_clip.list_models():
            raise ModelUnavailableError(f"open_clip has no model {model_name!r}; see open_clip.list_models().")
        dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
        tag = None if pretrained in ("", RANDOM_INIT) else pretrained
        if tag and not Path(tag).exists() and tag not in open_clip.list_pretrained_tags_by_model(model_name):
            raise ModelUnavailableError(
                f"{tag!r} is neither a checkpoint file nor a pretrained tag of {model_name}. {HOW_TO}"
            )
        if tag and not Path(tag).exists() and not offline():
            _probe(open_clip.get_pretrained_cfg(model_name, tag), model_name, tag)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name,
                pretrained=tag,
                device=dev,
                precision="fp16" if dev.startswith("cuda") else "fp32",
            )
        except Exception as exc:  # hub/network errors come in many classes
            raise ModelUnavailableError(
                f"Cannot load open_clip weights {model_name}:{pretrained} ({exc.__class__.__name__}: "
                f"{str(exc)[:200]}). {HOW_TO}"
            ) from exc
        model.eval()
        tokenizer = open_clip.get_tokenizer(model_name)
        dim = (
            int(model.text_projection.shape[1])
            if hasattr(model, "text_projection") and model.text_projection is not None
            else int(model.encode_text(tokenizer(["x"]).to(dev)).shape[1])
        )
        return cls(model_name, pretrained or RANDOM_INIT, model, preprocess, tokenizer, dev, dim)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        for i, t in enumerate(texts):
            if not t or not t.strip():
                raise InvalidItemError(f"text {i} is empty")
        with torch.no_grad():
            tokens = self.tokenizer(list(texts)).to(self.device)
            return self.model.encode_text(tokens).float().cpu().numpy().astype(np.float64)

    @property
    def batch_size(self) -> int:
        """Images per forward pass: large on a GPU, where decoding is the cost to hide."""
        return 256 if self.device.startswith("cuda") else 32

    def _decoder(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1), thread_name_prefix="decode")
        return self._pool

    def _load(self, p: Path) -> Any:
        """The preprocessed tensor of one image file, or why it is unusable (a str)."""
        from PIL import Image, UnidentifiedImageError

        try:
            if Path(p).stat().st_size == 0:
                raise InvalidItemError("zero-byte file")
            with Image.open(p) as im:
                im.load()
                return self.preprocess(im.convert("RGB"))
        except (OSError, UnidentifiedImageError, InvalidItemError) as exc:
            return f"unreadable image {Path(p).name}: {exc}"

    def decode(self, paths: Sequence[Path]) -> list[Future[Any]]:
        """Start decoding and preprocessing ``paths`` on the decoder threads (PIL and torch
        release the GIL), so the next batch is read while the model runs on this one."""
        pool = self._decoder()
        return [pool.submit(self._load, p) for p in paths]

    def encode_images(
        self, paths: Sequence[Path], decoded: list[Future[Any]] | None = None
    ) -> tuple[np.ndarray, dict[int, str]]:
        """Vectors of the readable images, and the reason for each unreadable one (by index).
        ``decoded``: the :meth:`decode` of the same paths, started earlier."""
        import torch

        loaded = [f.result() for f in (decoded if decoded is not None else self.decode(paths))]
        bad = {i: x for i, x in enumerate(loaded) if isinstance(x, str)}
        ok = [i for i in range(len(loaded)) if i not in bad]
        tensors = [loaded[i] for i in ok]
        if not tensors:
            return np.zeros((0, self.dim)), bad
        with torch.no_grad():
            batch = torch.stack(tensors).to(self.device)
            if self.device.startswith("cuda"):
                batch = batch.half()
            vecs = self.model.encode_image(batch).float().cpu().numpy().astype(np.float64)
        out = np.zeros((len(paths), self.dim))
        out[ok] = vecs
        return out, bad


def encode_query(
    model: str, pretrained: str, *, text: str | None = None, image: Path | None = None
) -> tuple[np.ndarray, str]:
    """A text or image query as a vector of a collection's model, and its modality."""
    from indexer.errors import InvalidQueryError

    if (text is None) == (image is None):
        raise InvalidQueryError("Give exactly one of a query text or a query image.")
    if model == "external":
        raise InvalidQueryError("The collection holds external vectors: query with a vector of your own model.")
    enc = ClipEncoder.load(model, pretrained)
    if text is not None:
        return enc.encode_texts([text])[0], "text"
    vecs, bad = enc.encode_images([Path(image)])  # type: ignore[arg-type]
    if bad:
        raise InvalidQueryError(bad[0])
    return vecs[0], "image"


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")


def _probe(cfg: dict[str, Any], model_name: str, tag: str, timeout: float = 2.0) -> None:
    host = "huggingface.co" if cfg.get("hf_hub") else urlparse(cfg.get("url", "")).hostname
    if not host:
        return
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as exc:
        raise ModelUnavailableError(
            f"Cannot fetch open_clip weights {model_name}:{tag}: {host} is unreachable ({exc}). " + HOW_TO
        ) from exc
