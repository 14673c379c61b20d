"""The ``inforank`` command: the write-side commands plus search, align and demo."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import numpy as np
import typer

from indexer import errors
from indexer.cli import (
    REJECTED_EXIT,
    REMOTE,
    IngestArgs,
    app,
    collections_text,
    created_text,
    delete_text,
    emit,
    fail,
    freshness_text,
    ingest_summary,
    item_reads,
    opened,
    progress,
    rescore_text,
)
from indexer.items import Item
from indexer.settings import Settings
from indexer.vectors import problem
from indexer.writer import Rejection
from retrieval import align as align_lib
from retrieval.client import Client
from retrieval.search import Searcher, SearchOptions

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
PREFER_WEIGHT = 0.25
PREFER_EXCLUDE_PCT = 5.0

align_app = typer.Typer(help="Procrustes-aligned query space: fit, status, off.", no_args_is_help=True)
app.add_typer(align_app, name="align")


@app.command()
def search(
    collection: str,
    text: Annotated[str | None, typer.Option(help="Query text (needs the collection's open_clip model).")] = None,
    image: Annotated[Path | None, typer.Option(help="Query image file.")] = None,
    vector: Annotated[Path | None, typer.Option(help="Query vector as .npy (1-D).")] = None,
    vector_modality: Annotated[str, typer.Option(help="What a --vector query is: text or image.")] = "text",
    k: Annotated[int, typer.Option(help="How many results.")] = 10,
    modality: Annotated[
        str, typer.Option(help="Search image vectors, text vectors, or all (one mixed list).")
    ] = "image",
    min_info_gain: Annotated[
        float | None, typer.Option(help="Keep items with at least this information gain (see `stats` for its range).")
    ] = None,
    max_info_gain: Annotated[float | None, typer.Option(help="Keep items with at most this information gain.")] = None,
    min_conformity: Annotated[
        float | None, typer.Option(help="Keep items at least this generic (mean cosine to their modality).")
    ] = None,
    max_conformity: Annotated[float | None, typer.Option(help="Keep items at most this generic.")] = None,
    exclude_bottom_info_gain_pct: Annotated[
        float | None, typer.Option(help="Drop the least informative P % (placeholders live there).")
    ] = None,
    filter_json: Annotated[str | None, typer.Option("--filter", help="A Qdrant payload filter as JSON.")] = None,
    rerank_info_gain: Annotated[
        float,
        typer.Option(
            help="Rerank weight of information gain: 1 trades one standard deviation of the score for one "
            "standard deviation of this query's similarities (0.25 is a gentle preference)."
        ),
    ] = 0.0,
    rerank_conformity: Annotated[
        float, typer.Option(help="Rerank weight of conformity, on the same scale (negative prefers distinctive).")
    ] = 0.0,
    prefer: Annotated[
        str | None,
        typer.Option(
            help="distinctive or typical: a conformity weight of ∓0.25 among informative items (the least "
            "informative 5 % excluded unless --exclude-bottom-info-gain-pct says otherwise)."
        ),
    ] = None,
    depth: Annotated[int, typer.Option(help="Candidates prefetched for reranking.")] = 100,
    align: Annotated[bool, typer.Option("--align", help="Apply the active alignment map to text queries.")] = False,
    no_calibrate: Annotated[
        bool, typer.Option("--no-calibrate", help="Mixed search on raw cosine (plain CLIP).")
    ] = False,
    hubness: Annotated[
        bool,
        typer.Option(
            "--hubness", help="Correct each item's similarity by its hubness bias (fit it with `inforank hubness fit`)."
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Search with informativeness filters and reranking.

    Example: inforank search photos --vector q.npy --k 5 --exclude-bottom-info-gain-pct 5
    """
    if sum(x is not None for x in (text, image, vector)) != 1:
        fail(errors.InvalidQueryError("Give exactly one of --text, --image or --vector."))
    if prefer not in (None, "distinctive", "typical"):
        fail(errors.InvalidQueryError("--prefer takes distinctive or typical."))
    if prefer:
        # typical items are near the modality's mean, and so are placeholders: preferring either
        # kind is done among informative items, or the most generic junk would rise to the top
        rerank_conformity = -PREFER_WEIGHT if prefer == "distinctive" else PREFER_WEIGHT
        if exclude_bottom_info_gain_pct is None:
            exclude_bottom_info_gain_pct = PREFER_EXCLUDE_PCT
    try:
        flt = json.loads(filter_json) if filter_json else None
    except json.JSONDecodeError as exc:
        fail(errors.InvalidQueryError(f"--filter is not valid JSON: {exc.msg}."))
    remote = Settings().url
    if remote:
        if vector is None:
            fail(errors.InvalidQueryError("In remote mode (INFORANK_URL) query with --vector."))
        body = {k: v for k, v in _search_options(locals()).__dict__.items() if k != "payload_filter"}
        with _client(remote) as cl:
            res = cl.search(collection, _query_vector(vector), filter=flt, **body)
        emit(
            {"results": [h.__dict__ for h in res.hits], "note": res.note, "applied": res.applied}, as_json, _search_text
        )
        return
    with opened() as ix:
        c = ix.collection(collection)
        qmod = vector_modality
        if vector is not None:
            q = _query_vector(vector)
        else:
            from indexer.encoders import ClipEncoder

            if c.model == "external":
                fail(errors.InvalidQueryError(f"Collection {c.name!r} holds external vectors: query with --vector."))
            enc = ClipEncoder.load(c.model, c.pretrained)
            if text is not None:
                q, qmod = enc.encode_texts([text])[0], "text"
            else:
                vecs, bad = enc.encode_images([image])  # type: ignore[list-item]
                if bad:
                    fail(errors.InvalidItemError(bad[0]))
                q, qmod = vecs[0], "image"
        opts = SearchOptions(
            k=k,
            modality=modality,
            query_modality=qmod,
            min_info_gain=min_info_gain,
            max_info_gain=max_info_gain,
            min_conformity=min_conformity,
            max_conformity=max_conformity,
            exclude_bottom_info_gain_pct=exclude_bottom_info_gain_pct,
            payload_filter=flt,
            rerank_info_gain=rerank_info_gain,
            rerank_conformity=rerank_conformity,
            depth=depth,
            align=align,
            calibrate=not no_calibrate,
            hubness=hubness,
        )
        resp = Searcher(ix).search(collection, q, opts)
        emit(resp.as_dict(), as_json, _search_text)


