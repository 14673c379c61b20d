"""Qdrant's JSON filter syntax → Qdrant Edge filter objects (the subset inforank supports)."""

from __future__ import annotations

from typing import Any

import qdrant_edge as qe

from indexer.errors import InvalidQueryError

_RANGE_KEYS = {"gte", "gt", "lte", "lt"}


def to_edge_filter(f: dict[str, Any] | None) -> qe.Filter | None:
    try:
        return _filter(f)
    except InvalidQueryError:
        raise
    except (TypeError, ValueError, KeyError, OverflowError) as exc:  # a value Edge's types cannot take
        raise InvalidQueryError(f"The embedded Qdrant Edge cannot apply this filter: {exc}") from exc


def _filter(f: dict[str, Any] | None) -> qe.Filter | None:
    if not f:
        return None
    if not isinstance(f, dict):
        raise InvalidQueryError("A payload filter must be a JSON object with must/should/must_not.")
    unknown = set(f) - {"must", "should", "must_not"}
    if unknown:
        raise InvalidQueryError(f"Unsupported filter clause(s): {sorted(unknown)}.")
    parts: dict[str, Any] = {k: [_condition(c) for c in _as_list(f.get(k))] or None for k in f}
    return qe.Filter(**parts)


def _as_list(v: Any) -> list[Any]:
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def _condition(c: Any) -> Any:
    if not isinstance(c, dict):
        raise InvalidQueryError(f"A filter condition must be an object, got {c!r}.")
    if {"must", "should", "must_not"} & set(c):
        return _filter(c)
    if "has_id" in c:
        return qe.HasIdCondition(set(c["has_id"]))
    if "has_vector" in c:
        return qe.HasVectorCondition(c["has_vector"])
    if "is_empty" in c:
        return qe.IsEmptyCondition(c["is_empty"]["key"])
    if "is_null" in c:
        return qe.IsNullCondition(c["is_null"]["key"])
    key = c.get("key")
    if not isinstance(key, str):
        raise InvalidQueryError(f"A field condition needs a string 'key': {c!r}.")
    if "range" in c:
        r = c["range"]
        if not isinstance(r, dict) or not set(r) <= _RANGE_KEYS:
            raise InvalidQueryError(f"A range takes gte/gt/lte/lt, got {r!r}.")
        return qe.FieldCondition(key=key, range=qe.RangeFloat(**{k: float(v) for k, v in r.items()}))
    if "match" in c:
        return qe.FieldCondition(key=key, match=_match(c["match"]))
    raise InvalidQueryError(f"Unsupported field condition on {key!r}: {c!r}.")


def _match(m: Any) -> Any:
    if not isinstance(m, dict) or len(m) != 1:
        raise InvalidQueryError(f"A match takes one of value/any/except/text, got {m!r}.")
    ((kind, val),) = m.items()
    if kind == "value":
        if isinstance(val, bool):
            # qdrant-edge-py 0.9 converts True/False to an integer and silently matches nothing.
            raise InvalidQueryError(
                "The embedded Qdrant Edge cannot match boolean payload values (qdrant-edge-py 0.9 "
                "matches nothing); store the field as a string or integer, or use a Qdrant server."
            )
        return qe.MatchValue(val)
    if kind == "any":
        return qe.MatchAny(list(val))
    if kind == "except":
        return qe.MatchExcept(list(val))
    if kind == "text":
        return qe.MatchText(val)
    raise InvalidQueryError(f"Unsupported match kind {kind!r}.")
