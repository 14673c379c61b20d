"""What every command shares: the Typer app, the backend chosen once from the environment,
output (text or ``--json``), progress bars, and the one place errors become exit codes."""

from __future__ import annotations

import dataclasses
import enum
import functools
import gc
import inspect
import json
import sys
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from indexer import errors

if TYPE_CHECKING:
    from tqdm import tqdm

    from indexer.api import Indexer
    from retrieval.backend import LocalBackend, RemoteBackend

EXIT = {
    errors.InvalidInputError: 2,
    errors.NotFoundError: 3,
    errors.ConflictError: 4,
    errors.UnauthorizedError: 2,
    errors.ModelUnavailableError: 5,
    errors.StorageError: 6,
}
#: the command did not do all it was asked (items rejected or quarantined, ids not found)
REJECTED_EXIT = 1

app = typer.Typer(
    help="inforank: geometry scores (conformity, information gain) for multimodal retrieval "
    "on Qdrant. Embedded by default (./data); set INFORANK_QDRANT_URL and "
    "INFORANK_DATABASE_URL for a Qdrant server and PostgreSQL, or INFORANK_URL to run the "
    "commands against an `inforank serve`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def fail(exc: errors.InforankError) -> NoReturn:
    code = next((c for k, c in EXIT.items() if isinstance(exc, k)), 1)
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code)


#: allocations of containers (net of those freed) between two young-generation collections
#: while a command runs; CPython's default is 700
YOUNG_GC_THRESHOLD = 10_000


@contextmanager
def settled_heap() -> Iterator[None]:
    """The garbage collector's policy while a command runs, given back after.

    A write batch makes tens of thousands of short-lived containers (row dicts, payloads,
    vector lists) that reference counting frees. With CPython's default threshold (700) the
    collector ran ≈ 40 young passes per batch, and every few batches a full pass over the
    ≈ 100k objects start-up left: 13 % of a bulk ingest (BENCHMARKS.md, "Ingest"). Here what
    is alive when the command starts (modules, engines, a loaded model) is frozen out of full
    passes, and a young pass waits for 10,000 net allocations: a batch's garbage is freed by
    reference counting before a pass could visit it. Cycles are still collected, just less
    often. A process-wide policy, so it is set at the edge (the service freezes again once it
    has warmed up), never inside the library."""
    old = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(old[0], YOUNG_GC_THRESHOLD), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()


@contextmanager
def handled() -> Iterator[None]:
    """Library errors inside the block become a one-line message and the exit code."""
    try:
        yield
    except errors.InforankError as exc:
        fail(exc)


@contextmanager
def backend() -> Iterator[LocalBackend | RemoteBackend]:
    """The backend for this process's environment: the service at INFORANK_URL, else the
    configured (or embedded) engines. Errors become exit codes."""
    from indexer.settings import Settings
    from retrieval.backend import open_backend

    with handled():
        s = Settings()
        # remote: nothing local is opened (or created)
        chosen = (
            open_backend(url=s.url, api_key=s.api_key)
            if s.url
            else open_backend(url=None, database_url=s.db_url(), qdrant=s.qdrant())
        )
        with chosen as b, settled_heap():
            yield b


@contextmanager
def engines(command: str) -> Iterator[Indexer]:
    """The engines themselves, for the commands that have no remote mode."""
    from indexer.api import Indexer
    from indexer.settings import Settings

    with handled():
        s = Settings()
        if s.url and not (s.database_url or s.qdrant_url):
            raise errors.InvalidInputError(
                f"INFORANK_URL points this CLI at the service {s.url}, and `inforank {command}` has no "
                "remote mode: it runs on the engines themselves. Set INFORANK_DATABASE_URL and "
                "INFORANK_QDRANT_URL to the service's engines, or unset INFORANK_URL to use the "
                "embedded store here."
            )
        ix = Indexer(s.db_url(), s.qdrant())
        try:
            with settled_heap():
                yield ix
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
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="item", file=sys.stderr, disable=None, smoothing=0.1)


def with_options(cls: type, into: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Adds one command-line option per field of the dataclass ``cls`` (name, type, default and
    the help text of its metadata) and hands the command an instance as ``into``: the CLI's
    options are derived from the library's definition, never written out a second time.
    ``Literal`` fields become choices, ``dict`` fields take JSON, ``bool`` fields ``--x/--no-x``."""
    hints = typing.get_type_hints(cls)
    derived = [_option(f, hints[f.name]) for f in dataclasses.fields(cls)]

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        own = [p for p in inspect.signature(fn, eval_str=True).parameters.values() if p.name != into]
        names = {f.name for f in dataclasses.fields(cls)}

        @functools.wraps(fn)
        def command(**kw: Any) -> Any:
            given = {k: (v.value if isinstance(v := kw.pop(k), enum.Enum) else v) for k in list(kw) if k in names}
            for f in dataclasses.fields(cls):
                if _is_dict(hints[f.name]) and given.get(f.name) is not None:
                    try:
                        given[f.name] = json.loads(given[f.name])
                    except json.JSONDecodeError as exc:
                        fail(errors.InvalidQueryError(f"--{f.name.replace('_', '-')} is not valid JSON: {exc.msg}."))
            return fn(**kw, **{into: cls(**given)})

        params = own + derived
        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return wrap


def _is_dict(hint: Any) -> bool:
    return any(a is dict or typing.get_origin(a) is dict for a in (hint, *typing.get_args(hint)))


def _option(f: dataclasses.Field[Any], hint: Any) -> inspect.Parameter:
    flag = f.name.replace("_", "-")
    names = tuple(f.metadata.get("cli", (f"--{flag}",)))
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = type(None) in typing.get_args(hint)
    base = args[0] if optional and len(args) == 1 else hint
    extra: dict[str, Any] = {}
    typ: Any = hint
    default = f.default
    if typing.get_origin(base) is typing.Literal:  # choices: Typer takes them as an Enum
        choices = enum.Enum(f.name, {str(v): str(v) for v in typing.get_args(base)}, type=str)  # type: ignore[misc]
        typ = (choices | None) if optional else choices
        default = default if default is None else choices(default)
    elif _is_dict(hint):
        typ = str | None
    elif base is bool:
        names = (f"--{flag}/--no-{flag}",)
    option = typer.Option(*names, help=f.metadata.get("help", ""), **extra)
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[typ, option])