def _search_options(a: dict[str, Any]) -> SearchOptions:
    return SearchOptions(
        k=a["k"],
        modality=a["modality"],
        query_modality=a["vector_modality"],
        min_info_gain=a["min_info_gain"],
        max_info_gain=a["max_info_gain"],
        min_conformity=a["min_conformity"],
        max_conformity=a["max_conformity"],
        exclude_bottom_info_gain_pct=a["exclude_bottom_info_gain_pct"],
        payload_filter=a.get("flt"),
        rerank_info_gain=a["rerank_info_gain"],
        rerank_conformity=a["rerank_conformity"],
        depth=a["depth"],
        align=a["align"],
        calibrate=not a["no_calibrate"],
        hubness=a["hubness"],
    )


def _fmt(v: Any) -> str:
    return "   n/a " if v is None else f"{v:7.4f}"


def _search_text(d: dict[str, Any]) -> str:
    lines = [f"{'#':>3} {'id':<24} {'mod':<5} {'sim':>7} {'final':>7} {'conf':>7} {'ig':>7}  version"]
    for i, r in enumerate(d["results"], 1):
        lines.append(
            f"{i:>3} {str(r['id'])[:24]:<24} {r['modality']:<5} {r['similarity']:7.4f} {r['score']:7.3f} "
            f"{_fmt(r['conformity'])} {_fmt(r['info_gain'])}  {r['stats_version']}"
        )
    if d["note"]:
        lines.append(f"note: {d['note']}")
    return "\n".join(lines)


