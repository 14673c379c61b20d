"""The benchmarks stay runnable (a bench that no longer imports reports nothing), and the
storage decision's premises hold on this build: Qdrant Edge hands back the exact float32 values
inforank logged, and the vector column is what the log adds to the database's bytes."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import bench


@pytest.mark.parametrize("name", sorted(m.name for m in pkgutil.iter_modules(bench.__path__)))
def test_every_benchmark_imports(name: str):
    importlib.import_module(f"bench.{name}")


def test_the_storage_benchmark_on_a_small_collection():
    from bench import storage

    out = storage.run(n=3000, repeat=1)
    assert out["read_back"]["rows"] == 3000
    assert out["read_back"]["edge_vectors_not_bit_identical"] == 0
    # the log adds the float32 vector (2,048 bytes at d = 512) per vector; at this size SQLite's
    # 16 KiB pages are partly empty either way, so allow a quarter of it (100k: 2,199 bytes)
    assert out["db_bytes_per_vector_with_log"] - out["db_bytes_per_vector_without"] >= 0.75 * 2048


def test_the_slope_benchmark_fills_both_collections_alike():
    from bench import ingest_slope

    out = ingest_slope.run(n=3000, chunk=1000, ids="uuid")
    for kind in ("shipped", ingest_slope.BEFORE):
        assert len(out[kind]["pairs_per_s"]) == 3 and out[kind]["seconds"] > 0


def test_the_overlap_prototype_loses_no_point():
    """The overlapped write's push (no lock while Edge works, a revision-conditioned mark-clean)
    leaves every point clean and in Edge; the run raises otherwise."""
    from bench import overlap

    out = overlap.run(n=3000, repeat=1)
    assert out["overlapped_over_floor"] > 0 and len(out["runs_s"]["overlapped"]) == 1


def test_the_mixed_variants_benchmark_agrees_with_evaluate():
    """The numpy benchmark behind the mixed-list figures scores the shipped list as ``evaluate``
    does on the same pairs (BENCHMARKS: 1.01 / 0.87 of the ceiling; 41 % of the image queries'
    own-modality firsts in the pair's top 10)."""
    from bench import mixed_variants

    out = mixed_variants.run(folds=2)
    shipped = out["combine"]["sum (shipped)"]
    assert shipped["text_to_image"]["r@1_of_ceiling"] == pytest.approx(255 / 253)  # 0.510 / 0.506
    assert shipped["image_to_text"]["r@1_of_ceiling"] == pytest.approx(241 / 276)  # 0.482 / 0.552
    first = out["own_first"]["image_to_text"]
    assert first["in_pairs_top_10"] == pytest.approx(0.4125)
    assert first["in_pairs_top_10"] <= first["in_pairs_top_25"] <= first["in_pairs_top_50"] <= 1
