"""Search with informativeness filters and reranking, run inside Qdrant.

Filters on stored scores become Qdrant range conditions (payload indexes); percentile cut-offs
are translated to absolute thresholds from the collection's own score distribution. Reranking
is a Qdrant formula query over a prefetch: ``similarity + Σ w · (score − μ)/σ`` with μ, σ of the
collection's stored scores, so weights keep their meaning as the collection grows.
Mixed-modality search puts images and texts on one scale by judging each similarity from both
sides with the running statistics: ``(s − q·m̂_t)/√(qᵀΣ_t q) + (s − v·m̂_q)/√(vᵀΣ_q v)`` for a
query q and an item v of modality t (s: the similarity with any rerank or hubness terms; m̂_q,
Σ_q: the query's modality), over each modality's ``MIX_REACH``·k most similar items.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np

from indexer import schema
from indexer.api import Indexer
from indexer.collections import Collection
from indexer.errors import InvalidQueryError, StorageError
from indexer.items import MODALITIES, other_modality
from indexer.moments import Moments
from indexer.schema import SCORE_FIELDS, key
from indexer.sketch import Sketch
from indexer.store.base import Blend, Hit, QuerySpec
from indexer.vectors import as_query
from retrieval.options import MAX_K, Result, SearchOptions, SearchResponse

if TYPE_CHECKING:
    from retrieval.align import AlignMap

#: rerank weights are bounded so a blended score never reaches the filter penalty's range
MAX_WEIGHT = 1000.0
#: score filters expected to keep at least this fraction are answered among the nearest
#: unfiltered candidates (see ``VectorStore.query_among_nearest``); stricter ones by a filtered search
MIN_PASS_FRACTION = 0.25
#: candidates = needed / expected pass fraction × margin + slack, at most MAX_CANDIDATES
CANDIDATE_MARGIN = 1.25
CANDIDATE_SLACK = 32
MAX_CANDIDATES = 5000


def validate(o: SearchOptions) -> SearchOptions:
    """``o`` checked, with its filter in canonical form and ``prefer`` resolved (a new object)."""
    if not isinstance(o, SearchOptions):
        raise InvalidQueryError(f"Search options must be SearchOptions, got {type(o).__name__}.")
    if o.prefer not in (None, "distinctive", "typical"):
        raise InvalidQueryError(f"prefer takes distinctive or typical, got {o.prefer!r}.")
    if o.query_modality not in MODALITIES:
        raise InvalidQueryError(f"query_modality must be image or text, got {o.query_modality!r}.")
    o = replace(o.resolved())
    for name in ("k", "depth"):
        if isinstance(getattr(o, name), bool) or not isinstance(getattr(o, name), int):
            raise InvalidQueryError(f"{name} must be an integer, got {getattr(o, name)!r}.")
    for name in ("min_info_gain", "max_info_gain", "min_conformity", "max_conformity", "exclude_bottom_info_gain_pct"):
        v = getattr(o, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)):
            raise InvalidQueryError(f"{name} must be a finite number, got {v!r}.")
    o.filter = check_filter(o.filter)
    if not 1 <= o.k <= MAX_K:
        raise InvalidQueryError(f"k must be between 1 and {MAX_K}, got {o.k}.")
    if o.modality not in (*MODALITIES, "all"):
        raise InvalidQueryError(f"modality must be image, text or all, got {o.modality!r}.")
    if o.depth < 1 or o.depth > 10 * MAX_K:
        raise InvalidQueryError(f"depth must be between 1 and {10 * MAX_K}, got {o.depth}.")
    p = o.exclude_bottom_info_gain_pct
    if p is not None and not 0 <= p < 100:
        raise InvalidQueryError(f"a percentile must be in [0, 100), got {p}.")
    for name in ("rerank_info_gain", "rerank_conformity"):
        w = getattr(o, name)
        if not np.isfinite(w) or abs(w) > MAX_WEIGHT:
            raise InvalidQueryError(f"{name} must be a number between -{MAX_WEIGHT:g} and {MAX_WEIGHT:g}.")
    return o


def check_filter(f: Any) -> dict[str, Any] | None:
    """A user's payload filter, checked against the schema qdrant-client ships (the one a Qdrant
    server applies) and returned in its canonical form, or an :class:`InvalidQueryError`."""
    if f is None:
        return None
    if not isinstance(f, dict):
        raise InvalidQueryError(
            "The payload filter must be a JSON object in Qdrant's filter syntax (must/should/must_not)."
        )
    from pydantic import ValidationError
    from qdrant_client import models

    try:
        out = models.Filter.model_validate(f).model_dump(mode="json", by_alias=True, exclude_none=True)
    except ValidationError as exc:
        errs = exc.errors()
        first = max(errs, key=lambda e: len(e.get("loc", ())))  # the deepest names the bad value
        where = ".".join(str(x) for x in first.get("loc", ()) if "[" not in str(x))
        raise InvalidQueryError(
            f"The payload filter is not a valid Qdrant filter: {where or 'filter'}: {first.get('msg')} "
            f"(input {first.get('input')!r:.80}). See https://qdrant.tech/documentation/concepts/filtering/."
        ) from None
    if not _all_finite(out):
        raise InvalidQueryError("The payload filter holds a NaN or infinite number.")
    return cast(dict[str, Any], out)


def _all_finite(v: Any) -> bool:
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, dict):
        return all(_all_finite(x) for x in v.values())
    if isinstance(v, list):
        return all(_all_finite(x) for x in v)
    return True


#: HNSW beam widths (Qdrant searches max(ef, limit)): chosen for recall@10 ≥ 0.95 against the
#: exact answer on COCO-shaped vectors at 100k (BENCHMARKS.md, "HNSW on the embedded store")
EF_SAME = 256
EF_CROSS = 2048
#: a cross-modal query searches the index only above this many vectors of the target modality:
#: at 100k, ef 2048 took 28 ms against 20 ms for the exact scan (bench.search); at 1M the scan
#: takes 156 ms (bench.scale)
CROSS_EXACT_BELOW = 200_000

#: a calibrated mixed list rescores each modality's MIX_REACH·k most similar items (at most
#: ``depth``): the item's side of the calibration moves items by a few places, and on the COCO
#: pairs and 10k synthetic pairs 2·k of them gave the same lists as the whole gallery (BENCHMARKS.md)
MIX_REACH = 3

#: a vector this many standard deviations below a modality's members (similarity to its mean)
#: is not of that modality: 5, where the COCO pairs' vectors lie within 4.3 of their own modality
MEMBER_Z = 5.0

#: the freshness shown with results is at most this old (a rescore changes it without a new version)
FRESHNESS_SECONDS = 1.0


T = TypeVar("T")


class Searcher:
    def __init__(self, ix: Indexer) -> None:
        self.ix = ix
        #: what searches read between writes: (statistics version, read at, value) by key
        self._kept: dict[tuple[Any, ...], tuple[int | None, float, Any]] = {}
        self._moms: dict[tuple[int, str], tuple[int, Moments]] = {}
        self._lock = threading.Lock()

    def _keep(self, key: tuple[Any, ...], version: int | None, read: Callable[[], T]) -> T:
        """``read()``, kept until the statistics version moves or for a second (a rescore or an
        optimize changes what it reads without a new version): not a query per search."""
        now = time.monotonic()
        with self._lock:
            hit = self._kept.get(key)
        if hit is not None and hit[0] == version and now - hit[1] < FRESHNESS_SECONDS:
            return cast(T, hit[2])
        value = read()
        with self._lock:
            self._kept[key] = (version, now, value)
        return value

    def distribution(self, c: Collection, m: str) -> dict[str, Sketch]:
        """The stored scores' histograms per field (:mod:`indexer.sketch`: exact counts, values
        within 0.5 %), read in O(buckets) whatever the collection's size."""
        return self._keep(("dist", c.id, m), c.stats_version, lambda: self.ix.score_sketch(c.name, m))

    def _cut(self, c: Collection, m: str, share: float) -> float | None:
        """The exact percentile cut-off (:meth:`Indexer.score_cut`), kept like the histograms."""
        return self._keep(
            ("cut", c.id, m, share),
            c.stats_version,
            lambda: self.ix.score_cut(c.name, m, share, self.distribution(c, m)["info_gain"]),
        )

    def _moments(self, c: Collection, m: str) -> Moments:
        """The running statistics at the version the catalog lookup of this search saw: no
        further query while the version stands."""
        key = (c.id, m)
        with self._lock:
            hit = self._moms.get(key)
        if hit is not None and hit[0] == c.stats_version:
            return hit[1]
        _, mom = self.ix.moments(c.name, m)
        with self._lock:
            self._moms[key] = (c.stats_version, mom)  # any write bumps the collection's version
        return mom

    def _freshness(self, c: Collection, targets: list[str]) -> dict[str, Any]:
        """Whether the scores the filters and rerank used are within tolerance, per modality."""

        def read() -> dict[str, Any]:
            return {
                m: {
                    "stats_version": f.get("stats_version"),
                    "within_tolerance": not f["outside_tolerance"],
                    "bound": f.get("bound"),
                }
                for m, f in self.ix.freshness(c.name, counts=False).items()
            }

        brief = self._keep(("fresh", c.id), c.stats_version, read)
        return {t: brief[t] for t in targets if t in brief}

    def warm(self, collection: str) -> None:
        """Open what a first search would: the store's shard, the statistics, the histograms,
        freshness and the index state, and the database's compiled statements (one search of
        the modality mean). The service calls it at start-up, so its first search is a warm one."""
        c = self.ix.collection(collection)
        for m in c.modalities:
            mean = self._moments(c, m).mean
            if np.linalg.norm(mean) > 0:
                opts = SearchOptions(k=1, query_modality="image" if m == "image" else "text")
                opts.modality = opts.query_modality  # a search of this modality's own index
                opts.exclude_bottom_info_gain_pct, opts.rerank_info_gain = 1.0, 0.1
                self.search(collection, mean, opts)
                if self._indexed(c) and len(c.modalities) > 1:
                    # a query from the other modality walks far more of the graph (the wider
                    # beam), and a full scan maps in every vector: both paid here, not by the
                    # first user (measured at 1M: first search 2.5x a warm one without them)
                    cross = SearchOptions(k=10, query_modality="text" if m == "image" else "image")
                    cross.modality = opts.query_modality
                    self.search(collection, mean, cross)
                    cross.exact = True
                    self.search(collection, mean, cross)

    def _indexed(self, c: Collection) -> bool:
        """Whether an HNSW index answers (part of) this collection's queries."""
        return self._keep(
            ("index", c.id), None, lambda: self.ix.store.index_info(c.qdrant_collection).indexed_vectors > 0
        )

    def search(self, collection: str, vector: Any, opts: SearchOptions) -> SearchResponse:
        opts = validate(opts)
        c = self.ix.collection(collection)
        q = as_query(vector, c.dim)
        targets: list[str] = list(c.modalities) if opts.modality == "all" else [opts.modality]
        for t in targets:
            if t not in c.vector_names:
                raise InvalidQueryError(f"Collection {c.name!r} has no {t!r} vectors.")
        applied: dict[str, Any] = {}
        two_sided = len(targets) > 1 and opts.calibrate  # a mixed list, on one scale
        if two_sided:
            self._check_query_modality(c, q, opts.query_modality)
        maps = {t: self._maybe_align(c, t, opts, applied) for t in targets}
        queries = {t: q if (amap := maps[t]) is None else amap.apply(q) for t in targets}
        per = {t: self._one(c, queries[t], t, opts, applied, maps[t], two_sided) for t in targets}
        if any(applied[f"{t}_search"]["method"] == "hnsw" for t in targets):
            applied["approximate"] = True  # how each modality was finally searched says it
        applied["freshness"] = self._freshness(c, targets)
        if len(targets) == 1:
            results = per[targets[0]]
        else:
            applied["calibrated"] = opts.calibrate
            if opts.calibrate:
                applied.setdefault("calibration", "two-sided")
            results = sorted((r for rs in per.values() for r in rs), key=lambda r: -r.score)
        note = None
        if len(results) < opts.k:
            note = f"only {len(results)} items match the filters (asked for {opts.k})."
        return SearchResponse(results[: opts.k], note, applied)

    def _check_query_modality(self, c: Collection, q: np.ndarray, declared: str) -> None:
        """Refuse a mixed list for a vector that is plainly of the other modality than declared:
        its item's side would judge every similarity against the wrong statistics (measured on
        the COCO pairs: R@1 0, the top 10 all of the query's own modality). The test is each
        modality's own: how many standard deviations the query's similarity to the modality's
        mean lies below its members' (``(q·m̂ − m̂·m̂)/√(m̂ᵀΣm̂)``); it refuses where the declared
        modality puts the query beyond MEMBER_Z and the other modality nearer. On the COCO pairs
        every vector is within 4.3 of its own modality and beyond 5.3 of the other; where the
        modalities overlap (no modality gap) it never refuses."""
        other = other_modality(declared)
        if declared not in c.vector_names or other not in c.vector_names:
            return
        z = {}
        for m in (declared, other):
            mom = self._moments(c, m)
            if mom.n < 2:
                return
            # the members' mean similarity to the modality's mean, and its spread: per version
            center, spread = self._keep(("members", c.id, m), c.stats_version, partial(_members, mom))
            z[m] = float((q @ mom.mean - center) / spread)
        if z[declared] < -MEMBER_Z and z[other] > z[declared]:
            raise InvalidQueryError(
                f"The query vector looks like {other} rather than {declared}: its similarity to the {declared} "
                f"mean lies {_sd(z[declared])} {declared} items' (to the {other} mean: {_sd(z[other])} "
                f"{other} items'). A mixed list calibrates by the query's modality: pass "
                f"query_modality={other!r} (CLI: --vector-modality {other}), or turn calibration off "
                "(calibrate=false; CLI: --no-calibrate)."
            )

    def _maybe_align(self, c: Collection, target: str, o: SearchOptions, applied: dict[str, Any]) -> AlignMap | None:
        """The active alignment map where it applies to this target, else None."""
        if not o.align or target != "image" or o.query_modality != "text":
            return None
        from retrieval.align import active_map

        amap = active_map(self.ix, c.name)
        if amap is None:
            from retrieval.align import status

            fits = status(self.ix, c.name)
            if fits:
                last = fits[-1]
                m = last["metrics"]
                t2i = m.get("text_to_image", {})
                before = t2i.get("plain", {}).get("r@1", float("nan"))
                after = t2i.get("aligned", {}).get("r@1", float("nan"))
                why = (
                    f"the last map (version {last['version']}) was switched off"
                    if m.get("activated")
                    else f"the last fit (version {last['version']}) was declined: held-out text→image "
                    f"recall@1 would fall from {before:.3f} to {after:.3f}"
                )
                raise InvalidQueryError(
                    f"Collection {c.name!r} has no active alignment map: {why}. Search without --align, or "
                    f"activate a map anyway with `inforank align fit {c.name} --force`."
                )
            raise InvalidQueryError(
                f"Collection {c.name!r} has no alignment map yet: run `inforank align fit {c.name}` "
                "(it is activated only if it helps on held-out pairs)."
            )
        applied["alignment_version"] = amap.version
        return amap

    def _filter(
        self, c: Collection, t: str, o: SearchOptions, applied: dict[str, Any], approximate: bool = False
    ) -> tuple[dict[str, Any] | None, float | None]:
        """The Qdrant filter, and the fraction of scored items expected to pass it.

        The fraction comes from the collection's own score distribution, for filters on the
        scores alone. A user's payload filter is of unknown selectivity: on an exact search the
        fraction is then None (the filtered scan is exact and no slower); on the graph, where a
        filtered walk loses recall among points the filter refuses, its share comes from
        :meth:`_user_fraction` (times the scores' share, taken as independent), None where the
        graph links every field it reads."""
        user = o.filter  # checked and made canonical by validate()
        bounds = {"info_gain": (o.min_info_gain, o.max_info_gain), "conformity": (o.min_conformity, o.max_conformity)}
        must = [
            {"key": key(t, f), "range": {k: v for k, v in (("gte", lo), ("lte", hi)) if v is not None}}
            for f, (lo, hi) in bounds.items()
            if (lo, hi) != (None, None)
        ]
        must_not: list[dict[str, Any]] = []
        cut = None
        if o.exclude_bottom_info_gain_pct:
            # "Exclude the known bottom P %": items below the cut-off go; items whose score is
            # still pending stay. As must_not it is also cheaper for Qdrant than a 95 % range.
            cut = self._cut(c, t, o.exclude_bottom_info_gain_pct / 100)
            if cut is not None:
                applied[f"{t}_info_gain_cutoff"] = cut
                must_not.append({"key": key(t, "info_gain"), "range": {"lt": cut}})
            else:
                applied.setdefault("skipped", []).append(
                    f"exclude_bottom_info_gain_pct on {t}: no {t} has an information gain yet (it needs "
                    f"{c.min_count} items of the other modality), so nothing was excluded"
                )
        if not must and not must_not:
            return (user or None), (self._user_fraction(c, t, user, applied) if user and approximate else None)
        out: dict[str, Any] = {"must": must + ([user] if user else [])}
        if must_not:
            out["must_not"] = must_not
        if user and not approximate:
            return out, None
        if cut is not None:
            lo, hi = bounds["info_gain"]
            bounds["info_gain"] = (cut if lo is None else max(lo, cut), hi)
        frac = pass_fraction(self.distribution(c, t), bounds)
        if not user:
            return out, frac
        users = self._user_fraction(c, t, user, applied)
        return out, (None if users is None else frac * users)

    def _user_fraction(self, c: Collection, t: str, user: dict[str, Any], applied: dict[str, Any]) -> float | None:
        """The share of modality ``t``'s points expected to pass a user's filter, or None to
        leave the filter to Qdrant's own plan: where every field it reads was indexed before any
        graph was built (``Collection.linked_fields``), the graph links their values and
        Qdrant's filtered walk keeps its recall (BENCHMARKS.md "Filters on the graph"). Else
        Qdrant's estimate where every field has a payload index (from the indexes, no scan);
        where one has none, Qdrant knows only 0..N, so the plan assumes the narrowest share the
        candidate route serves (``MIN_PASS_FRACTION``): enough candidates for a filter that
        loose, one candidate query lost on a stricter one, since the sieve sees when too few
        passed and the search scans instead (a walk without the field's links is never run)."""
        keys = filter_keys(user)
        if keys and keys <= set(c.linked_fields):
            applied[f"{t}_filter_pass_estimate"] = "left to Qdrant: the graph links every field the filter reads"
            return None
        unindexed = keys - self._field_indexes(c)
        if unindexed:
            applied[f"{t}_filter_pass_estimate"] = f"unknown: no payload index on {', '.join(sorted(unindexed))}"
            commands = ", ".join(f"`inforank index-field {c.name} {f}`" for f in sorted(unindexed))
            applied["hint"] = (
                f"index the filtered fields ({commands}, with --type for other than keywords): the plan "
                "then counts the points that pass, and a narrow filter reads only those instead of scanning"
            )
            return MIN_PASS_FRACTION
        n = max(1, self._moments(c, t).n)
        frac = min(1.0, self.ix.store.estimate_count(c.qdrant_collection, user) / n)
        applied[f"{t}_filter_pass_estimate"] = round(frac, 4)
        return frac

    def _field_indexes(self, c: Collection) -> frozenset[str]:
        """The payload fields the store has an index on, kept like the index state."""
        return self._keep(("fields", c.id), None, lambda: frozenset(self.ix.store.field_indexes(c.qdrant_collection)))

    def _blend(self, c: Collection, t: str, q: np.ndarray, o: SearchOptions, applied: dict[str, Any]) -> Blend | None:
        """``similarity + Σ w · s_q · (score − μ)/σ − β · hub_bias``: a rerank weight of 1 trades one
        standard deviation of the score for one standard deviation ``s_q = √(qᵀΣq)`` of this
        query's similarities over the modality, so a weight means the same for every query and
        collection; the hubness term is nearest-neighbour normalisation (β in similarity units)."""
        terms = []
        if o.rerank_info_gain or o.rerank_conformity:
            dist = self.distribution(c, t)
            mom = self._moments(c, t)
            s_q = float(mom.spread(q))
            for f, w in (("info_gain", o.rerank_info_gain), ("conformity", o.rerank_conformity)):
                if w:
                    mu, sd = dist[f].moments()
                    terms.append((key(t, f), w * s_q / sd, mu))
            applied[f"{t}_rerank"] = [{"field": f, "weight": w, "center": m} for f, w, m in terms]
            applied[f"{t}_similarity_scale"] = s_q
        use, by_default = o.hubness, False
        if use is None:  # the collection's default, chosen by `inforank evaluate`
            # a mixed list has its own default: the correction on both modalities or on neither
            direction = "mixed" if o.modality == "all" else f"{o.query_modality}_to_{t}"
            rec = ((c.evaluation or {}).get("defaults") or {}).get("hubness", {}).get(direction) or {}
            use = by_default = bool(rec.get("on")) and c.hub_beta is not None
        if use:
            if c.hub_beta is None:
                raise InvalidQueryError(
                    f"Collection {c.name!r} has no hubness correction yet: run `inforank hubness fit {c.name}`."
                )
            hub = c.hub or {}
            # an item the refresh has not reached yet counts as the modality's mean bias: neutral
            center = float((hub.get("center") or {}).get(t, 0.0))
            terms.append((key(t, "hub_bias"), -c.hub_beta, center))
            applied["hubness"] = {
                "k": c.hub_k,
                "beta": c.hub_beta,
                "fitted_at_stats_version": c.hub_version,
                "by_default": by_default,
                "center": center,
                "bound": float((hub.get("bound") or {}).get(t, 0.0)),
            }
        return Blend(tuple(terms)) if terms else None

    def _one(
        self,
        c: Collection,
        q: np.ndarray,
        t: str,
        o: SearchOptions,
        applied: dict[str, Any],
        amap: AlignMap | None = None,
        two_sided: bool = False,
    ) -> list[Result]:
        """Modality ``t``'s results for the (aligned, where ``amap`` applies) query ``q``: its
        ``k`` best, or for a calibrated mixed list (``two_sided``) its ``MIX_REACH``·k best on
        the common scale."""
        blend = self._blend(c, t, q, o, applied)
        cross = o.query_modality != t
        # across the modality gap a query lies outside the indexed modality's shell, where the
        # graph's greedy walk needs a much wider beam for the same recall (BENCHMARKS.md, HNSW);
        # that beam costs what a full scan of ~100k vectors does, so below CROSS_EXACT_BELOW a
        # cross-modal query scans instead
        approximate = not o.exact and self._indexed(c) and (not cross or self._moments(c, t).n > CROSS_EXACT_BELOW)
        flt, frac = self._filter(c, t, o, applied, approximate)
        ef = (EF_CROSS if cross else EF_SAME) if approximate else None
        applied[f"{t}_search"] = {"method": "hnsw", "ef": ef} if approximate else {"method": "exact"}
        spec = QuerySpec(
            vector=q.astype(np.float32).tolist(),
            using=c.vector_names[t],
            # the item's side of the calibration reorders a modality's list, within its best few k
            limit=max(o.k, min(o.depth, MIX_REACH * o.k)) if two_sided else o.k,
            filter=flt,
            blend=blend,
            depth=o.depth,
            with_vectors=two_sided,
            exact=o.exact,
            ef=ef,
        )
        hits = None
        if flt is not None and frac is not None and frac >= MIN_PASS_FRACTION:
            n = min(MAX_CANDIDATES, math.ceil(spec.needed / frac * CANDIDATE_MARGIN) + CANDIDATE_SLACK)
            hits = self.ix.store.query_among_nearest(c.qdrant_collection, replace(spec, candidates=n))
            if hits is not None:
                applied[f"{t}_filter_plan"] = f"among the {n} nearest"
        if hits is None:
            if flt is not None:
                applied[f"{t}_filter_plan"] = "filtered search"
            if approximate and flt is not None and frac is not None:
                # the graph has no links for what this filter reads (``frac`` is None only where
                # it has): a walk through the points that pass loses recall as the filter narrows,
                # down to 0.26 at 5 % (BENCHMARKS.md "Filters on the graph"). It scans instead:
                # exact, and Qdrant reads only the matching points where the fields are indexed.
                hits = self._scan_instead(c, t, spec, applied, reason="the graph has no links for the filter's fields")
            else:
                hits = self.ix.store.query(c.qdrant_collection, spec)
                if approximate and flt is not None and len(hits) < spec.limit:
                    hits = self._scan_instead(c, t, spec, applied, hnsw_returned=len(hits), wanted=spec.limit)
        results = [_result(h, t, blend) for h in hits]
        if two_sided:
            self._calibrate(c, q, t, o.query_modality, hits, results, amap, applied)
        return results

    def _scan_instead(self, c: Collection, t: str, spec: QuerySpec, applied: dict[str, Any], **why: Any) -> list[Hit]:
        """The same query as an exact scan instead of the graph, with ``applied`` saying so and
        ``why``: a filter the graph has no links for, or a filtered graph search that came back
        short (a filter that few points pass can strand the walk: measured on Edge, a 1 % filter
        on a field without a payload index returned 1 result of 10 on every build; the symptom
        of qdrant/qdrant#3094). A short walk costs a scan only when it is short."""
        applied[f"{t}_search"] = {"method": "exact", **why}
        return self.ix.store.query(c.qdrant_collection, replace(spec, exact=True, ef=None))

    def _calibrate(
        self,
        c: Collection,
        q: np.ndarray,
        t: str,
        qm: str,
        hits: list[Hit],
        results: list[Result],
        amap: AlignMap | None,
        applied: dict[str, Any],
    ) -> None:
        """Put modality ``t``'s scores on the mixed list's scale, judging each from both sides:
        the query's side, ``(s − q·m̂_t)/√(qᵀΣ_t q)`` (how far s stands out among the query's
        similarities to all of modality t), plus the item's side, ``(s − v·m̂_q)/√(vᵀΣ_q v)``
        (how far it stands out among the item's similarities to the query's modality), where s
        is the blended score (rerank and hubness terms are in similarity units, so one scale
        serves all of it). The item's side is what keeps an item that is close to everything of
        the query's modality — a near-duplicate-rich image for an image query, say — from
        crowding the other modality out (BENCHMARKS.md, mixed search). Where an alignment map M
        moved the query (q ↦ qM), the query modality's statistics move with it (v·(m̂M) = (Mv)·m̂)."""
        if not hits:
            return
        mom_t, mom_q = self._moments(c, t), self._moments(c, qm)
        if mom_q.n < 2:  # no spread of the query's modality to judge by yet: the query's side alone
            applied["calibration"] = f"query side only: the collection has {mom_q.n} {qm} item(s)"
            scores = query_side(np.array([r.score for r in results]), q, mom_t)
            for r, score in zip(results, scores.tolist(), strict=True):
                r.score = score
            return
        name = c.vector_names[t]
        if any(h.vectors is None or name not in h.vectors for h in hits):
            raise StorageError(f"Qdrant returned results without their {t!r} vectors for collection {c.name!r}.")
        v = np.array([h.vectors[name] for h in hits if h.vectors], dtype=np.float64).reshape(len(hits), -1)
        v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-300)  # an adopted collection's own vectors
        if amap is not None:
            v = v @ amap.matrix.T
        scores = two_sided(np.array([r.score for r in results]), q, v, mom_t, mom_q)
        for r, score in zip(results, scores.tolist(), strict=True):
            r.score = score


