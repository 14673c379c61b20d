"""The payload schema: every field inforank writes on a Qdrant point, in one place.

A point holds one item (an image, a text, or both under one id). Per modality ``m`` (``image``
or ``text``) a field is named ``{m}_{field}``; :func:`key` builds the name and :func:`parse`
reads it back, so no other module spells or splits a field name. The README's "Payload
fields" table documents the same fields for teams that query Qdrant with their own client (a
test keeps the two in step).
"""

from __future__ import annotations

from dataclasses import dataclass

MODALITIES = ("image", "text")
#: the item's own id (string or integer), as given at ingest
ID = "inforank_id"
#: user metadata may not use keys with this prefix
RESERVED_PREFIX = "inforank_"


@dataclass(frozen=True)
class FieldSpec:
    type: str
    meaning: str
    typical: str
    #: a float field with a range index in Qdrant (filters and the rerank formula use it)
    indexed: bool = False


#: per-modality fields, ``{modality}_{name}``
FIELDS: dict[str, FieldSpec] = {
    "conformity": FieldSpec(
        "float",
        "mean cosine of the item's unit vector to all unit vectors of its modality (generic ↔ distinctive)",
        "in [-1, 1]; CLIP ViT-B/16 on 500 COCO pairs, 5–95 %: images 0.45–0.60, texts 0.39–0.59",
        indexed=True,
    ),
    "info_gain": FieldSpec(
        "float",
        "information gain: how far the item moves the other modality's distribution (placeholders ≈ 0)",
        "≥ 0; same data, 5–95 %: 3.4e-4–1.5e-3 (`inforank stats` prints the collection's quantiles)",
        indexed=True,
    ),
    "stats_version": FieldSpec(
        "int", "statistics version the two scores were computed under", "grows by one per committed batch"
    ),
    "hub_bias": FieldSpec(
        "float",
        "hubness bias: mean of the item's k highest cosines to the other modality (`inforank hubness fit`)",
        "in [-1, 1]; same data, k = 8, 5–95 %: 0.24–0.32",
    ),
    "raw_norm": FieldSpec(
        "float", "the vector's norm before normalisation", "model-dependent (vectors stored normalised read 1.0)"
    ),
    "hash": FieldSpec("string", "content hash (of the file, the text, or the vector)", "hex, ≤ 64 characters"),
    "source": FieldSpec("string", "the text itself, or the image's path, when known", "≤ 1 MiB"),
}
#: the fields holding scores (indexed, filterable, used by the rerank formula)
SCORES = tuple(f for f, s in FIELDS.items() if s.indexed)


def key(modality: str, field: str) -> str:
    """The payload key of ``field`` for ``modality``, e.g. ``key("image", "info_gain")``."""
    if modality not in MODALITIES or field not in FIELDS:
        raise KeyError(f"no payload field {field!r} for modality {modality!r}")
    return f"{modality}_{field}"


def parse(name: str) -> tuple[str, str] | None:
    """``(modality, field)`` of a key inforank owns, or None for any other key."""
    m, _, f = name.partition("_")
    return (m, f) if m in MODALITIES and f in FIELDS else None


SCORE_FIELDS = tuple(key(m, f) for m in MODALITIES for f in SCORES)
#: payload keys inforank owns; user metadata may not use them
RESERVED = frozenset(key(m, f) for m in MODALITIES for f in FIELDS)
#: every payload key inforank writes (removed from adopted points on delete)
OWNED_FIELDS = RESERVED | {ID}
