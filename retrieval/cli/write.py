"""``inforank`` write-side commands: a thin layer over :class:`indexer.api.Indexer`.

Each command builds the library object from the environment (the edge), makes one call and
prints the result; library errors become messages and exit codes in :func:`run` alone.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from tqdm import tqdm

from indexer import errors
from indexer.api import Indexer
from indexer.settings import Settings

T = TypeVar("T")
EXIT = {
    errors.InvalidInputError: 2,
    errors.NotFoundError: 3,
    errors.ConflictError: 4,
    errors.UnauthorizedError: 2,
    errors.ModelUnavailableError: 5,
    errors.StorageError: 6,
}
REJECTED_EXIT = 1

app = typer.Typer(
    help="inforank: geometry scores (conformity, information gain) for multimodal retrieval "
    "on Qdrant. Embedded by default (./data); set INFORANK_QDRANT_URL and "
    "INFORANK_DATABASE_URL for a Qdrant server and PostgreSQL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def fail(exc: errors.InforankError) -> NoReturn:
    code = next((c for k, c in EXIT.items() if isinstance(exc, k)), 1)
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code)


@contextmanager
def opened() -> Iterator[Indexer]:
    """The library object for this process's environment; errors become exit codes."""
    try:
        s = Settings()
        if s.url and not (s.database_url or s.qdrant_url):
            raise errors.InvalidInputError(
                f"INFORANK_URL points this CLI at the service {s.url}, and this command has no remote "
                "mode: it runs on the engines themselves. Set INFORANK_DATABASE_URL and "
                "INFORANK_QDRANT_URL to the service's engines, or unset INFORANK_URL to use the "
                "embedded store here."
            )
        ix = Indexer(s.db_url(), s.qdrant())
    except errors.InforankError as exc:
        fail(exc)
    try:
        yield ix
    except errors.InforankError as exc:
        fail(exc)
    finally:
        ix.close()


def emit(data: Any, as_json: bool, text: Callable[[Any], str]) -> None:
    typer.echo(json.dumps(data, indent=2, default=_json_default) if as_json else text(data))


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "as_dict"):
        return o.as_dict()
    return str(o)


def progress(total: int | None, desc: str) -> tqdm:
    return tqdm(total=total, desc=desc, unit="item", file=sys.stderr, disable=None, smoothing=0.1)


@app.command()
def create(
    name: str,
    dim: Annotated[int | None, typer.Option(help="Vector dimension (taken from the model if omitted).")] = None,
    model: Annotated[str, typer.Option(help="open_clip model name, or 'external' for your own vectors.")] = "external",
    pretrained: Annotated[str, typer.Option(help="open_clip pretrained tag or checkpoint path.")] = "",
    min_count: Annotated[
        int, typer.Option(help="Items of the other modality before information gain is computed.")
    ] = 32,
    as_json: JsonOpt = False,
) -> None:
    """Create a collection. Example: inforank create photos --dim 512"""
    if dim is None:
        if model == "external":
            fail(errors.InvalidInputError("Give --dim for a collection of external vectors."))
        from indexer.encoders import ClipEncoder

        try:
            dim = ClipEncoder.load(model, pretrained).dim
        except errors.InforankError as exc:
            fail(exc)
    spec: dict[str, Any] = {"dim": dim, "model": model, "pretrained": pretrained, "min_count": min_count}
    if (run_remote := remote("create")) is not None:
        run_remote(name, spec, as_json)
        return
    with opened() as ix:
        emit(ix.create_collection(name, **spec).__dict__, as_json, created_text)


def created_text(d: dict[str, Any]) -> str:
    model = d["model"] if d["model"] == "external" else f"{d['model']}:{d['pretrained']}"
    return f"created {d['name']} (dim {d['dim']}, model {model})"


@app.command("collections")
def list_collections(as_json: JsonOpt = False) -> None:
    """List collections. Example: inforank collections --json"""
    if (run_remote := remote("collections")) is not None:
        run_remote(as_json)
        return
    with opened() as ix:
        emit([c.__dict__ for c in ix.collections()], as_json, collections_text)


def collections_text(rs: list[dict[str, Any]]) -> str:
    lines = [f"{r['name']}\tdim={r['dim']}\tmodel={r['model']}\tversion={r['stats_version']}" for r in rs]
    return "\n".join(lines) or "no collections"


#: Remote mode (INFORANK_URL set): ``retrieval.cli`` registers the HTTP versions of the write
#: commands here, so this module never imports the read side.
REMOTE: dict[str, Callable[..., None]] = {}


def remote(command: str) -> Callable[..., None] | None:
    """The remote version of ``command`` bound to INFORANK_URL, or None to run locally."""
    url = Settings().url
    if not url or command not in REMOTE:
        return None
    return functools.partial(REMOTE[command], url)


@dataclass(frozen=True)
class IngestArgs:
    collection: str
    vectors: Path | None
    modality: str | None
    ids: Path | None
    texts: Path | None
    images: Path | None
    batch_size: int
    as_json: bool


