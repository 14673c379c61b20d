"""The write-side commands: collections, ingest, delete, rescore, sync, drop, attach, validate."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from indexer import errors
from retrieval.cli.common import REJECTED_EXIT, JsonOpt, app, backend, emit, engines, fail, handled, progress


@app.command()
def create(
    name: str,
    dim: Annotated[int | None, typer.Option(help="Vector dimension (taken from the model if omitted).")] = None,
    model: Annotated[str, typer.Option(help="open_clip model name, or 'external' for your own vectors.")] = "external",
    pretrained: Annotated[str, typer.Option(help="open_clip pretrained tag or checkpoint path.")] = "",
    min_count: Annotated[
        int, typer.Option(help="Items of the other modality before information gain is computed.")
    ] = 32,
    index_field: Annotated[
        list[str] | None,
        typer.Option(
            "--index-field",
            help="A metadata field you filter on, indexed from the start: FIELD or FIELD:TYPE "
            "(keyword by default; integer, float, bool, datetime, uuid). Repeatable.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a collection. Example: inforank create photos --dim 512 --index-field year:integer"""
    fields = dict(_field_spec(f) for f in index_field or [])
    if dim is None:
        if model == "external":
            fail(errors.InvalidInputError("Give --dim for a collection of external vectors."))
        from indexer.encoders import ClipEncoder

        with handled():
            dim = ClipEncoder.load(model, pretrained).dim
    with backend() as b:
        made = b.create(name, dim=dim, model=model, pretrained=pretrained, min_count=min_count, field_indexes=fields)
        emit(made, as_json, created_text)


def _field_spec(spec: str) -> tuple[str, str]:
    """``FIELD`` or ``FIELD:TYPE`` (the type after the last colon; checked by the library)."""
    field, sep, kind = spec.rpartition(":")
    return (field, kind) if sep else (spec, "keyword")


def created_text(d: dict[str, Any]) -> str:
    model = d["model"] if d["model"] == "external" else f"{d['model']}:{d['pretrained']}"
    fields = "".join(f", {i['field']} indexed as {i['type']}" for i in d.get("field_indexes", []))
    return f"created {d['name']} (dim {d['dim']}, model {model}{fields})"


@app.command("collections")
def list_collections(as_json: JsonOpt = False) -> None:
    """List collections. Example: inforank collections --json"""
    with backend() as b:
        emit(b.collections(), as_json, collections_text)


def collections_text(rs: list[dict[str, Any]]) -> str:
    lines = [f"{r['name']}\tdim={r['dim']}\tmodel={r['model']}\tversion={r['stats_version']}" for r in rs]
    return "\n".join(lines) or "no collections"


