"""What the writer takes: items with per-modality vectors, content hashes and user ids."""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from indexer.errors import InvalidItemError, InvalidQueryError
from indexer.schema import OWNED_FIELDS, RESERVED, RESERVED_PREFIX, SCORE_FIELDS  # noqa: F401  (re-exported)

MODALITIES = ("image", "text")


def other_modality(m: str) -> str:
    return "text" if m == "image" else "image"


_NS = uuid.UUID("7d1d7c1e-2f4e-4f59-9d0e-6a0c5b1f3e21")

UserId = str | int


@dataclass
class Item:
    """One item: an image vector, a text vector or both, with its id and metadata.

    ``id`` is the user's (string or integer), kept as given; ``None`` derives a stable id from
    the content hashes and the model identity. ``hashes`` default to a hash of the raw vector
    bytes; encoders pass the hash of the image file or text instead. ``sources`` keep the text
    itself or the image path, for reports.
    """

    vectors: dict[str, NDArray[np.floating]]
    id: UserId | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    point_id: str | None = None  # an existing Qdrant id (attach); default: derived from the id
    #: where the item stands in its input (0-based row, or line of a JSON-lines file), so a
    #: rejection points at it; None: its position in the stream handed to ``Indexer.add``
    position: int | None = None


def vector_hash(v: NDArray[np.floating]) -> str:
    return hashlib.sha256(np.ascontiguousarray(v, dtype="<f4").tobytes()).hexdigest()


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def item_key(user_id: UserId) -> str:
    """Database key of a user id: JSON, so ``1`` and ``"1"`` stay different items."""
    return json.dumps(user_id)


def point_id(collection: str, key: str) -> str:
    """Qdrant's UUID for an item; users see their own id in every result."""
    return str(uuid.uuid5(_NS, f"{collection}\x00{key}"))


def derived_id(model_identity: str, hashes: dict[str, str]) -> str:
    body = "|".join(f"{m}:{hashes[m]}" for m in sorted(hashes))
    return str(uuid.uuid5(_NS, f"{model_identity}\x00{body}"))


#: limits of what one item may carry, checked before anything is written: the database
#: columns (``item_key`` is VARCHAR(512), ``content_hash`` VARCHAR(64)) and Qdrant's payload
#: (finite numbers, 64-bit integers, valid Unicode) must accept every item that commits.
MAX_KEY_CHARS = 512
MAX_HASH_CHARS = 64
MAX_METADATA_BYTES = 64 * 1024
MAX_SOURCE_BYTES = 1024 * 1024
MAX_DEPTH = 32
INT64 = (-(2**63), 2**63 - 1)


def check_text(s: str, what: str) -> str:
    """A string the database and Qdrant both store: valid Unicode, no NUL character."""
    if "\x00" in s:
        raise InvalidItemError(f"{what} contains a NUL character (\\u0000), which PostgreSQL cannot store")
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidItemError(
            f"{what} is not valid Unicode (a lone surrogate {s[exc.start]!r} at position {exc.start})"
        ) from None
    return s


def _check_int(v: int, what: str) -> int:
    if not INT64[0] <= v <= INT64[1]:
        raise InvalidItemError(f"{what} is an integer outside the signed 64-bit range that Qdrant stores")
    return v


def check_user_id(v: Any) -> UserId:
    if isinstance(v, bool) or not isinstance(v, str | int):
        raise InvalidItemError(f"an id must be a string or an integer, got {v!r:.80}")
    if isinstance(v, int):
        return _check_int(v, "the id")
    if not v.strip():
        raise InvalidItemError("an id must not be empty")
    check_text(v, "the id")
    if len(item_key(v)) > MAX_KEY_CHARS:
        raise InvalidItemError(
            f"the id is too long: at most {MAX_KEY_CHARS} characters once JSON-escaped "
            "(a non-ASCII character counts as 6)"
        )
    return v