def item_reads(a: IngestArgs, model: str, pretrained: str) -> tuple[Any, int | None]:
    """What ``inforank ingest`` reads, as items and rejections, and how many if known."""
    from indexer import sources

    if a.vectors is not None:
        if a.modality not in ("image", "text"):
            fail(errors.InvalidInputError("--vectors needs --modality image or --modality text."))
        return sources.vector_items(a.vectors, a.modality, a.ids), None
    if model == "external":
        fail(
            errors.InvalidInputError(
                f"Collection {a.collection!r} holds external vectors: encode texts/images yourself "
                "and use --vectors, or create a collection with --model and --pretrained."
            )
        )
    from indexer.encoders import ClipEncoder

    enc = ClipEncoder.load(model, pretrained)
    if a.texts is not None:
        return sources.text_items(a.texts, enc), None
    assert a.images is not None
    return sources.image_items(a.images, enc), sources.count_images(a.images)


def ingest_summary(
    a: IngestArgs,
    ingested: int,
    unchanged: int,
    rejected: list[Any],
    version: int,
    quarantined: list[Any] | None = None,
    replayed: int = 0,
) -> None:
    out = {
        "collection": a.collection,
        "ingested": ingested,
        "skipped_duplicates": unchanged,
        "rejected": rejected,
        "quarantined": quarantined or [],
        "replayed": replayed,
        "stats_version": version,
    }
    emit(out, a.as_json, _ingest_text)
    if rejected or quarantined:
        raise typer.Exit(REJECTED_EXIT)


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
    as_json: JsonOpt = False,
) -> None:
    """Add items; re-ingesting the same content changes nothing. With INFORANK_URL set, items go
    to that `inforank serve` (texts and images are encoded here, with the collection's model).

    Example: inforank ingest photos --vectors emb.npz --modality image
    """
    if sum(x is not None for x in (vectors, texts, images)) != 1:
        fail(errors.InvalidInputError("Give exactly one of --vectors, --texts or --images."))
    a = IngestArgs(collection, vectors, modality, ids, texts, images, batch_size, as_json)
    if (run_remote := remote("ingest")) is not None:
        run_remote(a)
        return
    with opened() as ix:
        c = ix.collection(collection)
        reads, total = item_reads(a, c.model, c.pretrained)
        with progress(total, f"ingest {collection}") as bar:
            rep = ix.add(collection, reads, batch_size=batch_size, progress=bar.update)
        ingest_summary(
            a,
            len(rep.ingested),
            len(rep.unchanged),
            [r.as_dict() for r in rep.rejected],
            rep.stats_version,
            [{"id": r.id, "reason": r.reason} for r in rep.quarantined],
            rep.replayed,
        )


def _ingest_text(d: dict[str, Any]) -> str:
    lines = [
        f"ingested {d['ingested']}, skipped {d['skipped_duplicates']} duplicates, "
        f"rejected {len(d['rejected'])} (statistics version {d['stats_version']})"
    ]
    if d.get("replayed"):
        lines.insert(0, f"replayed {d['replayed']} points an interrupted write had left unsynced")
    lines += [f"  rejected #{r['index']} id={r['id']!r}: {r['reason']}" for r in d["rejected"][:50]]
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
    parsed = parse_ids(ids)
    if (run_remote := remote("delete")) is not None:
        run_remote(collection, parsed, as_json)
        return
    with opened() as ix:
        out = ix.delete(collection, parsed)
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

    Writes keep scores fresh by themselves in small collections; in large ones (and for the
    embedded store, where only one process may write) run this with --watch beside ingestion.
    Only scores that moved are rewritten, as payload updates.

    Example: inforank rescore photos    |    inforank rescore --watch
    """
    if watch:
        _watch(collection, interval, as_json)
        return
    if collection is None:
        fail(errors.InvalidInputError("Name the collection to rescore (or use --watch for all)."))
    if (run_remote := remote("rescore")) is not None:
        run_remote(collection, all_, as_json)
        return
    with opened() as ix, progress(None, f"rescore {collection}") as bar:
        rep = ix.rescore(collection, all=all_, progress=bar.update)
        emit(rep.__dict__, as_json, rescore_text)


def _watch(collection: str | None, interval: float, as_json: bool) -> None:
    import time

    with opened() as ix:
        typer.echo(f"watching {collection or 'every collection'} every {interval:g} s (Ctrl-C stops)", err=True)
        try:
            while True:
                names = [collection] if collection else [c.name for c in ix.collections()]
                for name in names:
                    if ix.rescore_due(name):
                        rep = ix.rescore(name)
                        emit({"collection": name, **rep.__dict__}, as_json, rescore_text)
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
    return head + done + replayed + "\n" + freshness_text(d["freshness"])


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

    with opened() as ix, progress(None, f"attach {qdrant_collection}") as bar:
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

    with opened() as ix:
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
    with opened() as ix:
        out = {"collection": collection, "pushed": ix.sync(collection), "quarantined": ix.quarantined(collection)}
        emit(out, as_json, sync_text)


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
    if (run_remote := remote("drop")) is not None:
        run_remote(collection, as_json)
        return
    with opened() as ix:
        ix.drop_collection(collection)
        emit({"dropped": collection}, as_json, lambda d: f"dropped {d['dropped']}")
