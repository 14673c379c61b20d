import subprocess
import sys

import indexer
import retrieval


def test_public_surfaces_are_sorted_and_importable():
    for mod in (indexer, retrieval):
        assert mod.__all__ == sorted(mod.__all__)
    for name in indexer.__all__:
        assert getattr(indexer, name) is not None


def test_querying_with_vectors_needs_no_torch():
    code = (
        "import sys; import retrieval.client, retrieval.search, indexer; "
        "assert 'torch' not in sys.modules and 'open_clip' not in sys.modules, 'torch imported'"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_dependencies_point_one_way():
    """indexer never imports retrieval."""
    from pathlib import Path

    root = Path(indexer.__file__).parent
    offenders = []
    for p in root.rglob("*.py"):
        for line in p.read_text().splitlines():
            s = line.strip()
            if s.startswith(("import retrieval", "from retrieval")):
                offenders.append(p)
    assert offenders == []


def test_the_client_loads_only_httpx_and_numpy():
    """A backend that queries over HTTP must not pay for SQLAlchemy, Alembic, scipy, Qdrant or torch."""
    heavy = ("sqlalchemy", "alembic", "scipy", "qdrant_client", "qdrant_edge", "torch", "fastapi", "matplotlib")
    code = (
        "import sys; from retrieval.client import Client, AsyncClient; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_search_options_are_defined_once():
    """The service's request body, the CLI's parameters and the client's keywords are derived
    from SearchOptions: the same names, defaults and help text, so a rename cannot break one door."""
    import dataclasses

    import typer.main

    from retrieval.cli import app
    from retrieval.options import SearchOptions
    from retrieval.service import SearchIn

    fields = {f.name: f for f in dataclasses.fields(SearchOptions)}
    body = SearchIn.model_fields
    assert set(body) == set(fields) | {"vector"}
    for name, f in fields.items():
        assert body[name].default == f.default and body[name].description == f.metadata["help"]
    cmd = typer.main.get_command(app).commands["search"]  # type: ignore[attr-defined]
    params = {p.name: p for p in cmd.params}
    assert set(fields) <= set(params)
    for name, f in fields.items():
        assert params[name].help == f.metadata["help"]
        default = params[name].default
        assert getattr(default, "value", default) == f.default, name


def test_the_client_refuses_an_unknown_option_before_sending():
    import httpx
    import numpy as np
    import pytest

    from indexer.errors import InvalidQueryError
    from retrieval.client import Client

    sent = []
    transport = httpx.MockTransport(lambda r: sent.append(r) or httpx.Response(500))
    with Client("http://x", transport=transport) as c, pytest.raises(InvalidQueryError, match="exclude_bottom"):
        c.search("c", np.ones(4), exclude_bottom_pct=5)  # misspelt
    assert sent == []


def test_async_client_has_every_method_of_the_client():
    import inspect

    from retrieval.client import AsyncClient, Client

    def public(cls: type) -> dict[str, inspect.Signature]:
        return {n: inspect.signature(f) for n, f in vars(cls).items() if not n.startswith("_") and callable(f)}

    sync, asyn = public(Client), public(AsyncClient)
    assert set(sync) == set(asyn)
    for name in sync:
        assert inspect.iscoroutinefunction(vars(AsyncClient)[name]), name
        assert list(sync[name].parameters) == list(asyn[name].parameters), name


def test_the_readme_documents_every_payload_field():
    from pathlib import Path

    from indexer import schema

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## Payload fields", 1)[1].split("\n## ", 1)[0]
    for f, spec in schema.FIELDS.items():
        assert f"| `{{m}}_{f}` | {spec.type}" in section, f
    assert f"`{schema.ID}`" in section
