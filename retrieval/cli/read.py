"""The read-side commands: search, stats, evaluate, hubness, align, report, demo, serve."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from indexer import errors
from retrieval.cli.common import JsonOpt, app, backend, emit, engines, fail, handled, progress, with_options
from retrieval.cli.write import freshness_text
from retrieval.options import SearchOptions

align_app = typer.Typer(help="Procrustes-aligned query space: fit, status, off.", no_args_is_help=True)
app.add_typer(align_app, name="align")
hubness_app = typer.Typer(help="Hubness correction (nearest-neighbour normalisation): fit.", no_args_is_help=True)
app.add_typer(hubness_app, name="hubness")


@app.command()
@with_options(SearchOptions, into="options")
def search(
    collection: str,
    options: SearchOptions,
    text: Annotated[
        str | None, typer.Option(help="Query text (encoded with the collection's open_clip model).")
    ] = None,
    image: Annotated[Path | None, typer.Option(help="Query image file.")] = None,
    vector: Annotated[Path | None, typer.Option(help="Query vector as .npy (1-D); see --query-modality.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Search with informativeness filters and reranking (every option is also an HTTP API field).

    Example: inforank search photos --vector q.npy --k 5 --exclude-bottom-info-gain-pct 5
    """
    from retrieval.backend import query_vector

    q = _query_vector(vector) if vector is not None else None
    with backend() as b:
        vec, qmod = query_vector(
            b, collection, text=text, image=image, vector=q, vector_modality=options.query_modality
        )
        options.query_modality = "image" if qmod == "image" else "text"
        emit(b.search(collection, vec, options).as_dict(), as_json, _search_text)


def _fmt(v: Any) -> str:
    return "   n/a " if v is None else f"{v:7.4f}"


def _search_text(d: dict[str, Any]) -> str:
    lines = [f"{'#':>3} {'id':<24} {'mod':<5} {'sim':>7} {'final':>7} {'conf':>7} {'ig':>7}  version"]
    for i, r in enumerate(d["results"], 1):
        lines.append(
            f"{i:>3} {str(r['id'])[:24]:<24} {r['modality']:<5} {r['similarity']:7.4f} {r['score']:7.3f} "
            f"{_fmt(r['conformity'])} {_fmt(r['info_gain'])}  {r['stats_version']}"
        )
    a = d.get("applied") or {}
    if a.get("hubness"):
        h = a["hubness"]
        why = " (by default: `inforank evaluate` showed it helps)" if h.get("by_default") else ""
        lines.append(f"hubness correction k={h['k']} β={h['beta']}{why}")
    if a.get("approximate"):
        lines.append("approximate: searched the HNSW index (--exact for brute force)")
    for s in a.get("skipped", []):
        lines.append(f"skipped: {s}")
    if d["note"]:
        lines.append(f"note: {d['note']}")
    return "\n".join(lines)


@app.command()
def stats(collection: str, as_json: JsonOpt = False) -> None:
    """Per-modality count, mean norm, version, drift and diagnostics. Example: inforank stats photos"""
    with backend() as b:
        emit(b.stats(collection), as_json, _stats_text)


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
    ix = d.get("index") or {}
    if ix:
        how = "indexed by the Qdrant server" if ix["automatic"] else "HNSW"
        line = f"  search index: {ix['indexed_vectors']} of {ix['vectors']} vectors {how}"
        if ix["optimize_due"]:
            line += f"; due: run `inforank optimize {d['collection']}`"
        elif not ix["indexed_vectors"] and not ix["automatic"]:
            line += " (exact search: fast enough at this size)"
        out.append(line)
    fields = d.get("field_indexes")
    if fields:
        out.append("  indexed metadata fields: " + ", ".join(f"{i['field']} ({i['type']})" for i in fields))
    hub = d.get("hubness")
    if hub:
        line = f"  hubness correction k={hub['k']} β={hub['beta']} ({hub['bank']} bank)"
        if hub["pending_changes"]:
            line += (
                f"; {hub['pending_changes']} changes not followed yet (new items count as the mean bias): "
                f"`inforank rescore {d['collection']}`"
            )
        bound = max((hub.get("bound") or {}).values(), default=0.0)
        if bound:
            bank = " --bank YOUR_BANK.npy" if hub["bank"] == "user" else ""
            line += (
                f"; biases within {bound:.4f} of their definition (changes beyond the refresh's reach; "
                f"exact again after `inforank hubness fit {d['collection']} --k {hub['k']} --beta {hub['beta']}{bank}`)"
            )
        out.append(line)
    q = d.get("quarantined") or {}
    if q.get("count"):
        out.append(f"  {q['count']} quarantined points (Qdrant refused them): see `inforank sync {d['collection']}`")
    return "\n".join(out)


