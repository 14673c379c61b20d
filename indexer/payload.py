"""The Qdrant point of an item, built from its database rows alone (so it can be replayed);
the field names are :mod:`indexer.schema`'s."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from indexer import schema
from indexer.schema import key
from indexer.store.base import StorePoint


def unit_of(row: Any) -> np.ndarray:
    return np.frombuffer(row.vector, dtype="<f4")


def payload(point: Any, vecs: Sequence[Any]) -> dict[str, Any]:
    """``point``/``vecs``: :class:`PointRow`/:class:`VectorRow` objects or rows with their columns."""
    out: dict[str, Any] = dict(point.meta or {})
    out[schema.ID] = point.user_id
    for v in vecs:
        m = v.modality
        out[key(m, "hash")] = v.content_hash
        if v.source is not None:
            out[key(m, "source")] = v.source
        if v.conformity is not None:
            out[key(m, "conformity")] = float(v.conformity)
        if v.info_gain is not None:
            out[key(m, "info_gain")] = float(v.info_gain)
        if getattr(v, "raw_norm", None) is not None:
            out[key(m, "raw_norm")] = float(v.raw_norm)
        if v.scores_version is not None:
            out[key(m, "stats_version")] = int(v.scores_version)
        if getattr(v, "hub_bias", None) is not None:
            out[key(m, "hub_bias")] = float(v.hub_bias)
    return out


def store_point(point: Any, vecs: Sequence[Any], names: dict[str, str]) -> StorePoint:
    vectors = {names[v.modality]: unit_of(v).tolist() for v in vecs}
    return StorePoint(point.point_id, vectors, payload(point, vecs))
