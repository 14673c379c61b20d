"""Turning files into items: vectors as given, texts and images through an encoder.

Ids: vectors keep the file's ids (or derive one from content + model); texts keep a JSON-lines
``id``; images take their path relative to the folder, without suffix, so ``cats/1.jpg`` pairs
with a text whose id is ``"cats/1"``. Same id, other modality = the same point.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from indexer.errors import InvalidInputError, InvalidItemError
from indexer.items import Item, content_hash
from indexer.readers import find_images, read_texts, read_vectors, text_hash
from indexer.writer import Rejection

Read = Item | Rejection


class Encoder(Protocol):
    @property
    def batch_size(self) -> int: ...
    def encode_texts(self, texts: list[str]) -> np.ndarray: ...
    def decode(self, paths: list[Path]) -> list[Future[Any]]: ...
    def encode_images(
        self, paths: list[Path], decoded: list[Future[Any]] | None = None
    ) -> tuple[np.ndarray, dict[int, str]]: ...


def vector_items(path: Path, modality: str, ids_file: Path | None = None) -> Iterator[Read]:
    ids = None
    if ids_file is not None:
        try:
            text = Path(ids_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInputError(
                f"Cannot read the ids file {ids_file}: {getattr(exc, 'strerror', None) or exc}."
            ) from None
        ids = [ln.strip() for ln in text.splitlines() if ln.strip()]
    yield from read_vectors(path, modality, ids)


def text_items(path: Path, encoder: Encoder, batch: int = 64) -> Iterator[Read]:
    buf: list[tuple[int, Any, str, dict[str, Any]]] = []
    for rec in read_texts(path):
        if isinstance(rec, Rejection):
            yield rec
            continue
        buf.append(rec)
        if len(buf) >= batch:
            yield from _encode_texts(buf, encoder)
            buf = []
    if buf:
        yield from _encode_texts(buf, encoder)


def _encode_texts(buf: list[tuple[int, Any, str, dict[str, Any]]], enc: Encoder) -> Iterator[Read]:
    vecs = enc.encode_texts([t for _, _, t, _ in buf])
    for (lineno, uid, text, meta), v in zip(buf, vecs, strict=True):
        yield Item(
            {"text": v},
            id=uid,
            metadata=meta,
            hashes={"text": text_hash(text)},
            sources={"text": text},
            position=lineno,
        )


def image_items(root: Path, encoder: Encoder, batch: int | None = None) -> Iterator[Read]:
    root = Path(root)
    paths = find_images(root)
    step = batch or encoder.batch_size
    chunks = [paths[s : s + step] for s in range(0, len(paths), step)]
    ahead = encoder.decode(chunks[0]) if chunks else None
    for k, chunk in enumerate(chunks):
        start = k * step
        decoded = ahead
        ahead = encoder.decode(chunks[k + 1]) if k + 1 < len(chunks) else None  # read while encoding
        vecs, bad = encoder.encode_images(chunk, decoded)
        for j, p in enumerate(chunk):
            uid = str(p.relative_to(root).with_suffix(""))
            if j in bad:
                yield Rejection(start + j, uid, bad[j])
                continue
            try:
                h = content_hash(p.read_bytes())
            except OSError as exc:
                yield Rejection(start + j, uid, str(InvalidItemError(f"unreadable image: {exc}")))
                continue
            yield Item(
                {"image": vecs[j]},
                id=uid,
                metadata={},
                hashes={"image": h},
                sources={"image": str(p.resolve())},
                position=start + j,
            )


def count_images(root: Path) -> int:
    return len(find_images(root))


def reads(
    model: str,
    pretrained: str,
    *,
    vectors: Path | None = None,
    modality: str | None = None,
    ids: Path | None = None,
    texts: Path | None = None,
    images: Path | None = None,
) -> tuple[Iterator[Read], int | None]:
    """What ``inforank ingest`` reads for a collection of ``model``: items and rejections from
    exactly one of ``vectors`` (with ``modality``), ``texts`` or ``images``, and how many if known."""
    if sum(x is not None for x in (vectors, texts, images)) != 1:
        raise InvalidInputError("Give exactly one of --vectors, --texts or --images.")
    if vectors is not None:
        if modality not in ("image", "text"):
            raise InvalidInputError("--vectors needs --modality image or --modality text.")
        return vector_items(vectors, modality, ids), None
    if model == "external":
        raise InvalidInputError(
            "The collection holds external vectors: encode texts/images yourself and use --vectors, "
            "or create a collection with --model and --pretrained."
        )
    from indexer.encoders import ClipEncoder

    enc = ClipEncoder.load(model, pretrained)
    if texts is not None:
        return text_items(texts, enc), None
    assert images is not None
    return image_items(images, enc), count_images(images)
