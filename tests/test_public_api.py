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