@app.command()
def ingest(
    collection: str,
    vectors: Annotated[Path | None, typer.Option(help=".npy/.npz/.parquet/.jsonl of precomputed vectors.")] = None,
    modality: Annotated[str | None, typer.Option(help="image or text, with --vectors.")] = None,
    ids: Annotated[Path | None, typer.Option(help="File of ids, one per line, for a .npy.")] = None,
    texts: Annotated[
        Path | None, typer.Option(help="Texts: one per line, or JSON lines with id/text/metadata.")
    ] = None,
    images: Annotated[Path | None, typer.Option(help="Folder of jpg/png/webp images (recursive).")] = None,
    batch_size: Annotated[int, typer.Option(help="Items per commit (per request in remote mode).")] = 1024,
    rescore: Annotated[
        bool,
        typer.Option(
            "--rescore/--no-rescore",
            help="When the ingest moved stored scores past their tolerance, rescore before returning "
            "(--no-rescore: leave it to `inforank rescore` or a running service).",
        ),
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """Add items; re-ingesting the same content changes nothing. With INFORANK_URL set, items go
    to that `inforank serve` (texts and images are encoded here, with the collection's model; the
    service keeps the scores fresh in the background). Here, an ingest that moves the stored
    scores past their tolerance rescores them before it returns (each pass is paid for by 25 %
    growth: a collection grown to N is checked about 5N rows in all).

    Example: inforank ingest photos --vectors emb.npz --modality image
    """
    from indexer.sources import reads

    with backend() as b:
        info = b.collection(collection)
        items, total = reads(
            info["model"], info["pretrained"], vectors=vectors, modality=modality, ids=ids, texts=texts, images=images
        )
        remote = b.where.startswith("http")  # a service keeps its scores fresh by itself
        with progress(total, f"ingest {collection}" + (f" via {b.where}" if remote else "")) as bar:
            out = b.ingest(
                collection,
                items,
                batch_size=batch_size,
                progress=bar.update,
                encoded=vectors is None,
                on_build=None if as_json else lambda st: bar.write(_build_note(collection, st), file=sys.stderr),
            )
        if rescore and out.get("rescore_due") and not remote:
            with progress(None, f"rescore {collection}") as bar:
                r = b.rescore(collection, all=False, progress=bar.update)
            out["rescored"] += r["rescored"]
            out["rescore_due"] = False
            out["rescore"] = {"checked": r["checked"], "rescored": r["rescored"], "stats_version": r["stats_version"]}
    emit(out, as_json, _ingest_text)
    if out["rejected"] or out["quarantined"]:
        raise typer.Exit(REJECTED_EXIT)


@app.command()
def optimize(
    collection: str,
    force: Annotated[bool, typer.Option("--force", help="Build even where the policy would wait.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Build the embedded store's HNSW index: large collections are then searched through it
    (`ingest` and `rescore --watch` do this by themselves when it is due; a running `serve` does
    not, since the build holds its process for minutes at 1M: call this, or POST
    /collections/NAME/optimize, at a quiet time; `stats` says when it is due).

    Example: inforank optimize photos
    """
    with backend() as b:
        emit(b.optimize(collection, force=force), as_json, _optimize_text)


@app.command("index-field")
def index_field(
    collection: str,
    field: Annotated[str | None, typer.Argument(help="A metadata field (a Qdrant JSON path, e.g. tags[]).")] = None,
    type: Annotated[str, typer.Option("--type", help="keyword, integer, float, bool, datetime or uuid.")] = "keyword",
    drop: Annotated[bool, typer.Option("--drop", help="Remove the field's index instead.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Index a metadata field you filter on (without FIELD: list the indexed fields).

    Qdrant then plans filters on the field from the index: a selective filter reads only its
    matching points, and an HNSW index built afterwards links the points of each value, so a
    filtered search stays on the graph (a filter 1 % pass, at 60k vectors: 57–65 ms without an
    index, about 1–2 ms with). On the embedded store, index fields before `optimize` builds the
    graph (50k vectors and up), or at once with `inforank create --index-field FIELD[:TYPE]`.

    Example: inforank index-field photos year --type integer
    """
    with backend() as b:
        if field is None:
            emit({"collection": collection, "field_indexes": b.field_indexes(collection)}, as_json, _indexes_text)
        elif drop:
            emit(b.drop_field_index(collection, field), as_json, _dropped_text)
        else:
            emit(b.index_field(collection, field, type=type), as_json, _indexed_text)


def _indexes_text(d: dict[str, Any]) -> str:
    if not d["field_indexes"]:
        return f"{d['collection']}: no metadata field is indexed (`inforank index-field {d['collection']} FIELD`)"
    return "\n".join(
        f"{i['field']}: {i['type']}, {i['points']} points" + (", linked in every HNSW graph" if i["linked"] else "")
        for i in d["field_indexes"]
    )


def _indexed_text(d: dict[str, Any]) -> str:
    if not d["kept"]:
        return f"{d['collection']}: this store keeps no payload indexes (qdrant-client local mode): filters scan"
    what = "indexed" if d["created"] else "already indexed"
    line = f"{d['collection']}: {d['field']} {what} as {d['type']} ({d['points']} points with a value)"
    if d["graph_without_links"]:
        line += (
            "; the HNSW graph was built before this index and has no links for it: filters on the field are "
            "not walked on the graph (a narrow one is read from the index, a loose one among the nearest)"
        )
    return line


def _dropped_text(d: dict[str, Any]) -> str:
    return f"{d['collection']}: {d['field']} " + ("index dropped" if d["dropped"] else "had no index: nothing to drop")


def _optimize_text(d: dict[str, Any]) -> str:
    a = d["after"]
    if a["automatic"]:
        return f"{d['collection']}: the Qdrant server indexes by itself ({a['indexed_vectors']}/{a['vectors']} vectors)"
    what = f"built in {d['seconds']:.1f} s" if d["built"] else "not due: nothing built"
    segments = f", {a['segments']} segments" if a.get("segments") is not None else ""
    return f"{d['collection']}: {what}; {a['indexed_vectors']} of {a['vectors']} vectors in the HNSW index{segments}"


def _build_note(collection: str, st: dict[str, Any]) -> str:
    outside = st["vectors"] - st["indexed_vectors"]
    return (
        f"{collection}: building the HNSW index for {outside} of {st['vectors']} vectors "
        "(about 3 min per 200k vectors on 2 cores; the ingest goes on afterwards)"
    )


def _ingest_text(d: dict[str, Any]) -> str:
    lines = [
        f"ingested {d['ingested']}, skipped {d['skipped_duplicates']} duplicates, "
        f"rejected {len(d['rejected'])} (statistics version {d['stats_version']})"
    ]
    if d.get("replayed"):
        lines.insert(0, f"replayed {d['replayed']} points an interrupted write had left unsynced")
    lines += [f"  rejected #{r['index']} id={r['id']!r}: {r['reason']}" for r in d["rejected"][:50]]
    if d.get("rescored"):
        lines.append(f"kept the scores fresh: rewrote {d['rescored']} stored scores the new statistics moved")
    if d.get("rescore_due"):
        lines.append(
            "stored scores have moved outside their tolerance: run "
            f"`inforank rescore {d['collection']}` (a service rescores in the background by itself)"
        )
    lines += [_optimize_text(b) for b in d.get("index_builds", [])]
    lines += [f"  quarantined id={r['id']!r}: {r['reason']}" for r in d.get("quarantined", [])[:50]]
    if d.get("quarantined"):
        lines.append("  quarantined items are stored but not searchable: delete them or ingest them again, corrected")
    return "\n".join(lines)


def parse_ids(ids: str) -> list[str | int]:
    """Comma-separated ids; integers are taken as integers."""
    return [int(x) if x.strip().lstrip("-").isdigit() else x.strip() for x in ids.split(",") if x.strip()]


@app.command()
def delete(
    collection: str,
    ids: Annotated[str, typer.Option(help="Comma-separated ids (integers are taken as integers).")],
    as_json: JsonOpt = False,
) -> None:
    """Delete items and their statistics contribution (through INFORANK_URL when set).

    Example: inforank delete photos --ids a,b
    """
    with backend() as b:
        out = b.delete(collection, parse_ids(ids))
    emit(out, as_json, delete_text)
    if out["missing"]:  # like rejected items: the command did not do all it was asked
        raise typer.Exit(REJECTED_EXIT)


def delete_text(d: dict[str, Any]) -> str:
    replayed = f" (first replayed {d['replayed']} unsynced points)" if d.get("replayed") else ""
    return f"deleted {len(d['deleted'])}, not found {d['missing']}{replayed}"


@app.command()
def rescore(
    collection: Annotated[str | None, typer.Argument(help="Collection; with --watch, all when omitted.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Check every score even if all bounds hold.")] = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Keep running: rescore whenever the automatic policy says one is due.")
    ] = False,
    interval: Annotated[float, typer.Option(help="Seconds between checks with --watch.")] = 10.0,
    as_json: JsonOpt = False,
) -> None:
    """Bring stored scores back within tolerance of the current statistics; resumable.

    Writes keep scores fresh by themselves in small collections, and `inforank ingest` before it
    returns; beside writers sharing PostgreSQL and a Qdrant server (services, ingest processes),
    run this with --watch. Only scores that moved are rewritten, as payload updates.

    Example: inforank rescore photos    |    inforank rescore --watch
    """
    if watch:
        _watch(collection, interval, as_json)
        return
    if collection is None:
        fail(errors.InvalidInputError("Name the collection to rescore (or use --watch for all)."))
    with backend() as b, progress(None, f"rescore {collection}") as bar:
        emit(b.rescore(collection, all=all_, progress=bar.update), as_json, rescore_text)


def _watch(collection: str | None, interval: float, as_json: bool) -> None:
    import time

    with engines("rescore --watch") as ix:
        typer.echo(f"watching {collection or 'every collection'} every {interval:g} s (Ctrl-C stops)", err=True)
        try:
            while True:
                names = [collection] if collection else [c.name for c in ix.collections()]
                for name in names:
                    if ix.rescore_due(name):
                        rep = ix.rescore(name)
                        emit({"collection": name, **rep.__dict__}, as_json, rescore_text)
                    if ix.index_state(name)["optimize_due"]:
                        emit(ix.optimize(name), as_json, _optimize_text)
                time.sleep(interval)
        except KeyboardInterrupt:
            typer.echo("stopped", err=True)


def rescore_text(d: dict[str, Any]) -> str:
    head = f"{d['collection']}: " if "collection" in d else ""
    if d["skipped"]:
        done = "skipped: every stored score is within tolerance"
    else:
        done = f"checked {d['checked']}, rewrote {d['rescored']} that moved (statistics version {d['stats_version']})"
    replayed = f"; replayed {d['replayed']} points an interrupted write had left unsynced" if d.get("replayed") else ""
    hub = d.get("hubness")
    hub_line = (
        f"hubness: followed {hub['followed']} changes, recomputed {hub['recomputed']} biases"
        + (f", bound {max(hub['bound'].values()):.4f}" if hub.get("bound") else "")
        + "\n"
        if hub and hub.get("followed")
        else ""
    )
    return head + done + replayed + "\n" + hub_line + freshness_text(d["freshness"])


def freshness_text(fresh: dict[str, Any]) -> str:
    lines = []
    for m, f in fresh.items():
        if f.get("bound") is None:
            continue
        b, t = f["bound"], f["tolerance"]
        state = "outside tolerance" if f["outside_tolerance"] else "within tolerance"
        lines.append(
            f"  {m:5s} {state}: conformity ±{b['conformity']:.1e} (tolerance {t['conformity']:.0e}), "
            f"information gain ±{b['info_gain']:.1e} (tolerance {t['info_gain']:.1e})"
        )
    return "\n".join(lines)


@app.command()
def attach(
    qdrant_collection: str,
    name: Annotated[str | None, typer.Option(help="inforank name (default: the Qdrant collection's).")] = None,
    image_vector: Annotated[str | None, typer.Option(help="Name of the image vector.")] = None,
    text_vector: Annotated[str | None, typer.Option(help="Name of the text vector.")] = None,
    modality: Annotated[str | None, typer.Option(help="Modality of an unnamed vector: image or text.")] = None,
    model: Annotated[str, typer.Option(help="Model that produced the vectors.")] = "external",
    pretrained: Annotated[str, typer.Option(help="Its pretrained tag.")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Adopt an existing Qdrant collection of CLIP vectors: statistics, scores, indexes — no re-embedding.

    Example: INFORANK_QDRANT_URL=http://qdrant:6333 inforank attach products --image-vector clip
    """
    from indexer.attach import attach as attach_lib

    with engines("attach") as ix, progress(None, f"attach {qdrant_collection}") as bar:
        rep = attach_lib(
            ix,
            qdrant_collection,
            name=name,
            image_vector=image_vector,
            text_vector=text_vector,
            modality=modality,
            model=model,
            pretrained=pretrained,
            progress=bar.update,
        )
        out = {
            "collection": name or qdrant_collection,
            "scored": len(rep.ingested),
            "unchanged": len(rep.unchanged),
            "rejected": [r.as_dict() for r in rep.rejected],
            "stats_version": rep.stats_version,
        }
        emit(out, as_json, lambda d: f"attached {d['collection']}: scored {d['scored']}, rejected {len(d['rejected'])}")
        if rep.rejected:
            raise typer.Exit(REJECTED_EXIT)


@app.command()
def validate(
    collection: str,
    sample: Annotated[int, typer.Option(help="Items per modality scored exactly.")] = 1000,
    as_json: JsonOpt = False,
) -> None:
    """Exact information gain on a sample vs the stored fast scores (R²), conformity vs its definition.

    Example: inforank validate photos --sample 500
    """
    from indexer.validate import validate as validate_lib

    with engines("validate") as ix:
        emit(validate_lib(ix, collection, sample=sample), as_json, _validate_text)


def _validate_text(d: dict[str, Any]) -> str:
    lines = [f"{d['collection']}: {d['verdict']}"]
    for m, v in d["modalities"].items():
        stored = v.get("r2_exact_vs_stored")
        ig = (
            f"R²(exact, estimate)={v['r2_exact_vs_fresh_estimate']:.4f} "
            f"R²(exact, stored)={'n/a' if stored is None else f'{stored:.4f}'} "
            if "r2_exact_vs_fresh_estimate" in v
            else "information gain n/a (one modality) "
        )
        lines.append(
            f"  {m:5s} {ig}conformity max error={v['conformity_max_abs_error_fresh']:.2e} "
            f"(stored {v['conformity_max_abs_error_stored']:.2e})"
        )
    return "\n".join(lines)


@app.command()
def sync(collection: str, as_json: JsonOpt = False) -> None:
    """Replay points an interrupted run left unsynced to Qdrant, and list points Qdrant refused
    (quarantined). Example: inforank sync photos"""
    with backend() as b:
        emit(b.sync(collection), as_json, sync_text)


def sync_text(d: dict[str, Any]) -> str:
    q = d["quarantined"]
    lines = [f"pushed {d['pushed']} points; {q['count']} quarantined"]
    lines += [f"  quarantined id={r['id']!r}: {r['reason']}" for r in q["items"]]
    if q["count"]:
        lines.append("  delete them (inforank delete) or ingest them again with corrected data")
    return "\n".join(lines)


@app.command()
def drop(
    collection: str,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete a collection and its Qdrant points. Example: inforank drop photos --yes"""
    if not yes:
        typer.confirm(f"Drop collection {collection} and all its points?", abort=True)
    with backend() as b:
        emit(b.drop(collection), as_json, lambda d: f"dropped {d['dropped']}")