def two_sided(sim: np.ndarray, q: np.ndarray, v: np.ndarray, mom_t: Moments, mom_q: Moments) -> np.ndarray:
    """A mixed list's score of similarities ``sim`` (the query's, or each row of queries', to
    the items ``v`` of modality t, rows): the query's side ``(s − q·m̂_t)/√(qᵀΣ_t q)`` plus the
    item's side ``(s − v·m̂_q)/√(vᵀΣ_q v)``, with ``mom_t`` the items' modality's statistics and
    ``mom_q`` the query's (:meth:`Searcher._calibrate`; ``evaluate`` and ``align`` score the
    same way over whole galleries)."""
    return query_side(sim, q, mom_t) + (sim - v @ mom_q.mean) / mom_q.spread(v)


def query_side(sim: np.ndarray, q: np.ndarray, mom_t: Moments) -> np.ndarray:
    """The query's side of :func:`two_sided` alone, ``(s − q·m̂_t)/√(qᵀΣ_t q)``: how far each
    similarity stands out among the query's similarities to all of modality t."""
    return (sim - np.asarray(q @ mom_t.mean)[..., None]) / mom_t.spread(q)[..., None]


def _sd(z: float) -> str:
    return f"{abs(z):.1f} standard deviations {'below' if z < 0 else 'above'}"


