"""A self-contained HTML report with PNG plots of a collection's geometry scores."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from indexer.api import Indexer
from indexer.errors import require

matplotlib = require("matplotlib", "report", "The report's plots")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"image": "#1f77b4", "text": "#d62728"}


def write_report(ix: Indexer, name: str, out: Path, extra: dict[str, Any] | None = None) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    st = ix.stats(name)
    scores = {m: ix.scores(name, m) for m in st["modalities"]}
    figs = [_hist(scores, out), _scatter(scores, out), _projection(ix, name, out)]
    evaluation = ix.collection(name).evaluation or {}
    if evaluation.get("options"):
        figs.append(_quality(evaluation, out))
    tables = "".join(_extremes(m, s, out) for m, s in scores.items())
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>inforank report: {html.escape(name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;font-size:13px}}img{{max-width:100%}}</style></head><body>
<h1>inforank report: {html.escape(name)}</h1>
<p>Model <b>{html.escape(st["model"])}</b>, dimension {st["dim"]}, τ = {st["tau"]},
statistics version <b id="stats-version">{st["stats_version"]}</b>, Qdrant: {html.escape(st["qdrant"])}.</p>
<h2>Statistics</h2>{_stats_table(st)}
{"".join(f'<h2>{t}</h2><img src="{f}" alt="{t}">' for t, f in figs)}
{_quality_table(evaluation)}
<h2>Least and most informative items</h2>{tables}
{_extra(extra)}
<script>window.addEventListener("load", () => {{
  const ok = [...document.images].filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.imagesLoaded = ok; document.body.dataset.images = document.images.length;
}});</script>
</body></html>"""
    page = out / "index.html"
    page.write_text(body, encoding="utf-8")
    return page


def _quality(ev: dict[str, Any], out: Path) -> tuple[str, str]:
    """Recall@1 of plain search and each option, both directions, with the spread over folds."""
    labels = list(ev["options"])
    dirs = list(ev["options"][labels[0]])
    hub = ev.get("hubness_offline") or {}
    if hub:
        labels.append("hubness correction*")
    fig, ax = plt.subplots(figsize=(10, 3.8))
    width = 0.8 / len(dirs)
    for i, d in enumerate(dirs):
        cells = [ev["options"][lab][d]["r@1"] for lab in labels if lab in ev["options"]]
        if hub:
            cells.append(hub[d]["r@1"])
        x = np.arange(len(cells)) + i * width
        ax.bar(x, [c["mean"] for c in cells], width, yerr=[c["std"] for c in cells], capsize=3,
               label=d.replace("_", " "))  # fmt: skip
    ax.set_xticks(np.arange(len(labels)) + width * (len(dirs) - 1) / 2, labels, rotation=15, ha="right", fontsize=8)
    ax.set_ylabel("recall@1 (mean ± spread over folds)")
    ax.legend()
    return _save(fig, out / "quality.png", "Retrieval quality by option (inforank evaluate)")