@app.command()
def stats(collection: str, as_json: JsonOpt = False) -> None:
    """Per-modality count, mean norm, version, drift and diagnostics. Example: inforank stats photos"""
    remote = Settings().url
    if remote:
        with _client(remote) as c:
            emit(c.stats(collection), as_json, _stats_text)
        return
    with opened() as ix:
        emit(ix.stats(collection), as_json, _stats_text)


def _stats_text(d: dict[str, Any]) -> str:
    out = [f"{d['collection']}  model={d['model']}  dim={d['dim']}  version={d['stats_version']}"]
    for m, s in d["modalities"].items():
        iso = s.get("isotropy", {})
        out.append(
            f"  {m:5s} count={s['count']:<8d} |mean|={s['mean_norm']:.4f} version={s['stats_version']} "
            f"pending={s['pending_scores']} I1={iso.get('i1', float('nan')):.3g} "
            f"I2={iso.get('i2', float('nan')):.3g} shell_rms={s['shell']['rms_radius']:.4f}"
        )
        for f, q in s.get("score_quantiles", {}).items():
            out.append(f"        {f:10s} typical values: 5 % {q['p5']:.3g}, median {q['p50']:.3g}, 95 % {q['p95']:.3g}")
        fr = s.get("freshness") or {}
        if fr.get("bound"):
            out.append("  " + freshness_text({m: fr}).strip())
            share = fr.get("sampled_share_outside_tolerance")
            when = fr.get("last_rescore_at") or "never"
            out.append(
                f"        {fr['unchecked_rows']} rows not checked since the last rescore ({when}); "
                + ("" if share is None else f"{100 * share:.1f} % of a sample outside tolerance")
            )
            if fr["outside_tolerance"]:
                out.append(
                    "        scores are stale beyond tolerance: run `inforank rescore "
                    f"{d['collection']}` (or keep `inforank rescore --watch` running beside ingestion)"
                )
    if "gap" in d:
        out.append(f"  modality gap={d['gap']['modality_gap']:.4f} cos(means)={d['gap']['cos_means']:.4f}")
    q = d.get("quarantined") or {}
    if q.get("count"):
        out.append(f"  {q['count']} quarantined points (Qdrant refused them): see `inforank sync {d['collection']}`")
    return "\n".join(out)


def _query_vector(path: Path) -> np.ndarray:
    """The query vector of a .npy (1-D, or one row); a file that is not one is a one-line error."""
    from indexer.readers import load_arrays

    try:
        q, _ = load_arrays(path)
    except errors.InforankError as exc:
        fail(exc)
    if q.ndim == 2 and q.shape[0] == 1:
        q = q[0]
    if q.ndim != 1:
        fail(errors.InvalidQueryError(f"{path} holds an array of shape {q.shape}: the query must be one 1-D vector."))
    return q


@contextmanager
def _client(url: str) -> Iterator[Client]:
    """Remote mode: the same command against `inforank serve` at ``url`` (INFORANK_URL)."""
    try:
        with Client(url, api_key=Settings().api_key) as c:
            yield c
    except errors.InforankError as exc:
        fail(exc)
    except httpx.HTTPError as exc:
        fail(errors.StorageError(f"Cannot reach the inforank service at {url}: {exc}"))