def _members(mom: Moments) -> tuple[float, float]:
    """Mean and standard deviation of a modality's members' similarity to its mean: m̂·m̂ and
    √(m̂ᵀΣm̂) (a member's similarity to the mean, averaged, is the mean's squared norm)."""
    return float(mom.mean @ mom.mean), float(mom.spread(mom.mean))


def filter_keys(f: Any) -> set[str]:
    """Every payload field a Qdrant JSON filter reads (ids and vectors are not payload)."""
    if isinstance(f, list):
        return set().union(*(filter_keys(x) for x in f))
    if not isinstance(f, dict):
        return set()
    keys = {f["key"]} if isinstance(f.get("key"), str) else set()
    # every nesting Qdrant has (must/should/must_not, min_should's conditions, nested's filter,
    # is_empty/is_null's key); a condition's values hold no "key"
    return keys.union(*(filter_keys(v) for v in f.values() if isinstance(v, dict | list)))


def pass_fraction(dist: dict[str, Sketch], bounds: dict[str, tuple[float | None, float | None]]) -> float:
    """Share of scored items within every field's [lo, hi], from the histograms (fields taken
    as independent: an estimate, which the candidate plan's fallback tolerates)."""
    frac = 1.0
    for f, (lo, hi) in bounds.items():
        if (lo, hi) != (None, None):
            frac *= dist[f].fraction_between(lo, hi)
    return frac


def _result(h: Hit, t: str, blend: Blend | None) -> Result:
    p = h.payload
    sim = h.score
    if blend is not None:
        sim -= sum(w * (float(p.get(f, ctr)) - ctr) for f, w, ctr in blend.terms)
    return Result(
        id=p.get(schema.ID, h.id),
        modality=t,
        similarity=float(sim),
        score=float(h.score),
        conformity=p.get(key(t, "conformity")),
        info_gain=p.get(key(t, "info_gain")),
        stats_version=p.get(key(t, "stats_version")),
        payload={k: v for k, v in p.items() if k not in SCORE_FIELDS},
    )