def _quality_table(ev: dict[str, Any]) -> str:
    if not ev.get("options"):
        return "<h2>Retrieval quality</h2><p>Not evaluated yet: run <code>inforank evaluate NAME</code>.</p>"
    rows = []
    for label, by_dir in ev["options"].items():
        for d, f in by_dir.items():
            cells = "".join(
                f"<td>{f[k]['mean']:.3f} ± {f[k]['std']:.3f}</td>" for k in ("r@1", "r@5", "r@10", "mrr@10")
            )
            rows.append(f"<tr><td>{html.escape(label)}</td><td>{d.replace('_', ' ')}</td>{cells}</tr>")
    for d, f in (ev.get("hubness_offline") or {}).items():
        cells = "".join(f"<td>{f[k]['mean']:.3f} ± {f[k]['std']:.3f}</td>" for k in ("r@1", "r@5", "r@10", "mrr@10"))
        rows.append(f"<tr><td>hubness correction*</td><td>{d.replace('_', ' ')}</td>{cells}</tr>")
    for label, block in (
        ("mixed list (calibrated)", ev.get("mixed")),
        ("mixed list + hubness*", ev.get("mixed_hubness_offline")),
    ):
        for d, m in (block or {}).items():
            f = m["mixed"]
            cells = "".join(
                f"<td>{f[k]['mean']:.3f} ± {f[k]['std']:.3f}</td>" for k in ("r@1", "r@5", "r@10", "mrr@10")
            )
            sh = m.get("share_of_ceiling") or {}
            note = (
                f"{sh.get('r@1', float('nan')):.2f} / {sh.get('r@10', float('nan')):.2f} of the ceiling; images at "
                f"rank 1 {m['share_of_images_at_rank_1']:.0%}; own modality in the top 10 "
                f"{m.get('own_modality_share_of_top_10', float('nan')):.0%}"
            )
            o = m.get("own_modality_at_rank_1")
            if o and o["share_of_queries"]:
                note += (
                    f"; own modality first for {o['share_of_queries']:.0%} of queries, and then in the top 10 "
                    f"its pair finds {o['in_pairs_top_10']:.0%} of the time (chance {o['chance']:.0%})"
                )
            rows.append(f"<tr><td>{label}</td><td>{d.replace('_', ' ')}</td>{cells}<td>{html.escape(note)}</td></tr>")
    defaults = []
    for d, rec in ((ev.get("defaults") or {}).get("hubness") or {}).items():
        state = "on" if rec["on"] else "off"
        defaults.append(f"hubness correction {d.replace('_', ' ')}: <b>{state}</b> by default "
                        f"(held-out R@1 {rec['r@1_gain']:+.3f}, spread {rec['spread']:.3f})")  # fmt: skip
    return (
        f"<h2>Retrieval quality</h2><p>{ev.get('queries')} of {ev.get('pairs')} pairs as queries, "
        f"{ev.get('folds')} folds; * held out (bank = other folds).</p>"
        "<table><tr><th>option</th><th>direction</th><th>R@1</th><th>R@5</th><th>R@10</th><th>MRR@10</th>"
        "<th>mixed lists</th></tr>" + "".join(rows) + "</table><p>" + "<br>".join(defaults) + "</p>"
    )


def _stats_table(st: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{m}</td><td>{s['count']}</td><td>{s['mean_norm']:.4f}</td><td>{s['stats_version']}</td>"
        f"<td>{s.get('isotropy', {}).get('i1', float('nan')):.3g}</td><td>{s['shell']['rms_radius']:.4f}</td></tr>"
        for m, s in st["modalities"].items()
    )
    gap = st.get("gap", {})
    return (
        "<table><tr><th>modality</th><th>count</th><th>|mean|</th><th>version</th><th>isotropy I1</th>"
        f"<th>shell rms radius</th></tr>{rows}</table><p>Modality gap {gap.get('modality_gap', float('nan')):.4f}, "
        f"cosine of the means {gap.get('cos_means', float('nan')):.4f}.</p>"
    )


def _hist(scores: dict[str, dict[str, np.ndarray]], out: Path) -> tuple[str, str]:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for m, s in scores.items():
        for ax, f in zip(axes, ("conformity", "info_gain"), strict=True):
            v = s[f][np.isfinite(s[f])]
            if len(v):
                ax.hist(v, bins=40, alpha=0.6, label=m, color=COLORS[m])
            ax.set_xlabel(f.replace("_", " "))
            ax.set_ylabel("items")
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))  # IG is ~1e-3 for CLIP
    axes[0].legend()
    return _save(fig, out / "histograms.png", "Score histograms per modality")


def _scatter(scores: dict[str, dict[str, np.ndarray]], out: Path) -> tuple[str, str]:
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for m, s in scores.items():
        ax.scatter(s["conformity"], s["info_gain"], s=6, alpha=0.5, label=m, color=COLORS[m])
    ax.set_xlabel("conformity (high = generic)")
    ax.set_ylabel("information gain (low = placeholder-like)")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    ax.legend()
    return _save(fig, out / "ig_vs_conformity.png", "Information gain vs conformity")


def _projection(ix: Indexer, name: str, out: Path) -> tuple[str, str]:
    data = {m: ix.sample(name, m, 2000) for m in ix.collection(name).modalities}  # drawn by the database
    data = {m: v for m, v in data.items() if len(v)}
    allv = np.vstack(list(data.values()))
    mu = allv.mean(axis=0)
    _, sv, vt = np.linalg.svd(allv - mu, full_matrices=False)
    share = sv**2 / max(float(np.sum(sv**2)), 1e-300)
    fig, ax = plt.subplots(figsize=(6, 5))
    for m, v in data.items():
        p = (v - mu) @ vt[:2].T
        ax.scatter(p[:, 0], p[:, 1], s=5, alpha=0.5, label=f"{m} shell", color=COLORS[m])
        c = (v.mean(axis=0) - mu) @ vt[:2].T
        ax.scatter([c[0]], [c[1]], marker="x", s=120, color="k")
    ax.set_title("PCA of unit embeddings; x = modality mean", fontsize=9)
    ax.set_xlabel(f"principal component 1 ({100 * share[0]:.0f} % of variance)")
    ax.set_ylabel(f"principal component 2 ({100 * share[1]:.0f} % of variance)")
    ax.legend()
    return _save(fig, out / "projection.png", "2-D projection of the two modality shells")


