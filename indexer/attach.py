"""Adopting an existing Qdrant collection of CLIP vectors: statistics by scrolling, scores as
payload, indexes added — the user's vectors and payload fields are never rewritten."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from indexer import collections as catalog
from indexer import schema
from indexer.api import Indexer
from indexer.collections import EXTERNAL
from indexer.errors import InvalidInputError
from indexer.items import Item
from indexer.schema import SCORE_FIELDS
from indexer.writer import BatchReport

PAGE = 512


def resolve_vectors(
    sizes: dict[str, int], image_vector: str | None, text_vector: str | None, modality: str | None
) -> dict[str, str]:
    """Map modalities to the collection's vector names, from flags or the names themselves."""
    if image_vector is not None or text_vector is not None:
        names = {m: v for m, v in (("image", image_vector), ("text", text_vector)) if v is not None}
    elif list(sizes) == [""]:
        if modality not in ("image", "text"):
            raise InvalidInputError("The collection has one unnamed vector: say which modality it is with --modality.")
        names = {modality: ""}
    else:
        names = {m: m for m in ("image", "text") if m in sizes}
        if not names:
            raise InvalidInputError(
                f"Vectors are named {sorted(sizes)}: say which is which with --image-vector/--text-vector."
            )
    for v in names.values():
        if v not in sizes:
            raise InvalidInputError(f"The collection has no vector named {v!r} (it has {sorted(sizes)}).")
    dims = {sizes[v] for v in names.values()}
    if len(dims) != 1:
        raise InvalidInputError(f"Image and text vectors must share one dimension, got {sorted(dims)}.")
    return names


def attach(
    ix: Indexer,
    qdrant_collection: str,
    *,
    name: str | None = None,
    image_vector: str | None = None,
    text_vector: str | None = None,
    modality: str | None = None,
    model: str = EXTERNAL,
    pretrained: str = "",
    tau: float = 1.0,
    min_count: int = 32,
    batch_size: int = 2048,
    progress: Callable[[int], None] | None = None,
) -> BatchReport:
    sizes = ix.store.vector_sizes(qdrant_collection)
    names = resolve_vectors(sizes, image_vector, text_vector, modality)
    dim = sizes[next(iter(names.values()))]
    cname = catalog.check_name(name or qdrant_collection)
    existing = {c.name: c for c in ix.collections()}
    if cname not in existing:
        with ix.sessions.begin() as s:
            catalog.insert(
                s,
                name=cname,
                model=model,
                pretrained=pretrained,
                dim=dim,
                tau=tau,
                min_count=min_count,
                qdrant_collection=qdrant_collection,
                vector_names=names,
                attached=True,
            )
        ix.store.add_float_indexes(
            qdrant_collection, [f for f in SCORE_FIELDS if (schema.parse(f) or ("",))[0] in names]
        )
    else:
        catalog.check_model(existing[cname], model, pretrained)
    return ix.add(cname, _scroll(ix, qdrant_collection, names), batch_size=batch_size, progress=progress)


def _scroll(ix: Indexer, qc: str, names: dict[str, str]) -> Iterator[Item]:
    offset: Any = None
    while True:
        page = ix.store.scroll(qc, offset, PAGE, True)
        for h in page.points:
            vecs = {m: np.asarray(h.vectors[v]) for m, v in names.items() if h.vectors and v in h.vectors}
            if vecs:
                hashes = {m: _stable_hash(v) for m, v in vecs.items()}
                yield Item(vecs, id=h.payload.get(schema.ID, _user_id(h.id)), point_id=h.id, hashes=hashes)
        offset = page.next_offset
        if offset is None:
            return


def _stable_hash(v: np.ndarray) -> str:
    """Hash of the direction, rounded to 1e-6: Qdrant may re-normalise a stored cosine vector
    (qdrant-client's local mode does on query), flipping last bits; that is not new content."""
    u = v / np.linalg.norm(v) if np.linalg.norm(v) > 0 else v
    return hashlib.sha256(np.round(u, 6).astype("<f4").tobytes()).hexdigest()


def _user_id(pid: str) -> str | int:
    return int(pid) if pid.isdigit() else pid
