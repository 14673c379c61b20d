"""What the writer takes: items with per-modality vectors, content hashes and user ids."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from indexer.errors import InvalidItemError

MODALITIES = ("image", "text")


def other_modality(m: str) -> str:
    return "text" if m == "image" else "image"


#: payload keys inforank owns; user metadata may not use them.
RESERVED_PREFIX = "inforank_"
SCORE_FIELDS = tuple(f"{m}_{s}" for m in MODALITIES for s in ("conformity", "info_gain"))
RESERVED = frozenset(
    [*SCORE_FIELDS] + [f"{m}_{s}" for m in MODALITIES for s in ("stats_version", "hash", "source", "raw_norm")]
)
#: every payload key inforank writes (removed from adopted points on delete).
OWNED_FIELDS = RESERVED | {"inforank_id"}
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


def check_user_id(v: Any) -> UserId:
    if isinstance(v, bool) or not isinstance(v, str | int):
        raise InvalidItemError(f"an id must be a string or an integer, got {v!r}")
    if isinstance(v, str) and not v.strip():
        raise InvalidItemError("an id must not be empty")
    return v


def check_metadata(meta: Any) -> dict[str, Any]:
    if not isinstance(meta, dict):
        raise InvalidItemError(f"metadata must be a JSON object, got {type(meta).__name__}")
    bad = [k for k in meta if k in RESERVED or str(k).startswith(RESERVED_PREFIX)]
    if bad:
        raise InvalidItemError(f"metadata uses field names reserved by inforank: {bad}")
    if not meta:
        return {}
    try:
        # as the database will give it back (tuples → lists, keys → strings): the point pushed
        # from memory and the one replayed from the database carry the same payload
        return cast(dict[str, Any], json.loads(json.dumps(meta)))
    except (TypeError, ValueError) as exc:
        raise InvalidItemError(f"metadata is not JSON-serialisable: {exc}") from exc