def _query_vector(path: Path) -> Any:
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
    with backend() as b:
        emit(b.align_fit(collection, method=method, force=force), as_json, _align_text)


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
    with backend() as b:
        emit(b.align_status(collection), as_json, _maps_text)


def _maps_text(rs: list[dict[str, Any]]) -> str:
    lines = [f"v{r['version']} {r['method']} active={r['active']} shrinkage={r['shrinkage']}" for r in rs]
    return "\n".join(lines) or "no maps"


@align_app.command("off")
def align_off(collection: str, as_json: JsonOpt = False) -> None:
    """Deactivate alignment. Example: inforank align off photos"""
    with backend() as b:
        emit(b.align_off(collection), as_json, lambda d: "alignment off")


@hubness_app.command("fit")
def hubness_fit(
    collection: str,
    k: Annotated[int | None, typer.Option(help="Bank neighbours per item (chosen on the pairs if omitted).")] = None,
    beta: Annotated[float | None, typer.Option(help="Weight of the bias (chosen with k if omitted).")] = None,
    bank: Annotated[
        Path | None,
        typer.Option(
            help="Your own bank of query vectors (.npy/.npz rows: past queries, captions) instead of the "
            "other modality's items, e.g. for an image-only collection searched by text (then give --k and --beta)."
        ),
    ] = None,
    bank_modality: Annotated[str, typer.Option(help="What the --bank vectors are: text or image.")] = "text",
    as_json: JsonOpt = False,
) -> None:
    """Compute every item's hubness bias (mean of its k highest similarities to the bank: the
    other modality, or --bank) and store it, so `search --hubness` corrects hubs inside Qdrant.
    k and β are chosen on the collection's own pairs unless given; `inforank evaluate` shows the
    held-out effect.

    Example: inforank hubness fit photos    |    inforank hubness fit pics --bank queries.npy --k 8 --beta 0.5
    """
    vectors = None
    if bank is not None:
        from indexer.readers import load_arrays

        with handled():
            vectors, _ = load_arrays(bank)
    with backend() as b:
        out = b.hubness_fit(collection, k=k, beta=beta, bank=vectors, bank_modality=bank_modality)
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
    queries: Annotated[
        Path | None,
        typer.Option(
            help="Your own labelled queries instead of the pairs: JSON lines with vector or text, relevant "
            '(ids), and optionally modality and target, e.g. {"text": "a red bike", "relevant": ["b12", "b40"]}.'
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """How well search finds each item's pair, plain and with each option, both directions.

    Every paired item (an image and a text under one id) queries for its pair through the real
    search path; recall@1/5/10 and MRR@10, mean ± spread over folds, and mixed search judged from
    both sides against its single-modality ceiling.

    Example: inforank evaluate photos --folds 5
    """
    from retrieval.evaluate import DIRECTIONS, OPTIONS, read_queries

    with handled():
        labelled = read_queries(queries) if queries is not None else None
    with backend() as b:
        if labelled is not None:
            total: int | None = len(labelled) * len(OPTIONS)
        else:
            n = b.stats(collection)["modalities"].get("text", {}).get("count", 0)
            total = min(n, max_queries) * 2 * (len(OPTIONS) + 1) if n else None
        with progress(total, f"evaluate {collection}") as bar:
            out = b.evaluate(collection, folds=folds, max_queries=max_queries, progress=bar.update, queries=labelled)
    if labelled is not None:
        emit(out, as_json, _labelled_text)
        return
    emit(out, as_json, lambda d: _evaluate_text(d, [f"{q}_to_{g}" for q, g in DIRECTIONS]))


def _labelled_text(d: dict[str, Any]) -> str:
    keys = ("r@1", "r@5", "r@10", "success@1", "mrr@10")
    lines = [f"{d['collection']}: {d['queries']} labelled queries, {d['folds']} folds (mean ± spread)"]
    lines.append(f"  {'':36s}" + "".join(f"{k:15s}" for k in keys))
    for label, f in d["labelled"].items():
        lines.append(f"  {label:36s}" + "".join(f"{f[k]['mean']:.3f} ± {f[k]['std']:.3f}  " for k in keys))
    return "\n".join(lines)


def _own_first_text(m: dict[str, Any]) -> str:
    o = m.get("own_modality_at_rank_1")
    if not o or not o["share_of_queries"]:
        return ""
    return (
        f"; first for {100 * o['share_of_queries']:.0f} % of queries, and then in its pair's top 10 "
        f"{100 * o['in_pairs_top_10']:.0f} % of the time (chance {100 * o['chance']:.0f} %)"
    )


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
        lines.append(
            f"    {'':36s}its own modality in the top 10: "
            f"{100 * m.get('own_modality_share_of_top_10', float('nan')):.0f} %{_own_first_text(m)}"
        )
        mh = (d.get("mixed_hubness_offline") or {}).get(direction)
        if mh:
            sh = mh["share_of_ceiling"]
            lines.append(
                f"    {'mixed list + hubness (offline*)':36s}{mh['mixed']['r@1']['mean']:.3f} R@1 = "
                f"{sh['r@1']:.2f} of the corrected ceiling, R@10 {sh['r@10']:.2f} of it; images at rank 1: "
                f"{100 * mh['share_of_images_at_rank_1']:.0f} %, own modality in the top 10: "
                f"{100 * mh['own_modality_share_of_top_10']:.0f} %"
            )
        h = d.get("hubness_offline", {}).get(direction)
        if h:
            cells = "  ".join(f"{h[k]['mean']:.3f} ± {h[k]['std']:.3f}" for k in ("r@1", "r@5", "r@10", "mrr@10"))
            lines.append(f"    {'hubness correction (offline*)':36s}{cells}")
    for direction, rec in ((d.get("defaults") or {}).get("hubness") or {}).items():
        state = "on by default" if rec["on"] else "off by default"
        lines.append(
            f"  hubness correction {direction.replace('_', ' ')}: {state} (held-out R@1 {rec['r@1_gain']:+.3f}, "
            f"spread {rec['spread']:.3f})"
            + ("; search applies it once `inforank hubness fit` has run" if rec["on"] else "")
        )
    if d.get("hubness_offline"):
        lines.append(
            "  * computed here, held out (bank = the other folds' queries; k, β chosen on training folds); "
            "`search --hubness` applies it with the bias fitted on the whole collection"
        )
    return "\n".join(lines)


@app.command()
def report(
    collection: str,
    out: Annotated[Path, typer.Option(help="Directory for index.html and the PNG plots.")] = Path("out/report"),
    as_json: JsonOpt = False,
) -> None:
    """Write an HTML report with plots of the collection's scores and geometry.

    Example: inforank report photos --out out/photos
    """
    from retrieval.report import write_report

    with engines("report") as ix:
        page = write_report(ix, collection, out)
    files = sorted(str(p.resolve()) for p in page.parent.iterdir() if p.is_file())
    emit({"report": str(page.resolve()), "files": files}, as_json, lambda d: f"report written to {d['report']}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Where the report goes.")] = Path("out/demo"),
    as_json: JsonOpt = False,
) -> None:
    """Run the main job end to end on the embedded default with real CLIP embeddings.

    Example: inforank demo
    """
    from retrieval.demo import run

    with engines("demo") as ix:
        summary = run(ix, out, echo=None if as_json else typer.echo)
        if as_json:
            emit(summary, True, str)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    as_json: JsonOpt = False,
) -> None:
    """Run the HTTP API (OpenAPI docs at /docs). INFORANK_API_KEY enables auth.

    Example: INFORANK_API_KEY=secret inforank serve --port 8000
    """
    import uvicorn

    from indexer.settings import Settings
    from retrieval.service import create_app

    s = Settings()
    with engines("serve") as ix:
        # requests never wait for a rescore: due ones run on the service's background thread
        ix.rescore_inline_limit = 0
        info = {
            "url": f"http://{host}:{port}",
            "docs": f"http://{host}:{port}/docs",
            "auth": bool(s.api_key),
            "database": _safe_url(ix.database_url),
            "qdrant": ix.location.describe(),
        }
        # on stderr: stdout stays free for whatever runs the service; --json for supervisors
        typer.echo(_serve_text(info) if not as_json else json.dumps(info), err=True)
        app = create_app(ix, api_key=s.api_key)
        gc.freeze()  # what warming up built joins start-up's objects (cli.common.settled_heap)
        uvicorn.run(app, host=host, port=port, log_level="warning")


def _serve_text(d: dict[str, Any]) -> str:
    return (
        f"inforank serving on {d['url']} (docs at {d['docs']}, auth {'on' if d['auth'] else 'off'}); "
        f"database {d['database']}; {d['qdrant']}"
    )


def _safe_url(url: str) -> str:
    """A database URL without its password, for printing."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparseable URL)"
