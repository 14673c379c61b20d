"""One check that SQL, Qdrant and the running statistics agree exactly, shared by the tests
that feed junk, kill processes or write concurrently."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sqlalchemy import select

from indexer.api import Indexer
from indexer.db.models import PointRow, VectorRow
from indexer.moments import Moments


def same_json(a: object, b: object) -> bool:
    """Equal JSON values, floats to 1e-15 relative: Qdrant Edge's JSON parsing can round the last
    bit of a double (123456789.12345679 comes back as 123456789.1234568)."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and a == pytest.approx(b, rel=1e-15, abs=0)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def assert_consistent(ix: Indexer, name: str, *, quarantined: int = 0) -> None:
    """Nothing dirty; every live, unquarantined item is one Qdrant point whose inforank payload
    equals its database rows; the statistics equal a from-scratch computation of the stored vectors."""
    c = ix.collection(name)
    with ix.sessions() as s:
        pts = s.execute(select(PointRow).where(PointRow.collection_id == c.id)).scalars().all()
        vecs = s.execute(select(VectorRow).where(VectorRow.collection_id == c.id)).scalars().all()
        assert not [p.item_key for p in pts if p.dirty], "points left dirty"
        assert not [p.item_key for p in pts if p.deleted], "deleted points left behind"
        bad = [p for p in pts if p.quarantine]
        assert len(bad) == quarantined, [(p.user_id, p.quarantine) for p in bad]
        live = {p.point_id: p for p in pts if not p.quarantine}
        rows: dict[str, list[VectorRow]] = {}
        for v in vecs:
            rows.setdefault(v.item_key, []).append(v)
        assert ix.store.count(c.qdrant_collection) == len(live)
        got = {h.id: h for h in ix.store.retrieve(c.qdrant_collection, list(live))} if live else {}
        assert set(got) == set(live)
        for pid, p in live.items():
            pl = got[pid].payload
            assert pl["inforank_id"] == p.user_id
            meta = json.loads(json.dumps(p.meta or {}))
            assert same_json(meta, {k: pl[k] for k in meta}), (meta, pl)
            for v in rows.get(p.item_key, []):
                for f in ("conformity", "info_gain"):  # Qdrant's JSON parsing may round the last bit
                    want = getattr(v, f)
                    got_f = pl.get(f"{v.modality}_{f}")
                    assert (got_f is None and want is None) or got_f == pytest.approx(want, rel=1e-12, abs=1e-300)
                assert pl[f"{v.modality}_hash"] == v.content_hash
                hb = pl.get(f"{v.modality}_hub_bias")
                assert (hb is None and v.hub_bias is None) or hb == pytest.approx(v.hub_bias, rel=1e-12)
    for m in c.modalities:
        _, unit, norms = ix.vectors(name, m)
        _, have = ix.moments(name, m)
        want = Moments.from_batch(unit.astype(np.float64), norms) if len(unit) else Moments.empty(c.dim)
        assert have.n == want.n
        if want.n:
            assert np.max(np.abs(have.mean - want.mean)) <= 1e-9
            assert np.max(np.abs(have.m2 - want.m2)) <= 1e-9 * max(1.0, float(np.max(np.abs(want.m2))))
