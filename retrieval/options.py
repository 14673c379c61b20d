"""What a search takes and returns: the one definition the library, the HTTP API, the CLI and
the client share.

:class:`SearchOptions` is the only place a search option is named: the service's request body,
the ``inforank search`` parameters and the client's keyword arguments are derived from its
fields (name, type, default and the help text in each field's metadata), so an option renamed
here is renamed everywhere, and a test checks that the four agree. This module imports nothing
beyond the standard library, so the HTTP client stays light.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from indexer.errors import InvalidQueryError  # light: imports nothing itself

MAX_K = 1000
DEFAULT_DEPTH = 100
#: ``prefer``: a conformity weight of ∓PREFER_WEIGHT, among informative items …
PREFER_WEIGHT = 0.25
#: … the least informative PREFER_EXCLUDE_PCT % excluded unless the options say otherwise
PREFER_EXCLUDE_PCT = 5.0

Modality = Literal["image", "text"]
Target = Literal["image", "text", "all"]
Preference = Literal["distinctive", "typical"]


def _opt(default: Any, help: str, **meta: Any) -> Any:
    return field(default=default, metadata={"help": help, **meta})


@dataclass(kw_only=True)
class SearchOptions:
    """A search's options. ``help`` in each field's metadata is the text users read in
    ``inforank search --help`` and in the API's OpenAPI schema; ``cli`` gives extra option names."""

    k: int = _opt(10, f"How many results (1 to {MAX_K}).")
    modality: Target = _opt("image", "Search image vectors, text vectors, or all (one mixed list).")
    query_modality: Modality = _opt(
        "text",
        "What the query vector is: text or image (a mixed list's calibration and --align use it).",
        cli=("--query-modality", "--vector-modality"),
    )
    min_info_gain: float | None = _opt(
        None, "Keep items with at least this information gain (`stats` shows its typical values)."
    )
    max_info_gain: float | None = _opt(None, "Keep items with at most this information gain.")
    min_conformity: float | None = _opt(None, "Keep items at least this generic (mean cosine to their modality).")
    max_conformity: float | None = _opt(None, "Keep items at most this generic.")
    exclude_bottom_info_gain_pct: float | None = _opt(
        None, "Drop the least informative P % of the collection (placeholders live there)."
    )
    filter: dict[str, Any] | None = _opt(None, "A Qdrant payload filter (must/should/must_not), as JSON.")
    rerank_info_gain: float = _opt(
        0.0,
        "Rerank weight of information gain: 1 trades one standard deviation of the score for one "
        "standard deviation of this query's similarities (0.25 is a gentle preference).",
    )
    rerank_conformity: float = _opt(
        0.0, "Rerank weight of conformity, on the same scale (negative prefers distinctive items)."
    )
    prefer: Preference | None = _opt(
        None,
        f"distinctive or typical: a conformity weight of ∓{PREFER_WEIGHT} among informative items (the "
        f"least informative {PREFER_EXCLUDE_PCT:g} % excluded unless exclude_bottom_info_gain_pct says "
        "otherwise); replaces rerank_conformity.",
    )
    depth: int = _opt(DEFAULT_DEPTH, "Candidates prefetched for reranking.")
    align: bool = _opt(False, "Apply the active alignment map to text queries (`inforank align fit`).")
    calibrate: bool = _opt(
        True,
        "Mixed search: put images and texts on one scale, judging each similarity against the query's "
        "similarities to the item's modality and the item's to the query's (off: raw cosine).",
    )
    hubness: bool | None = _opt(
        None,
        "Correct each item's similarity by its hubness bias (fit it with `inforank hubness fit`). "
        "Unset: on where the collection's last `inforank evaluate` showed it helps in this direction.",
    )
    exact: bool = _opt(
        False,
        "Brute-force search even where an HNSW index exists: the exact answer, slower on large "
        "collections (`applied` says which search ran).",
    )

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_kwargs(cls, **kw: Any) -> SearchOptions:
        """Options from keyword arguments, with an unknown name refused by name (a typo must not
        silently do nothing)."""
        unknown = sorted(set(kw) - set(cls.names()))
        if unknown:
            raise InvalidQueryError(f"Unknown search option(s) {unknown}; known: {', '.join(cls.names())}.")
        return cls(**kw)

    def resolved(self) -> SearchOptions:
        """``prefer`` turned into the weights and cut-off it stands for."""
        if self.prefer is None:
            return self
        w = -PREFER_WEIGHT if self.prefer == "distinctive" else PREFER_WEIGHT
        pct = PREFER_EXCLUDE_PCT if self.exclude_bottom_info_gain_pct is None else self.exclude_bottom_info_gain_pct
        # typical items are near the modality's mean, and so are placeholders: preferring either
        # kind is done among informative items, or the most generic junk would rise to the top
        return SearchOptions(**{**asdict(self), "prefer": None, "rerank_conformity": w,
                                "exclude_bottom_info_gain_pct": pct})  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Result:
    """One search hit; the HTTP API's ``results`` entries have exactly these fields."""

    id: Any
    modality: str
    similarity: float
    score: float
    conformity: float | None
    info_gain: float | None
    stats_version: int | None
    payload: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class SearchResponse:
    results: list[Result]
    note: str | None = None
    applied: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"results": [r.as_dict() for r in self.results], "note": self.note, "applied": self.applied}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchResponse:
        return cls([Result(**r) for r in d["results"]], d.get("note"), d.get("applied", {}))
