"""The CLI as a user drives it: help everywhere, --json, exit codes, every input format."""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.main import get_command
from typer.testing import CliRunner

from retrieval.cli import app
from tests.conftest import ellipsoid_pairs

runner = CliRunner()
D = 16


def run(*args: str) -> tuple[int, str]:
    r = runner.invoke(app, list(args))
    return r.exit_code, r.stdout + (r.stderr or "")


def _commands(group: Any, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for name, cmd in group.commands.items():
        out.append((prefix + name, cmd))
        if hasattr(cmd, "commands"):
            out += _commands(cmd, prefix + name + " ")
    return out


def test_every_command_has_help_with_an_example():
    cmds = _commands(get_command(app))  # type: ignore[arg-type]
    assert {"ingest", "search", "stats", "attach", "rescore", "delete", "validate", "report", "serve", "demo"} <= {
        n for n, _ in cmds
    }
    for name, cmd in cmds:
        if hasattr(cmd, "commands"):
            continue
        assert cmd.help and "Example:" in cmd.help and "inforank " in cmd.help.split("Example:")[1], name
        code, out = run(*name.split(), "--help")
        assert code == 0 and "Usage" in out


def test_vector_formats_and_json_summary(tmp_path: Path):
    img, txt = ellipsoid_pairs(40, D)
    np.savez(tmp_path / "img.npz", vectors=img, ids=np.array([f"x{i}" for i in range(40)]))
    np.save(tmp_path / "txt.npy", txt[:20])
    (tmp_path / "ids.txt").write_text("\n".join(f"x{i}" for i in range(20)))
    pq.write_table(
        pa.table(
            {"id": [f"x{i}" for i in range(20, 40)], "vector": [t.tolist() for t in txt[20:]], "lang": ["en"] * 20}
        ),
        tmp_path / "txt.parquet",
    )
    lines = [
        json.dumps({"id": "j1", "vector": img[0].tolist(), "metadata": {"k": 1}}),
        "{broken",
        json.dumps({"id": "j2"}),
    ]
    (tmp_path / "more.jsonl").write_text("\n".join(lines))
    assert run("create", "c", "--dim", str(D), "--min-count", "4")[0] == 0
    code, out = run("ingest", "c", "--vectors", str(tmp_path / "img.npz"), "--modality", "image", "--json")
    assert code == 0 and json.loads(out)["ingested"] == 40
    code, out = run(
        "ingest",
        "c",
        "--vectors",
        str(tmp_path / "txt.npy"),
        "--modality",
        "text",
        "--ids",
        str(tmp_path / "ids.txt"),
        "--json",
    )
    assert code == 0 and json.loads(out)["ingested"] == 20
    code, out = run("ingest", "c", "--vectors", str(tmp_path / "txt.parquet"), "--modality", "text", "--json")
    assert code == 0 and json.loads(out)["ingested"] == 20
    code, out = run("ingest", "c", "--vectors", str(tmp_path / "more.jsonl"), "--modality", "image", "--json")
    summary = json.loads(out)
    assert code == 1 and summary["ingested"] == 1
    assert [r["reason"] for r in summary["rejected"]] == [
        "line 2: malformed JSON (Expecting property name enclosed in double quotes)",
        "line 3: no 'vector' field",
    ]
    code, out = run("ingest", "c", "--vectors", str(tmp_path / "img.npz"), "--modality", "image", "--json")
    assert code == 0 and json.loads(out)["skipped_duplicates"] == 40
    code, out = run("stats", "c", "--json")
    st = json.loads(out)
    assert st["modalities"]["image"]["count"] == 41 and st["modalities"]["text"]["count"] == 40
    assert st["modalities"]["text"]["pending_scores"] == 0 and "gap" in st
    np.save(tmp_path / "q.npy", txt[3])
    code, out = run(
        "search",
        "c",
        "--vector",
        str(tmp_path / "q.npy"),
        "--k",
        "3",
        "--json",
        "--filter",
        '{"must": [{"key": "lang", "match": {"value": "en"}}]}',
        "--modality",
        "text",
    )
    res = json.loads(out)
    assert code == 0 and len(res["results"]) == 3 and all(r["payload"]["lang"] == "en" for r in res["results"])
    code, out = run("delete", "c", "--ids", "x1,x2,zz", "--json")
    d = json.loads(out)
    assert code == 1  # an id that was not there: the command did not do all it was asked
    assert (d["deleted"], d["missing"], d["replayed"]) == (["x1", "x2"], ["zz"], 0)
    code, out = run("validate", "c", "--sample", "20", "--json")
    assert code == 0 and set(json.loads(out)["modalities"]) == {"image", "text"}


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["ingest", "nope", "--vectors", "x.npy", "--modality", "image"], 3, "Collection 'nope' does not exist"),
        (["ingest", "c", "--vectors", "missing.npy", "--modality", "image"], 2, "missing.npy does not exist"),
        (["ingest", "c", "--vectors", "x.npy"], 2, "--vectors needs --modality"),
        (["create", "c", "--dim", "8"], 4, "already exists"),
        (["search", "c", "--vector", "q3.npy"], 2, "wrong dimension 3"),
        (["search", "c", "--text", "hi"], 2, "holds external vectors"),
        (["search", "c", "--vector", "q3.npy", "--filter", "{"], 2, "--filter is not valid JSON"),
        (["ingest", "c", "--texts", "t.txt"], 2, "holds external vectors"),
    ],
)
def test_errors_have_exit_codes_and_messages(tmp_path: Path, args, code, message):
    run("create", "c", "--dim", str(D))
    np.save("x.npy", np.ones((2, D)))
    np.save("q3.npy", np.ones(3))
    Path("t.txt").write_text("hello\n")
    got, out = run(*args)
    assert got == code and message in out


