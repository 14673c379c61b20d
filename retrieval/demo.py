"""The newcomer's demo: real CLIP embeddings of 500 COCO pairs through the whole pipeline."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from indexer.api import Indexer
from indexer.items import Item
from retrieval import align
from retrieval.search import Searcher, SearchOptions

DATA = Path(__file__).resolve().parent / "data" / "coco500_clip_vitb16.npy"
NAME = "coco-demo"
PLACEHOLDERS = 10


def run(ix: Indexer, out: Path, echo: Callable[[str], None] | None = print) -> dict[str, Any]:
    say = echo or (lambda _s: None)
    feats = np.load(DATA).astype(np.float64)
    img, txt = feats[0], feats[1]
    if any(c.name == NAME for c in ix.collections()):
        ix.drop_collection(NAME)
    ix.create_collection(NAME, dim=512, model="ViT-B-16", pretrained="openai")
    say(f"1. created collection {NAME!r} (OpenAI CLIP ViT-B/16 vectors, shipped in retrieval/data)")
    items = [Item({"image": img[i], "text": txt[i]}, id=f"coco-{i}", metadata={"source": "coco"}) for i in range(500)]
    # Synthetic placeholders, labelled as such: the same generic caption for several images,
    # as in scraped data ("image not found"). Information gain should put them at the bottom.
    generic = txt.mean(axis=0)
    rng = np.random.default_rng(0)
    for j in range(PLACEHOLDERS):
        items.append(
            Item(
                {"image": img[j] + 0.05 * rng.normal(size=512), "text": generic + 0.01 * rng.normal(size=512)},
                id=f"placeholder-{j}",
                metadata={"source": "synthetic-placeholder"},
            )
        )
    rep = ix.add(NAME, items, batch_size=128)
    say(f"2. ingested {len(rep.ingested)} items (500 real pairs + {PLACEHOLDERS} synthetic placeholders)")
    fresh = ix.freshness(NAME)
    worst = max(f["bound"]["conformity"] for f in fresh.values() if f["bound"])
    say(
        f"   scores kept fresh during the ingest: every stored conformity within {worst:.1e} of its current "
        f"value (tolerance {ix.collection(NAME).tol_conformity:g}), no manual rescore"
    )
    st = ix.stats(NAME)
    say(
        f"3. statistics: gap {st['gap']['modality_gap']:.3f}, cos(means) {st['gap']['cos_means']:.3f}, "
        f"|mean image| {st['modalities']['image']['mean_norm']:.3f}, "
        f"|mean text| {st['modalities']['text']['mean_norm']:.3f}"
    )
    s = ix.scores(NAME, "text")
    bottom = [str(i) for i in s["ids"][np.argsort(s["info_gain"])[:PLACEHOLDERS]]]
    caught = sum(b.startswith("placeholder") for b in bottom)
    say(f"4. the {PLACEHOLDERS} least informative texts include {caught}/{PLACEHOLDERS} placeholders")
    S = Searcher(ix)
    q = txt[42]
    vague = generic  # a boilerplate caption, like the placeholders' own
    plain = S.search(NAME, vague, SearchOptions(k=5, modality="text"))
    filtered = S.search(NAME, vague, SearchOptions(k=5, modality="text", exclude_bottom_info_gain_pct=5))
    images = S.search(NAME, q, SearchOptions(k=5, modality="image"))
    reranked = S.search(NAME, q, SearchOptions(k=5, modality="image", rerank_conformity=-0.25))
    mixed_plain = S.search(NAME, q, SearchOptions(k=5, modality="all", calibrate=False))
    mixed_cal = S.search(NAME, q, SearchOptions(k=5, modality="all"))
    show = lambda r: [(x.id, round(x.similarity, 3)) for x in r.results]  # noqa: E731
    gone = len({x.id for x in plain.results} - {x.id for x in filtered.results})
    say(f"5. texts for a boilerplate caption, plain search: {show(plain)}")
    say(f"   the same without the least informative 5 % ({gone} placeholders gone): {show(filtered)}")
    say(f"   images for caption coco-42, plain: {show(images)}")
    say(f"   the same, preferring distinctive images (rerank by conformity −0.25): {show(reranked)}")
    mixed = _mixed_lists(S, txt)
    say(
        f"   one mixed list of images and texts for each of {mixed['captions']} captions (the caption itself left "
        "out): images are "
        f"{mixed['plain_image_share']:.0%} of plain CLIP's top 5 and {mixed['calibrated_image_share']:.0%} of "
        f"the calibrated top 5; the paired image is in the calibrated top 5 for {mixed['paired_in_top_5']:.0%}"
    )
    amap = align.fit(ix, NAME)
    say("6. alignment: " + json.dumps({k: amap.metrics[k] for k in ("text_to_image", "mixed_top1", "reason")}))
    enc = _encoder_demo(say)
    summary = {
        "collection": NAME,
        "ingested": len(rep.ingested),
        "placeholders_in_bottom": caught,
        "stats": st,
        "alignment": amap.metrics,
        "encoder_demo": enc,
        "search": {
            "plain": plain.as_dict(),
            "filtered": filtered.as_dict(),
            "images": images.as_dict(),
            "reranked": reranked.as_dict(),
            "mixed_plain": mixed_plain.as_dict(),
            "mixed_calibrated": mixed_cal.as_dict(),
            "mixed_lists": mixed,
        },
    }
    from retrieval.report import alignment_table, write_report

    extra = {"alignment (html)": alignment_table(amap.metrics), "encoder demo": json.dumps(enc, indent=1)}
    page = write_report(ix, NAME, out, extra=extra)
    summary["report"] = str(page.resolve())
    say(f"8. report written to {page.resolve()}")
    return summary


def _encoder_demo(say: Callable[[str], None]) -> dict[str, Any]:
    """The open_clip path on generated images and texts, with a *random-initialised* model."""
    try:
        import tempfile

        from PIL import Image

        from indexer.encoders import ClipEncoder
    except ImportError:
        say("7. encoder demo skipped: install the 'clip' extra for open_clip")
        return {"skipped": "clip extra not installed"}
    enc = ClipEncoder.load("ViT-B-32", "random-init")
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for i, color in enumerate([(255, 0, 0), (0, 128, 255), (20, 200, 20)]):
            p = Path(d) / f"gen{i}.png"
            Image.new("RGB", (64, 64), color).save(p)
            paths.append(p)
        (Path(d) / "broken.png").write_bytes(b"not a png")
        vecs, bad = enc.encode_images([*paths, Path(d) / "broken.png"])
    tv = enc.encode_texts(["a red square", "a blue square", "a green square"])
    out = {
        "model": "ViT-B-32 random-init (untrained: vectors are not meaningful)",
        "images_encoded": len(paths),
        "image_dim": int(vecs.shape[1]),
        "texts_encoded": len(tv),
        "rejected": list(bad.values()),
    }
    say(f"7. encoder path (random-init open_clip ViT-B-32, labelled untrained): {out}")
    return out


def _mixed_lists(S: Searcher, txt: np.ndarray, every: int = 5) -> dict[str, Any]:
    """Mixed lists (k = 5) for every ``every``-th caption, plain and calibrated: the share of
    images in them and how often the caption's own image is there (one example can mislead: a
    vague caption's nearest items are other vague captions)."""
    shares: dict[bool, list[float]] = {False: [], True: []}
    paired = []
    for i in range(0, len(txt), every):
        own = (f"coco-{i}", "text")
        for cal in (False, True):
            res = S.search(NAME, txt[i], SearchOptions(k=6, modality="all", calibrate=cal))
            hits = [(x.id, x.modality) for x in res.results if (x.id, x.modality) != own][:5]
            shares[cal].append(sum(m == "image" for _, m in hits) / 5)
            if cal:
                paired.append((f"coco-{i}", "image") in hits)
    return {
        "captions": len(paired),
        "plain_image_share": float(np.mean(shares[False])),
        "calibrated_image_share": float(np.mean(shares[True])),
        "paired_in_top_5": float(np.mean(paired)),
    }