def check_hash(m: str, h: Any) -> str:
    if not isinstance(h, str) or not 1 <= len(h) <= MAX_HASH_CHARS or not h.isascii() or not h.isprintable():
        raise InvalidItemError(
            f"the {m} content hash must be 1 to {MAX_HASH_CHARS} printable ASCII characters (e.g. a sha256 hex digest)"
        )
    return h


def check_source(m: str, s: Any) -> str:
    if not isinstance(s, str):
        raise InvalidItemError(f"the {m} source must be a string, got {type(s).__name__}")
    check_text(s, f"the {m} source")
    if len(s.encode("utf-8")) > MAX_SOURCE_BYTES:
        raise InvalidItemError(f"the {m} source is larger than {MAX_SOURCE_BYTES} bytes")
    return s


def _check_value(v: Any, where: str, depth: int) -> None:
    """Every value Qdrant's payload and both databases' JSON columns accept, recursively."""
    if depth > MAX_DEPTH:
        raise InvalidItemError(f"metadata is nested deeper than {MAX_DEPTH} levels")
    if v is None or isinstance(v, bool):
        return
    if isinstance(v, int):
        _check_int(v, f"metadata {where}")
    elif isinstance(v, float):
        if not math.isfinite(v):
            raise InvalidItemError(f"metadata {where} is {v}: only finite numbers can be stored")
    elif isinstance(v, str):
        check_text(v, f"metadata {where}")
    elif isinstance(v, list | tuple):
        for i, x in enumerate(v):
            _check_value(x, f"{where}[{i}]", depth + 1)
    elif isinstance(v, dict):
        for k, x in v.items():
            if isinstance(k, bool) or not isinstance(k, str | int):  # JSON turns integer keys into strings
                raise InvalidItemError(f"metadata keys must be strings, got {k!r:.40} in {where or 'the top level'}")
            check_text(str(k), f"the metadata key {k!r:.40}")
            _check_value(x, f"{where}.{k}" if where else repr(k), depth + 1)
    else:
        raise InvalidItemError(f"metadata {where} is a {type(v).__name__}, which JSON cannot hold")


#: the longest payload field path ``index-field`` takes
MAX_FIELD_PATH = 256


def check_field_path(field: Any) -> str:
    """A payload field of the user's that may be indexed: a non-empty string (a Qdrant JSON
    path such as ``tags[]`` or ``meta.lang``), not a field inforank owns."""
    if not isinstance(field, str) or not field.strip():
        raise InvalidQueryError(f"A field to index must be a non-empty string, got {field!r:.60}.")
    if len(field) > MAX_FIELD_PATH:
        raise InvalidQueryError(f"A field path is at most {MAX_FIELD_PATH} characters, got {len(field)}.")
    try:
        check_text(field, f"the field {field!r:.60}")
    except InvalidItemError as exc:
        raise InvalidQueryError(str(exc)) from None
    if field in OWNED_FIELDS or field.startswith(RESERVED_PREFIX):
        raise InvalidQueryError(
            f"{field!r} is a field inforank owns (its score fields are indexed already); "
            "index your own metadata fields."
        )
    return field


def check_metadata(meta: Any) -> dict[str, Any]:
    if not isinstance(meta, dict):
        raise InvalidItemError(f"metadata must be a JSON object, got {type(meta).__name__}")
    bad = [k for k in meta if k in RESERVED or str(k).startswith(RESERVED_PREFIX)]
    if bad:
        raise InvalidItemError(f"metadata uses field names reserved by inforank: {bad}")
    if not meta:
        return {}
    _check_value(meta, "", 0)
    text = json.dumps(meta, allow_nan=False)
    if len(text.encode("utf-8")) > MAX_METADATA_BYTES:
        raise InvalidItemError(f"metadata is larger than {MAX_METADATA_BYTES} bytes as JSON")
    # as the database will give it back (tuples → lists): the point pushed from memory and the
    # one replayed from the database carry the same payload
    return cast(dict[str, Any], json.loads(text))