def _remote_ingest(url: str, a: IngestArgs) -> None:
    """``inforank ingest`` through the service: read (and encode) here, send batches over HTTP.
    Unusable vectors (NaN/Inf, which JSON cannot carry, zero, wrong dimension) are rejected here
    with the reasons the service gives, so the good items of a batch still land."""
    rejected: list[dict[str, Any]] = []
    ingested = unchanged = 0
    with _client(url) as cl:
        info = cl.collection(a.collection)
        version = info["stats_version"]
        reads, total = item_reads(a, info["model"], info["pretrained"])
        model = (None, "") if a.vectors is not None else (info["model"], info["pretrained"])
        buf: list[tuple[int, Item]] = []  # (position among the items read, item)

        def send() -> None:
            nonlocal ingested, unchanged, version
            rep = cl.add(a.collection, [_wire(it) for _, it in buf], *model)
            ingested += len(rep["ingested"])
            unchanged += len(rep["skipped_duplicates"])
            rejected.extend({**r, "index": buf[r["index"]][0]} for r in rep["rejected"])
            version = max(version, rep["stats_version"])
            bar.update(len(buf))
            buf.clear()

        with progress(total, f"ingest {a.collection} via {url}") as bar:
            pos = -1
            for it in reads:
                if isinstance(it, Rejection):  # a reader could not even build the item
                    rejected.append(it.as_dict())
                    continue
                pos += 1
                if it.position is not None:  # where it stands in the input file
                    pos = it.position
                why = next((f"{m} vector: {w}" for m, v in it.vectors.items() if (w := problem(v, info["dim"]))), None)
                if why is not None:  # the service's own reasons, found before sending
                    rejected.append(Rejection(pos, it.id, why).as_dict())
                    continue
                buf.append((pos, it))
                if len(buf) >= a.batch_size:
                    send()
            if buf:
                send()
    ingest_summary(a, ingested, unchanged, rejected, version)


def _wire(it: Item) -> dict[str, Any]:
    return {"id": it.id, **it.vectors, "metadata": it.metadata, "hashes": it.hashes, "sources": it.sources}


def _remote_delete(url: str, collection: str, ids: list[str | int], as_json: bool) -> None:
    with _client(url) as cl:
        out = cl.delete(collection, ids)
    emit(out, as_json, delete_text)
    if out["missing"]:
        raise typer.Exit(REJECTED_EXIT)


def _remote_create(url: str, name: str, spec: dict[str, Any], as_json: bool) -> None:
    with _client(url) as cl:
        d = cl.create_collection(name, **spec)
    emit(d, as_json, created_text)


def _remote_collections(url: str, as_json: bool) -> None:
    with _client(url) as cl:
        rows = cl.collections()
    emit(rows, as_json, collections_text)


def _remote_rescore(url: str, collection: str, all_: bool, as_json: bool) -> None:
    with _client(url) as cl:
        d = cl.rescore(collection, all=all_)
    emit(d, as_json, rescore_text)


def _remote_drop(url: str, collection: str, as_json: bool) -> None:
    with _client(url) as cl:
        cl.drop(collection)
    emit({"dropped": collection}, as_json, lambda d: f"dropped {d['dropped']}")


REMOTE.update(
    ingest=_remote_ingest,
    delete=_remote_delete,
    create=_remote_create,
    collections=_remote_collections,
    rescore=_remote_rescore,
    drop=_remote_drop,
)


