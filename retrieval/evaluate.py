"""``inforank evaluate``: does an option make search better on *this* collection?

Every paired item (an image and a text under one id) is a query in both directions: its text
looks for its image among all images (text→image), its image for its text (image→text). Each
option runs through the real search path (:class:`Searcher`, inside Qdrant), so the figures are
those of the searches users run. Queries are split into folds and every figure is reported as the
mean and the spread (population standard deviation) over folds; nothing here is fitted, so a
fold is simply a held-out share of the queries (fitted options, such as an alignment map, must
report held-out figures of their own and are left out).

Mixed search is judged from both sides: for a text query, the rank of its image in one list of
all images and all *other* texts (the query's own text is dropped from the list); for an image
query, the rank of its text among all texts and all other images; each against the same
direction's single-modality figure (its ceiling), with the share of rank-1 hits that are images,
so a bias towards one modality shows, and the share of the query's own modality in the top 10, so
a list that is mixed in name only shows: the pair metric counts only the paired item of the other
modality as relevant, so "the other modality first, always" would score best on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from indexer.api import Indexer
from indexer.errors import InvalidInputError
from indexer.items import other_modality
from retrieval.hubness import HUB_GRID, Pairs, bias, choose, pairs, ranks, unit
from retrieval.options import Modality
from retrieval.search import Searcher, SearchOptions, two_sided

K = 10
#: the options compared with plain search (the CLI's --prefer settings among them)
OPTIONS: dict[str, dict[str, Any]] = {
    "plain": {},
    "exclude bottom 5 % information gain": {"exclude_bottom_info_gain_pct": 5.0},
    "prefer distinctive": {"prefer": "distinctive"},
    "prefer typical": {"prefer": "typical"},
    "rerank by information gain": {"rerank_info_gain": 0.25},
}
DIRECTIONS: tuple[tuple[Modality, Modality], ...] = (("text", "image"), ("image", "text"))


def _opts(k: int, target: str, query: str, extra: dict[str, Any]) -> SearchOptions:
    """The search of one query under one option; the hubness correction only where the option
    asks for it (never the collection's evaluated default, which would judge itself)."""
    return SearchOptions.from_kwargs(**{"k": k, "modality": target, "query_modality": query, "hubness": False, **extra})


def choose_defaults(out: dict[str, Any]) -> dict[str, Any]:
    """The defaults an evaluation supports: the hubness correction in a direction where its
    held-out R@1 beats plain search's by more than the spread over folds."""
    hub = {}
    for d, h in (out.get("hubness_offline") or {}).items():
        p = out["options"]["plain"][d]
        gain = h["r@1"]["mean"] - p["r@1"]["mean"]
        spread = max(h["r@1"]["std"], p["r@1"]["std"])
        hub[d] = {"on": bool(gain > spread), "r@1_gain": gain, "spread": spread}
    mixed = out.get("mixed_hubness_offline")
    if mixed:  # a mixed list: on where it beats the calibrated list beyond the spread one way, loses in neither
        gains, spreads = [], []
        for d, h in mixed.items():
            p = out["mixed"][d]["mixed"]
            gains.append(h["mixed"]["r@1"]["mean"] - p["r@1"]["mean"])
            spreads.append(max(h["mixed"]["r@1"]["std"], p["r@1"]["std"]))
        on = min(gains) >= 0 and any(g > sp for g, sp in zip(gains, spreads, strict=True))
        hub["mixed"] = {"on": bool(on), "r@1_gain": min(gains), "spread": max(spreads)}
    return {"hubness": hub}


def _rank(ids: list[tuple[Any, str]], target: tuple[Any, str]) -> int | None:
    """1-based rank of ``target`` among the results, None when it is not among them."""
    for r, x in enumerate(ids, 1):
        if x == target:
            return r
    return None


def _metrics(ranks: list[int | None]) -> dict[str, float]:
    r = np.array([np.inf if x is None else x for x in ranks], float)
    return {
        "r@1": float(np.mean(r <= 1)),
        "r@5": float(np.mean(r <= 5)),
        "r@10": float(np.mean(r <= 10)),
        "mrr@10": float(np.mean(np.where(r <= K, 1.0 / r, 0.0))),
    }


def _spread(per_fold: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    return {
        k: {"mean": float(np.mean([f[k] for f in per_fold])), "std": float(np.std([f[k] for f in per_fold]))}
        for k in per_fold[0]
    }


def evaluate(
    ix: Indexer,
    name: str,
    *,
    folds: int = 5,
    max_queries: int = 1000,
    seed: int = 0,
    options: dict[str, dict[str, Any]] | None = None,
    hubness: bool = True,
    progress: Callable[[int], None] | None = None,
    save: bool = True,
) -> dict[str, Any]:
    """Recall@1/5/10 and MRR@10 in both directions for plain search and each option, and the
    two-sided mixed-search figures; means and spreads over ``folds`` folds of at most
    ``max_queries`` pairs (a random subset, fixed by ``seed``, on larger collections). With
    ``save``, the summary and the defaults it supports (:func:`choose_defaults`) are kept with the
    collection: ``search`` applies them, ``report`` shows them."""
    if folds < 2:
        raise InvalidInputError("evaluate needs at least 2 folds.")
    opts = OPTIONS if options is None else options
    p = pairs(ix, name)
    if min(max_queries, len(p.ids)) < 2 * folds:
        raise InvalidInputError(
            f"{folds} folds need at least {2 * folds} queries; max_queries is {max_queries} and the "
            f"collection has {len(p.ids)} pairs."
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(p.ids))[:max_queries]
    parts = np.array_split(order, folds)
    s = Searcher(ix)
    out: dict[str, Any] = {"collection": name, "pairs": len(p.ids), "queries": len(order), "folds": folds, "k": K}
    results: dict[str, Any] = {}
    for label, extra in opts.items():
        results[label] = {}
        for q_mod, g_mod in DIRECTIONS:
            per_fold = []
            for part in parts:
                ranks = []
                for j in part:
                    res = s.search(name, p.vectors[q_mod][j], _opts(K, g_mod, q_mod, extra))
                    ranks.append(_rank([(str(h.id), h.modality) for h in res.results], (str(p.ids[j]), g_mod)))
                per_fold.append(_metrics(ranks))
                if progress:
                    progress(len(part))
            results[label][f"{q_mod}_to_{g_mod}"] = _spread(per_fold)
    out["options"] = results
    out["mixed"] = _mixed(s, name, p, parts, results.get("plain"), progress)
    if hubness:
        held = _HeldOut(p, parts)
        out["hubness_offline"] = _hubness(held)
        out["mixed_hubness_offline"] = _mixed_hubness(s, name, held, out["hubness_offline"])
        out["defaults"] = choose_defaults(out)
    if save:
        ix.set_evaluation(name, {**(ix.collection(name).evaluation or {}), **out})
    return out


class _HeldOut:
    """The pairs' unit vectors and each fold's held-out biases, each computed once: the hubness
    figures and the corrected mixed list use the same ones."""

    def __init__(self, p: Pairs, parts: list[np.ndarray]) -> None:
        self.vec = {m: unit(v) for m, v in p.vectors.items()}
        self.parts = parts
        everyone = np.arange(len(p.ids))
        self.train = [np.setdiff1d(everyone, part) for part in parts]
        self._biases: dict[tuple[str, int, int], np.ndarray] = {}

    def bias(self, m: str, fold: int, k: int) -> np.ndarray:
        """Modality ``m``'s items' biases against the other modality's items outside ``fold``."""
        key = (m, fold, k)
        if key not in self._biases:
            self._biases[key] = bias(self.vec[m], self.vec[other_modality(m)][self.train[fold]], k)
        return self._biases[key]


def _hubness(h: _HeldOut) -> dict[str, Any]:
    """Nearest-neighbour normalisation, computed held out here (``search --hubness`` applies
    the same correction with a bias fitted on the whole collection, which would leak a query's
    own pair into its bias if evaluated through it): the similarity
    of a query to gallery item v minus β × v's mean of its k highest similarities to a *bank* of
    queries. The bank of a fold is the other folds' items of the query modality, so a query's own
    pair never feeds the bias its ranking uses; k and β are chosen on the training folds only
    (split in two: one half queries, the other the bank)."""
    vec = h.vec
    out: dict[str, Any] = {}
    for q_mod, g_mod in DIRECTIONS:
        gallery = vec[g_mod]
        per_fold, chosen = [], []
        for f, (part, train) in enumerate(zip(h.parts, h.train, strict=True)):
            k, beta = choose(vec[q_mod], gallery, train)
            chosen.append({"k": k, "beta": beta})
            r = ranks(vec[q_mod][part], gallery, part, h.bias(g_mod, f, k), beta)
            per_fold.append(_metrics(list(r)))
        out[f"{q_mod}_to_{g_mod}"] = {**_spread(per_fold), "chosen": chosen}
    return out


def _mixed(
    s: Searcher,
    name: str,
    p: Pairs,
    parts: list[np.ndarray],
    plain: dict[str, Any] | None,
    progress: Callable[[int], None] | None,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for q_mod, g_mod in DIRECTIONS:
        per_fold, images_first, own = [], [], []
        own_first: list[tuple[int, str]] = []  # (query, the own-modality item at its rank 1)
        for part in parts:
            ranks = []
            for j in part:
                res = s.search(name, p.vectors[q_mod][j], _opts(K + 1, "all", q_mod, {}))
                hits = [
                    (str(h.id), h.modality) for h in res.results if (str(h.id), h.modality) != (str(p.ids[j]), q_mod)
                ]
                hits = hits[:K]
                ranks.append(_rank(hits, (str(p.ids[j]), g_mod)))
                images_first.append(bool(hits) and hits[0][1] == "image")
                own.append(sum(m == q_mod for _, m in hits) / K)
                if hits and hits[0][1] == q_mod:
                    own_first.append((int(j), hits[0][0]))
            per_fold.append(_metrics(ranks))
            if progress:
                progress(len(part))
        d = f"{q_mod}_to_{g_mod}"
        out[d] = _mixed_entry(_spread(per_fold), images_first, own, plain, d)
        out[d]["own_modality_at_rank_1"] = _own_first(s, name, p, (q_mod, g_mod), own_first, len(own))
    return out


def _own_first(
    s: Searcher, name: str, p: Pairs, direction: tuple[str, str], first: list[tuple[int, str]], queries: int
) -> dict[str, Any]:
    """What a mixed list puts first when it is not the other modality: for each query whose rank 1
    is an item of its own modality, is that item among the ``K`` its *pair* finds in that
    modality (plain search, the query itself left out)? The pair metric counts every such list
    as a miss; a share far above chance (``K`` over the modality's size less the query) says the items are ones
    the query's own pair would retrieve — related, not a modality bias."""
    q_mod, g_mod = direction
    found = 0
    for j, first_id in first:
        res = s.search(name, p.vectors[g_mod][j], _opts(K + 1, q_mod, g_mod, {}))
        ids = [str(h.id) for h in res.results if str(h.id) != str(p.ids[j])][:K]
        found += first_id in ids
    size = s.ix.moments(name, q_mod)[1].n
    return {
        "share_of_queries": len(first) / queries if queries else 0.0,
        "in_pairs_top_10": found / len(first) if first else None,
        "chance": min(1.0, K / max(size - 1, 1)),
    }


def _mixed_entry(
    fig: dict[str, Any],
    images_first: list[bool],
    own: list[float],
    ceiling: dict[str, Any] | None,
    direction: str,
) -> dict[str, Any]:
    """One direction's mixed figures: recall, the share of images at rank 1 (a modality bias
    shows there) and the share of the query's own modality in the top 10 (a list that is mixed
    in name only — the other modality first, always — shows there: the pair metric cannot see it,
    since it counts only the paired item of the other modality as relevant)."""
    entry: dict[str, Any] = {
        "mixed": fig,
        "share_of_images_at_rank_1": float(np.mean(images_first)),
        "own_modality_share_of_top_10": float(np.mean(own)),
    }
    if ceiling is not None:
        c = ceiling[direction]
        entry["share_of_ceiling"] = {
            k: (fig[k]["mean"] / c[k]["mean"] if c[k]["mean"] else float("nan")) for k in ("r@1", "r@10")
        }
    return entry


def _mixed_hubness(s: Searcher, name: str, h: _HeldOut, hub: dict[str, Any]) -> dict[str, Any]:
    """The calibrated mixed list with the hubness correction on both modalities, as
    ``search --modality all --hubness`` scores it — the corrected similarity
    ``s = cos(q, v) − β·(b(v) − b̄)`` (b̄ the modality's mean bias) judged from both sides,
    ``(s − q·m̂_t)/√(qᵀΣ_t q) + (s − v·m̂_q)/√(vᵀΣ_q v)`` — over the whole gallery (search
    rescores each modality's ``MIX_REACH``·k most similar) — computed here held out like
    :func:`_hubness`: each fold's biases come from the other folds' items (an image's bias from
    their texts, a text's from their images), with the (k, β) that fold chose for the query's
    direction on its training folds. m̂ and Σ are the collection's running statistics, as in search."""
    vec = h.vec
    mom = {m: s.ix.moments(name, m)[1] for m in vec}  # the running statistics search calibrates with
    out: dict[str, Any] = {}
    for q_mod, g_mod in DIRECTIONS:
        d = f"{q_mod}_to_{g_mod}"
        per_fold, images_first, own = [], [], []
        for f, (part, kb) in enumerate(zip(h.parts, hub[d]["chosen"], strict=True)):
            q = vec[q_mod][part]
            cal = {}
            for m in (g_mod, q_mod):
                b = h.bias(m, f, kb["k"])
                sim = q @ vec[m].T - kb["beta"] * (b - b.mean())[None, :]
                cal[m] = two_sided(sim, q, vec[m], mom[m], mom[q_mod])
            cal[q_mod][np.arange(len(part)), part] = -np.inf  # the query itself is not in its list
            both = np.concatenate([cal[g_mod], cal[q_mod]], axis=1)  # cross first: index < N is g_mod
            n = cal[g_mod].shape[1]
            target = cal[g_mod][np.arange(len(part)), part]
            per_fold.append(_metrics(list(1 + (both > target[:, None]).sum(axis=1))))
            top = np.argsort(-both, axis=1)[:, :K]
            images_first += list((top[:, 0] < n) == (g_mod == "image"))
            own += list((top >= n).mean(axis=1))
        entry = _mixed_entry(_spread(per_fold), images_first, own, None, d)
        entry["share_of_ceiling"] = {
            kk: entry["mixed"][kk]["mean"] / hub[d][kk]["mean"] if hub[d][kk]["mean"] else float("nan")
            for kk in ("r@1", "r@10")
        }
        out[d] = entry
    return out


def read_queries(path: Any) -> list[dict[str, Any]]:
    """Labelled queries from a JSON-lines file (see :func:`check_queries`); a bad line is an
    error naming it."""
    import json
    from pathlib import Path

    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"Cannot read the queries file {path}: {exc}") from None
    objs = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                objs.append((f"{path}, line {n}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise InvalidInputError(f"{path}, line {n}: not JSON ({exc.msg}).") from None
    return check_queries(objs)


def check_queries(objs: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """``(where, object)`` pairs checked as labelled queries: ``vector`` (a list of numbers) or
    ``text``, ``relevant`` (the ids that answer it), and optionally ``modality`` (what the query
    is: text or image; default text) and ``target`` (image, text or all; default the other
    modality)."""
    out = []
    for where, q in objs:
        if not isinstance(q, dict) or ("vector" in q) == ("text" in q):
            raise InvalidInputError(f'{where}: give exactly one of "vector" or "text".')
        rel = q.get("relevant")
        if not isinstance(rel, list) or not rel:
            raise InvalidInputError(f'{where}: "relevant" must be a non-empty list of ids.')
        mod = q.get("modality", "text")
        target = q.get("target", "image" if mod == "text" else "text")
        if mod not in ("text", "image") or target not in ("text", "image", "all"):
            raise InvalidInputError(f"{where}: modality is text or image; target image, text or all.")
        out.append({**q, "modality": mod, "target": target})
    if not out:
        raise InvalidInputError("No queries were given.")
    return out


def evaluate_queries(
    ix: Indexer,
    name: str,
    queries: list[dict[str, Any]],
    *,
    folds: int = 5,
    options: dict[str, dict[str, Any]] | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """A user's own labelled queries (:func:`read_queries`) through the real search path, plain
    and with each option: recall@1/5/10 (share of a query's relevant ids in its top k, averaged
    over queries), success@1 (a relevant id first) and MRR@10 (first relevant), mean ± spread
    over folds of the queries. Text queries are encoded with the collection's model."""
    from indexer.encoders import encode_query
    from indexer.vectors import as_query

    if len(queries) < folds:
        raise InvalidInputError(f"{folds} folds need at least {folds} queries, got {len(queries)}.")
    c = ix.collection(name)
    vecs = []
    for q in queries:
        if "vector" in q:
            vecs.append(as_query(q["vector"], c.dim))
        else:
            vecs.append(encode_query(c.model, c.pretrained, text=str(q["text"]))[0])
    opts = OPTIONS if options is None else options
    parts = np.array_split(np.arange(len(queries)), folds)
    s = Searcher(ix)
    results: dict[str, Any] = {}
    for label, extra in opts.items():
        per_fold = []
        for part in parts:
            rows = []
            for j in part:
                q = queries[j]
                res = s.search(name, vecs[j], _opts(K, q["target"], q["modality"], extra))
                got = [str(r.id) for r in res.results]
                rel = {str(x) for x in q["relevant"]}
                first = next((i for i, x in enumerate(got, 1) if x in rel), None)
                rows.append(
                    {
                        **{f"r@{k}": len(rel & set(got[:k])) / len(rel) for k in (1, 5, 10)},
                        "success@1": float(first == 1),
                        "mrr@10": 1.0 / first if first else 0.0,
                    }
                )
            per_fold.append({k: float(np.mean([r[k] for r in rows])) for k in rows[0]})
            if progress:
                progress(len(part))
        results[label] = _spread(per_fold)
    out = {"collection": name, "queries": len(queries), "folds": folds, "k": K, "labelled": results}
    ix.set_evaluation(name, {**(ix.collection(name).evaluation or {}), "labelled": out})
    return out


__all__ = ["HUB_GRID", "OPTIONS", "check_queries", "evaluate", "evaluate_queries", "read_queries"]