def test_a_filter_that_cannot_apply_yet_says_so(tmp_path):
    """Images only: no information gain exists yet, so a bottom-percentile exclusion removes
    nothing; the answer says it skipped it instead of silently doing nothing."""
    assert run("create", "c", "--dim", "4")[0] == 0
    np.save(tmp_path / "v.npy", np.random.default_rng(0).normal(size=(10, 4)) + 2)
    assert run("ingest", "c", "--vectors", str(tmp_path / "v.npy"), "--modality", "image")[0] == 0
    np.save(tmp_path / "q.npy", np.ones(4))
    code, out = run("search", "c", "--vector", str(tmp_path / "q.npy"), "--exclude-bottom-info-gain-pct", "5", "--json")
    skipped = json.loads(out)["applied"]["skipped"]
    assert code == 0 and "no image has an information gain yet" in skipped[0]


def test_drop_speaks_json(tmp_path):
    assert run("create", "c", "--dim", "4")[0] == 0
    code, out = run("drop", "c", "--yes", "--json")
    assert code == 0 and json.loads(out) == {"dropped": "c"}


def test_rejection_indices_are_input_positions(tmp_path):
    """Blank and unreadable lines before a bad item must not shift its index: it is the line's."""
    assert run("create", "c", "--dim", "4")[0] == 0
    f = tmp_path / "v.jsonl"
    f.write_text(
        '{"id": "a", "vector": [1, 2, 3, 4]}\n'
        "\n"
        "{not json\n"
        '{"id": "b", "vector": [1, 2, 3, 4], "metadata": {"x": NaN}}\n'
        '{"id": "c", "vector": [0, 0, 0, 0]}\n'
    )
    code, out = run("ingest", "c", "--vectors", str(f), "--modality", "image", "--json")
    got = {r["index"]: r["reason"] for r in json.loads(out)["rejected"]}
    assert code == 1 and sorted(got) == [2, 3, 4]  # 0-based line numbers of the three bad lines
    assert got[2].startswith("line 3: malformed JSON") and "finite" in got[3] and "zero vector" in got[4]
    np.save(tmp_path / "m.npy", np.array([[1.0, 2, 3, 4], [0, 0, 0, 0], [1, 1, 1, 1]]))
    code, out = run("ingest", "c", "--vectors", str(tmp_path / "m.npy"), "--modality", "image", "--json")
    assert [r["index"] for r in json.loads(out)["rejected"]] == [1]