def _save(fig: Any, path: Path, title: str) -> tuple[str, str]:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return title, path.name


def _extremes(m: str, s: dict[str, np.ndarray], out: Path, n: int = 8) -> str:
    ig = s["info_gain"]
    ok = np.flatnonzero(np.isfinite(ig))
    if not len(ok):
        return f"<p>{m}: no information gain computed yet.</p>"
    order = ok[np.argsort(ig[ok])]

    def rows(idx: np.ndarray) -> str:
        lines: list[str] = []
        for i in idx:
            src = s["source"][i]
            thumb = _thumbnail(src, out, i) if m == "image" and src else ""
            label = html.escape(str(src)[:80]) if src and m == "text" else ""
            lines.append(
                f"<tr><td>{html.escape(str(s['ids'][i]))}</td><td>{ig[i]:.5f}</td>"
                f"<td>{s['conformity'][i]:.4f}</td><td>{label}{thumb}</td><td>{_meta(s['meta'][i])}</td></tr>"
            )
        return "".join(lines)

    head = "<tr><th>id</th><th>info gain</th><th>conformity</th><th>content</th><th>metadata</th></tr>"
    return (
        f"<h3>{m}: least informative</h3><table>{head}{rows(order[:n])}</table>"
        f"<h3>{m}: most informative</h3><table>{head}{rows(order[::-1][:n])}</table>"
    )


def _thumbnail(src: Any, out: Path, i: int) -> str:
    """A 96-px copy inside the report folder, so the page stays self-contained."""
    try:
        from PIL import Image
    except ImportError:
        return ""
    try:
        (out / "thumbs").mkdir(exist_ok=True)
        name = f"thumbs/{i}.png"
        with Image.open(str(src)) as im:
            im.thumbnail((96, 96))
            im.convert("RGB").save(out / name)
        return f'<img src="{name}" alt="thumbnail" width="64">'
    except OSError:
        return ""


def alignment_table(metrics: dict[str, Any]) -> str:
    """Cross-validated text→image recall and mixed top-1, plain vs aligned vs calibrated."""
    t, mx = metrics["text_to_image"], metrics["mixed_top1"]
    rows = "".join(
        f"<tr><td>text→image {k}</td><td>{t['plain'][k]:.3f}</td><td>{t['aligned'][k]:.3f}</td><td></td><td></td></tr>"
        for k in t["plain"]
    )
    rows += (
        f"<tr><td>mixed: paired image first</td><td>{mx['plain']:.3f}</td><td>{mx['aligned']:.3f}</td>"
        f"<td>{mx['calibrated']:.3f}</td><td>{mx['aligned_calibrated']:.3f}</td></tr>"
    )
    return (
        "<table><tr><th>metric</th><th>plain</th><th>aligned</th><th>calibrated</th><th>aligned + calibrated</th></tr>"
        f"{rows}</table><p>{metrics['repeats']}×{metrics['folds']}-fold cross-validation on {metrics['pairs']} pairs; "
        f"calibrated mixed search reaches {mx['calibrated_share_of_ceiling']:.0%} of text→image R@1 "
        f"({mx['ceiling_text_to_image_r@1']:.3f}). {html.escape(metrics.get('reason', ''))}.</p>"
    )


def _meta(meta: dict[str, Any] | None) -> str:
    return html.escape(", ".join(f"{k}={v}" for k, v in (meta or {}).items())[:160])


def _extra(extra: dict[str, Any] | None) -> str:
    if not extra:
        return ""
    items = "".join(
        f"<h3>{html.escape(k.removesuffix(' (html)'))}</h3>"
        + (v if k.endswith("(html)") else f'<pre style="white-space:pre-wrap">{html.escape(str(v))}</pre>')
        for k, v in extra.items()
    )
    return f"<h2>Demo results</h2>{items}"
