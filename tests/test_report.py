"""The HTML report, rendered by a real headless Chromium: the page loads and its plots load."""

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from indexer.api import Indexer
from indexer.items import Item
from retrieval.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--allow-file-access-from-files",
]


@pytest.fixture
def report(indexer: Indexer, coco, tmp_path: Path) -> Path:
    img, txt = coco
    indexer.create_collection("r", dim=512)
    indexer.add(
        "r", [Item({"image": img[i], "text": txt[i]}, id=i, sources={"text": f"caption {i}"}) for i in range(200)]
    )
    return write_report(indexer, "r", tmp_path / "rep")


def test_report_is_self_contained(report: Path):
    html = report.read_text()
    pngs = re.findall(r'src="([^"]+\.png)"', html)
    assert len(pngs) == 3 and all((report.parent / p).stat().st_size > 5000 for p in pngs)
    assert 'id="stats-version">1<' in html
    assert "least informative" in html and "caption" in html


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path):
    profile = tmp_path / "profile"
    dom = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom", report.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    loaded = re.search(r'data-images-loaded="(\d+)"', dom)
    total = re.search(r'data-images="(\d+)"', dom)
    assert loaded and total and loaded.group(1) == total.group(1) == "3", dom[-500:]
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={profile}",
            "--window-size=1200,1600",
            f"--screenshot={shot}",
            report.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.stat().st_size > 20_000  # a rendered page with plots, not a blank canvas


def test_image_thumbnails_are_copied_into_the_report(indexer: Indexer, tmp_path: Path):
    from PIL import Image

    rng = np.random.default_rng(0)
    indexer.create_collection("t", dim=8, min_count=2)
    items = []
    for i in range(6):
        p = tmp_path / f"img{i}.png"
        Image.new("RGB", (200, 120), (40 * i, 10, 200)).save(p)
        items.append(
            Item(
                {"image": rng.normal(size=8), "text": rng.normal(size=8)},
                id=i,
                metadata={"shop": "north"},
                sources={"image": str(p)},
            )
        )
    indexer.add("t", items)
    page = write_report(indexer, "t", tmp_path / "rep2")
    html = page.read_text()
    thumbs = re.findall(r'src="(thumbs/[^"]+)"', html)
    assert thumbs and all((page.parent / t).exists() for t in thumbs)
    assert "file://" not in html and "shop=north" in html


@pytest.mark.clip
def test_the_demo_shows_each_option_doing_something(tmp_path):
    """The README's main job: the percentile filter visibly removes the placeholders a
    boilerplate query finds, the scores were kept fresh during the ingest, and a calibrated mixed
    list shows both modalities where plain CLIP shows texts only."""
    pytest.importorskip("open_clip")
    from indexer.api import Indexer
    from indexer.store import QdrantLocation
    from retrieval.demo import run

    ix = Indexer(f"sqlite:///{tmp_path / 'd.sqlite'}", QdrantLocation(edge_path=str(tmp_path / "e")))
    try:
        summary = run(ix, tmp_path / "out", echo=None)
    finally:
        ix.close()
    plain = [r["id"] for r in summary["search"]["plain"]["results"]]
    filtered = [r["id"] for r in summary["search"]["filtered"]["results"]]
    assert all(i.startswith("placeholder") for i in plain)
    assert not any(i.startswith("placeholder") for i in filtered)
    assert {r["modality"] for r in summary["search"]["reranked"]["results"]} == {"image"}
    assert summary["placeholders_in_bottom"] == 10
    mixed = summary["search"]["mixed_lists"]  # plain CLIP never ranks an image above a text
    assert mixed["plain_image_share"] == 0 and 0.3 < mixed["calibrated_image_share"] < 0.95
    assert mixed["paired_in_top_5"] > 0.6
    assert (tmp_path / "out" / "index.html").exists()


def test_every_plot_has_labelled_axes(tmp_path, monkeypatch):
    import retrieval.report as rep
    from indexer.store import QdrantLocation

    figs = []
    real = rep._save
    monkeypatch.setattr(rep, "_save", lambda fig, path, title: figs.append(fig) or real(fig, path, title))
    ix = Indexer(f"sqlite:///{tmp_path / 'r.sqlite'}", QdrantLocation(edge_path=str(tmp_path / "e")))
    try:
        ix.create_collection("t", dim=8, min_count=2)
        rng = np.random.default_rng(0)
        ix.add("t", [Item({"image": rng.normal(size=8) + 1, "text": rng.normal(size=8) - 1}, id=i) for i in range(40)])
        write_report(ix, "t", tmp_path / "out")
    finally:
        ix.close()
    axes = [ax for f in figs for ax in f.axes]
    assert len(axes) == 4
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in axes), [(a.get_xlabel(), a.get_ylabel()) for a in axes]


def test_the_report_shows_the_last_evaluation(indexer: Indexer, coco, tmp_path: Path):
    from retrieval.evaluate import evaluate

    img, txt = coco
    indexer.create_collection("r", dim=512)
    indexer.add("r", [Item({"image": img[i], "text": txt[i]}, id=i) for i in range(120)])
    before = write_report(indexer, "r", tmp_path / "a").read_text()
    assert "Not evaluated yet" in before and "quality.png" not in before
    out = evaluate(
        indexer, "r", folds=3, max_queries=60, options={"plain": {}, "exclude": {"exclude_bottom_info_gain_pct": 5}}
    )
    page = write_report(indexer, "r", tmp_path / "b")
    html = page.read_text()
    assert (page.parent / "quality.png").stat().st_size > 5000
    plain = out["options"]["plain"]["text_to_image"]["r@1"]
    assert f"{plain['mean']:.3f} ± {plain['std']:.3f}" in html  # the figures evaluate returned
    assert "image to text" in html and "hubness correction text to image: <b>" in html
    first = out["mixed"]["image_to_text"]["own_modality_at_rank_1"]  # what a mixed list puts first, judged
    assert f"in the top 10 its pair finds {first['in_pairs_top_10']:.0%} of the time" in html