@align_app.command("fit")
def align_fit(
    collection: str,
    method: Annotated[str, typer.Option(help="procrustes (orthogonal) or lstsq.")] = "procrustes",
    force: Annotated[bool, typer.Option("--force", help="Activate even if held-out recall drops.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Fit a text→image map on paired items, evaluate on held-out pairs, store it versioned.

    Example: inforank align fit photos
    """
    if remote_url := Settings().url:
        with _client(remote_url) as cl:
            d = cl.align_fit(collection, method, force)
        emit(d, as_json, _align_text)
        return
    with opened() as ix:
        m = align_lib.fit(ix, collection, method, force)
        emit({"version": m.version, "method": m.method, "active": m.active, **m.metrics}, as_json, _align_text)


def _align_text(d: dict[str, Any]) -> str:
    t, mx = d["text_to_image"], d["mixed_top1"]
    return "\n".join(
        [
            f"alignment v{d['version']} ({d['method']}, shrinkage {d['shrinkage']}) fitted on {d['pairs']} pairs; "
            f"{d['repeats']}×{d['folds']}-fold cross-validated ({d['test']} pairs held out per fold)",
            "  text→image   " + "  ".join(f"{k} {t['plain'][k]:.2f}→{t['aligned'][k]:.2f}" for k in t["plain"]),
            f"  mixed top-1  plain {mx['plain']:.2f}  aligned {mx['aligned']:.2f}  calibrated {mx['calibrated']:.2f}"
            f" ({mx['calibrated_share_of_ceiling']:.0%} of the ceiling)"
            f"  aligned+calibrated {mx['aligned_calibrated']:.2f}  (ceiling {mx['ceiling_text_to_image_r@1']:.2f})",
            f"  {d['reason']}",
        ]
    )


@align_app.command("status")
def align_status(collection: str, as_json: JsonOpt = False) -> None:
    """List fitted maps and which is active. Example: inforank align status photos"""
    if remote_url := Settings().url:
        with _client(remote_url) as cl:
            rows = cl.align_status(collection)
    else:
        with opened() as ix:
            rows = align_lib.status(ix, collection)
    emit(rows, as_json, _maps_text)


def _maps_text(rs: list[dict[str, Any]]) -> str:
    lines = [f"v{r['version']} {r['method']} active={r['active']} shrinkage={r['shrinkage']}" for r in rs]
    return "\n".join(lines) or "no maps"


@align_app.command("off")
def align_off(collection: str, as_json: JsonOpt = False) -> None:
    """Deactivate alignment. Example: inforank align off photos"""
    if remote_url := Settings().url:
        with _client(remote_url) as cl:
            cl.align_off(collection)
    else:
        with opened() as ix:
            align_lib.off(ix, collection)
    emit({"collection": collection, "alignment": "off"}, as_json, lambda d: "alignment off")


hubness_app = typer.Typer(help="Hubness correction (nearest-neighbour normalisation): fit.", no_args_is_help=True)
app.add_typer(hubness_app, name="hubness")


@hubness_app.command("fit")
def hubness_fit(
    collection: str,
    k: Annotated[int | None, typer.Option(help="Bank neighbours per item (chosen on the pairs if omitted).")] = None,
    beta: Annotated[float | None, typer.Option(help="Weight of the bias (chosen with k if omitted).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Compute every item's hubness bias (mean of its k highest similarities to the other
    modality) and store it, so `search --hubness` corrects hubs inside Qdrant. k and β are chosen
    on the collection's own pairs unless given; `inforank evaluate` shows the held-out effect.

    Example: inforank hubness fit photos
    """
    from retrieval import hubness

    with opened() as ix:
        out = hubness.fit(ix, collection, k=k, beta=beta)
    out.pop("grid", None)
    emit(
        out,
        as_json,
        lambda d: (
            f"hubness bias of {d['items']} items (k={d['k']}, β={d['beta']}) at statistics version "
            f"{d['stats_version']}: search with --hubness"
        ),
    )


@app.command()
def evaluate(
    collection: str,
    folds: Annotated[int, typer.Option(help="Folds of the queries; figures are mean ± spread over them.")] = 5,
    max_queries: Annotated[int, typer.Option(help="At most this many pairs are used as queries.")] = 1000,
    as_json: JsonOpt = False,
) -> None:
    """How well search finds each item's pair, plain and with each option, both directions.

    Every paired item (an image and a text under one id) queries for its pair through the real
    search path; recall@1/5/10 and MRR@10, mean ± spread over folds, and mixed search judged from
    both sides against its single-modality ceiling.

    Example: inforank evaluate photos --folds 5
    """
    from retrieval.evaluate import DIRECTIONS, OPTIONS
    from retrieval.evaluate import evaluate as evaluate_lib

    with opened() as ix:
        n = len(ix.vectors(collection, "text")[0]) if collection else 0
        total = min(n, max_queries) * 2 * (len(OPTIONS) + 1) if n else None
        with progress(total, f"evaluate {collection}") as bar:
            out = evaluate_lib(ix, collection, folds=folds, max_queries=max_queries, progress=bar.update)
    emit(out, as_json, lambda d: _evaluate_text(d, [f"{q}_to_{g}" for q, g in DIRECTIONS]))


def _evaluate_text(d: dict[str, Any], directions: list[str]) -> str:
    lines = [f"{d['collection']}: {d['queries']} of {d['pairs']} pairs as queries, {d['folds']} folds (mean ± spread)"]
    for direction in directions:
        lines.append(f"  {direction.replace('_', ' ')}:{'':28s}R@1            R@5            R@10           MRR@10")
        for label, res in d["options"].items():
            f = res[direction]
            cells = "  ".join(f"{f[k]['mean']:.3f} ± {f[k]['std']:.3f}" for k in ("r@1", "r@5", "r@10", "mrr@10"))
            lines.append(f"    {label:36s}{cells}")
        m = d["mixed"][direction]
        share = m.get("share_of_ceiling", {})
        lines.append(
            f"    {'mixed list (calibrated)':36s}{m['mixed']['r@1']['mean']:.3f} R@1 = "
            f"{share.get('r@1', float('nan')):.2f} of the ceiling, R@10 {share.get('r@10', float('nan')):.2f} of it; "
            f"images at rank 1: {100 * m['share_of_images_at_rank_1']:.0f} %"
        )
        h = d.get("hubness_offline", {}).get(direction)
        if h:
            cells = "  ".join(f"{h[k]['mean']:.3f} ± {h[k]['std']:.3f}" for k in ("r@1", "r@5", "r@10", "mrr@10"))
            lines.append(f"    {'hubness correction (offline*)':36s}{cells}")
    if d.get("hubness_offline"):
        lines.append(
            "  * computed here, held out (bank = the other folds' queries; k, β chosen on training folds): "
            "not yet a search option"
        )
    return "\n".join(lines)


@app.command()
def report(
    collection: str,
    out: Annotated[Path, typer.Option(help="Directory for index.html and the PNG plots.")] = Path("out/report"),
) -> None:
    """Write an HTML report with plots of the collection's scores and geometry.

    Example: inforank report photos --out out/photos
    """
    from retrieval.report import write_report

    with opened() as ix:
        page = write_report(ix, collection, out)
        typer.echo(f"report written to {page.resolve()}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Where the report goes.")] = Path("out/demo"),
    as_json: JsonOpt = False,
) -> None:
    """Run the main job end to end on the embedded default with real CLIP embeddings.

    Example: inforank demo
    """
    from retrieval.demo import run

    with opened() as ix:
        summary = run(ix, out, echo=None if as_json else typer.echo)
        if as_json:
            emit(summary, True, str)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
) -> None:
    """Run the HTTP API (OpenAPI docs at /docs). INFORANK_API_KEY enables auth.

    Example: INFORANK_API_KEY=secret inforank serve --port 8000
    """
    import uvicorn

    from indexer.settings import Settings
    from retrieval.service import create_app

    s = Settings()
    with opened() as ix:
        # requests never wait for a rescore: due ones run on the service's background thread
        ix.rescore_inline_limit = 0
        typer.echo(
            f"inforank serving on http://{host}:{port} (docs at /docs, auth {'on' if s.api_key else 'off'}); "
            f"database {_safe_url(ix.database_url)}; {ix.location.describe()}",
            err=True,
        )
        uvicorn.run(create_app(ix, api_key=s.api_key), host=host, port=port, log_level="warning")


def _safe_url(url: str) -> str:
    """A database URL without its password, for printing."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparseable URL)"


def main() -> None:
    app()


if __name__ == "__main__":
    main()
