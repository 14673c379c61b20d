"""Reading bring-your-own vectors and texts: .npy, .npz (with ``ids``), .parquet, JSON lines.

Readers yield :class:`Item` objects, or :class:`Rejection` records for unreadable lines, so one
malformed line never loses the rest of the file.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from indexer.errors import InvalidInputError
from indexer.items import Item, content_hash
from indexer.writer import Rejection

Read = Item | Rejection


def read_vectors(path: Path, modality: str, ids: list[Any] | None = None) -> Iterator[Read]:
    path = Path(path)
    if not path.exists():
        raise InvalidInputError(f"{path} does not exist.")
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        vecs, file_ids = load_arrays(path)
        yield from _rows(vecs, ids or file_ids, modality)
    elif suffix == ".parquet":
        yield from _parquet(path, modality)
    elif suffix in (".jsonl", ".json", ".ndjson"):
        yield from _jsonl_vectors(path, modality)
    else:
        raise InvalidInputError(f"Unsupported vector file {path.name}: use .npy, .npz, .parquet or .jsonl.")


def load_arrays(path: Path) -> tuple[np.ndarray, list[Any] | None]:
    """Vectors (and ids, from an .npz's ``ids`` array) of a .npy/.npz file; every way the file
    can be unusable (empty, truncated, not numeric, pickled objects) is an InvalidInputError."""
    path = Path(path)
    try:
        data = path.read_bytes()  # whole: works for pipes and process substitution as well
    except OSError as exc:
        raise InvalidInputError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    if not data:
        raise InvalidInputError(f"{path} is empty (0 bytes): expected a .npy or .npz array file.")
    try:
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded as z:
                names = [f for f in z.files if f != "ids"]
                if "vectors" not in z.files and not names:
                    raise InvalidInputError(f"{path} holds no vector array (name it 'vectors').")
                vecs = z["vectors"] if "vectors" in z.files else z[names[0]]
                ids = z["ids"].tolist() if "ids" in z.files else None
        else:
            vecs, ids = loaded, None
    except InvalidInputError:
        raise
    except Exception as exc:  # numpy/zipfile raise many kinds for a damaged file
        why = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise InvalidInputError(f"{path} is not a readable .npy/.npz array ({why}).") from None
    if not np.issubdtype(vecs.dtype, np.number) or np.issubdtype(vecs.dtype, np.complexfloating):
        raise InvalidInputError(f"{path} holds {vecs.dtype} values, not real numbers.")
    return vecs, ids


def _rows(vecs: np.ndarray, ids: list[Any] | None, modality: str) -> Iterator[Read]:
    if vecs.ndim != 2:
        raise InvalidInputError(f"expected a 2-D array of vectors, got shape {vecs.shape}.")
    if ids is not None and len(ids) != len(vecs):
        raise InvalidInputError(f"{len(ids)} ids for {len(vecs)} vectors: the counts must match.")
    for i, v in enumerate(vecs):
        yield Item({modality: v}, id=None if ids is None else _id(ids[i]), position=i)


def _id(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _parquet(path: Path, modality: str) -> Iterator[Read]:
    from indexer.errors import require

    pa = require("pyarrow", "parquet", "Reading parquet files")
    pq = require("pyarrow.parquet", "parquet", "Reading parquet files")

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise InvalidInputError(
            f"{path} is not a readable parquet file ({' '.join(str(exc).split())[:200]})."
        ) from None
    cols = table.column_names
    if "vector" not in cols:
        raise InvalidInputError(f"{path} needs a 'vector' column (and optionally 'id').")
    meta_cols = [c for c in cols if c not in ("vector", "id")]
    data = table.to_pydict()
    for i, v in enumerate(data["vector"]):
        meta = {c: data[c][i] for c in meta_cols}
        yield Item(
            {modality: np.asarray(v, dtype=np.float64)},
            id=data.get("id", [None] * (i + 1))[i],
            metadata=meta,
            position=i,
        )


def _jsonl_vectors(path: Path, modality: str) -> Iterator[Read]:
    for lineno, rec in _jsonl(path):
        if isinstance(rec, Rejection):
            yield rec
            continue
        if "vector" not in rec:
            yield Rejection(lineno, rec.get("id"), f"line {lineno + 1}: no 'vector' field")
            continue
        try:
            vec = np.asarray(rec["vector"], dtype=np.float64)
        except (TypeError, ValueError):
            yield Rejection(lineno, rec.get("id"), f"line {lineno + 1}: 'vector' is not numeric")
            continue
        yield Item({modality: vec}, id=rec.get("id"), metadata=rec.get("metadata") or {}, position=lineno)


def _lines(path: Path) -> Iterator[tuple[int, str | Rejection]]:
    """Lines of a text file, each decoded on its own: one line that is not UTF-8 is rejected
    with its number and the others are still read."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise InvalidInputError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    with f:
        for lineno, raw in enumerate(f):
            try:
                yield lineno, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                yield lineno, Rejection(lineno, None, f"line {lineno + 1}: not UTF-8 text")


def _jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    for lineno, line in _lines(path):
        if isinstance(line, Rejection):
            yield lineno, line
            continue
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            yield lineno, Rejection(lineno, None, f"line {lineno + 1}: malformed JSON ({exc.msg})")
            continue
        if not isinstance(rec, dict):
            yield lineno, Rejection(lineno, None, f"line {lineno + 1}: expected a JSON object")
            continue
        yield lineno, rec


def read_texts(path: Path) -> Iterator[tuple[int, Any, str, dict[str, Any]] | Rejection]:
    """Texts: one per line, or JSON lines with ``id``, ``text`` and metadata fields."""
    path = Path(path)
    if not path.exists():
        raise InvalidInputError(f"{path} does not exist.")
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        for lineno, rec in _jsonl(path):
            if isinstance(rec, Rejection):
                yield rec
                continue
            text = rec.get("text")
            if not isinstance(text, str) or not text.strip():
                yield Rejection(lineno, rec.get("id"), f"line {lineno + 1}: empty or missing text")
                continue
            meta = rec.get("metadata") or {k: v for k, v in rec.items() if k not in ("id", "text")}
            yield lineno, rec.get("id"), text, meta
        return
    for lineno, text in _lines(path):
        if isinstance(text, Rejection):
            yield text
        elif text.strip():
            yield lineno, None, text, {}


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def find_images(root: Path) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise InvalidInputError(f"{root} is not a directory of images.")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def text_hash(text: str) -> str:
    return content_hash(text.encode("utf-8"))