def test_ingest_builds_the_index_a_segment_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import indexer.api
    from indexer.store.edge import EdgeStore

    monkeypatch.setattr(EdgeStore, "index_threshold_kb", 1)
    monkeypatch.setattr(EdgeStore, "segment_points", 500)
    monkeypatch.setattr(indexer.api, "INDEX_MIN_VECTORS", 1000)
    img, _ = ellipsoid_pairs(2000, D, seed=7)
    np.savez(tmp_path / "a.npz", vectors=img[:1500], ids=np.arange(1500))
    np.savez(tmp_path / "b.npz", vectors=img[1500:], ids=np.arange(1500, 2000))
    assert run("create", "c", "--dim", str(D), "--min-count", "4")[0] == 0
    a = ("ingest", "c", "--vectors", str(tmp_path / "a.npz"), "--modality", "image", "--batch-size", "250")
    code, out = run(*a, "--json")
    builds = json.loads(out)["index_builds"]
    assert code == 0 and len(builds) >= 2 and builds[-1]["after"]["indexed_vectors"] == 1500
    code, out = run("ingest", "c", "--vectors", str(tmp_path / "b.npz"), "--modality", "image", "--batch-size", "250")
    assert code == 0 and "c: built in" in out and "2000 of 2000 vectors in the HNSW index, " in out
    assert "c: building the HNSW index for 500 of 2000 vectors" in out  # said before it starts


def test_a_mixed_search_with_the_wrong_vector_modality_says_what_to_pass(tmp_path: Path):
    from tests.conftest import COCO

    feats = np.load(COCO)
    ids = np.array([f"p{i}" for i in range(500)])
    np.savez(tmp_path / "img.npz", vectors=feats[0], ids=ids)
    np.savez(tmp_path / "txt.npz", vectors=feats[1], ids=ids)
    np.save(tmp_path / "q.npy", feats[0][3])
    assert run("create", "c", "--dim", "512")[0] == 0
    for m in ("img", "txt"):
        modality = "image" if m == "img" else "text"
        assert run("ingest", "c", "--vectors", str(tmp_path / f"{m}.npz"), "--modality", modality)[0] == 0
    code, out = run("search", "c", "--vector", str(tmp_path / "q.npy"), "--modality", "all")
    assert code == 2 and "looks like image rather than text" in out and "--vector-modality image" in out
    assert "Traceback" not in out
    code, out = run(
        "search", "c", "--vector", str(tmp_path / "q.npy"), "--modality", "all", "--vector-modality", "image", "--json"
    )
    assert code == 0 and len(json.loads(out)["results"]) == 10


def test_an_ingest_runs_with_the_start_up_heap_frozen_and_gives_the_collector_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """While a command writes, what start-up left is out of the collector's full passes and a
    young pass waits for 10,000 allocations (13 % of a bulk ingest was garbage collection);
    afterwards the process's own policy is back."""
    import gc

    from indexer.api import Indexer
    from retrieval.cli.common import YOUNG_GC_THRESHOLD

    seen: list[tuple[int, tuple[int, int, int]]] = []
    real = Indexer.add

    def add(self: Indexer, *a: Any, **kw: Any) -> Any:
        seen.append((gc.get_freeze_count(), gc.get_threshold()))
        return real(self, *a, **kw)

    monkeypatch.setattr(Indexer, "add", add)
    before = (gc.get_freeze_count(), gc.get_threshold())
    img, _ = ellipsoid_pairs(20, D)
    np.save(tmp_path / "v.npy", img)
    assert run("create", "c", "--dim", str(D))[0] == 0
    assert run("ingest", "c", "--vectors", str(tmp_path / "v.npy"), "--modality", "image")[0] == 0
    ((frozen, threshold),) = seen
    assert frozen > 1000 and threshold[0] == max(before[1][0], YOUNG_GC_THRESHOLD) and threshold[1:] == before[1][1:]
    assert (gc.get_freeze_count(), gc.get_threshold()) == before
