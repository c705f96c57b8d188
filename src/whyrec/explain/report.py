"""Heatmaps of preference weights and a self-contained HTML report.

Every string from the data or the LLM is HTML-escaped: titles and model replies are
untrusted text.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from whyrec.explain.grounding import spoken_title
from whyrec.io import atomic_write


def _figure_png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def weights_heatmap(
    weights: np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: str,
    *,
    cmap: str = "viridis",
    fmt: str = "{:.2f}",
    marks: np.ndarray | None = None,
) -> bytes:
    """A PNG heatmap of ``weights`` (rows × columns) with the values written in; cells
    where ``marks`` (same shape, bool) is true are framed and ticked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = np.asarray(weights, dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * w.shape[1], 0.8 + 0.45 * w.shape[0]))
    im = ax.imshow(w, cmap=cmap, aspect="auto")
    ax.set_xticks(range(w.shape[1]), [str(c)[:28] for c in col_labels], rotation=30, ha="right")
    ax.set_yticks(range(w.shape[0]), [str(r)[:40] for r in row_labels])
    marked = np.zeros(w.shape, dtype=bool) if marks is None else np.asarray(marks, dtype=bool)
    for i in range(w.shape[0]):
        for j in range(w.shape[1]):
            label = fmt.format(w[i, j]) + (" ✓" if marked[i, j] else "")
            ink = text_colour(im.cmap(im.norm(w[i, j])))
            weight = "bold" if marked[i, j] else "normal"
            ax.text(j, i, label, ha="center", va="center", fontsize=7, color=ink, fontweight=weight)
            if marked[i, j]:
                ax.add_patch(
                    plt.Rectangle((j - 0.48, i - 0.46), 0.96, 0.92, fill=False, ec=ink, lw=2)
                )
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.04)
    png = _figure_png(fig)
    plt.close(fig)
    return png


def text_colour(rgba: Sequence[float]) -> str:
    """Black on light cells, white on dark ones (WCAG relative luminance of the cell)."""

    def channel(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(float(c)) for c in rgba[:3])
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    # contrast with black (L + 0.05) / 0.05 vs with white 1.05 / (L + 0.05)
    return "black" if (luminance + 0.05) / 0.05 >= 1.05 / (luminance + 0.05) else "white"


#: How the preference summary's entries read on the report page (unknown keys are shown
#: with their words spaced out).
SUMMARY_WORDS: dict[str, str] = {
    "users": "Users",
    "llm_users": "Users whose tastes the LLM was asked for (a seeded sample)",
    "llm_model": "LLM that wrote the tastes",
    "prompt_version": "Prompt version",
    "mode": "Prompting mode",
    "asked_now": "Users asked in this run (the others came from the cache)",
    "reused": "Users whose tastes came from the cache",
    "outage_now": "Users asked during an LLM outage (asked again next run)",
    "seconds": "Seconds spent extracting tastes",
    "sampled_llm_complete": "Sampled users with all tastes written by the LLM",
    "sampled_partial": "Sampled users with some LLM tastes, the rest grounded",
    "sampled_fallback": "Sampled users with only grounded tastes (no LLM taste kept)",
    "sampled_fallback_rate": "Share of sampled users with only grounded tastes",
    "llm_sentences": "Tastes kept from the LLM",
    "boilerplate_replaced": "LLM tastes replaced (vague, or paraphrases written for many users)",
    "distinct_llm_sentences": "Distinct sentences the LLM wrote",
    "llm_sentences_kept_share": "Share of the LLM's sentences kept",
    "fallback_sentence_rate": "Share of the sampled users' tastes that are grounded",
    "specific_share": "Share of the LLM's sentences naming a genre, decade or title of "
    "the user's history",
    "replaced_unspecific": "LLM tastes replaced for naming nothing checkable",
    "replaced_boilerplate": "LLM tastes replaced as paraphrases written for 3+ users",
    "paraphrase_clusters": "Paraphrase clusters found across users",
}


def summary_in_words(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The preference summary as (label, value) rows a reader understands."""
    rows = []
    for key, value in summary.items():
        label = SUMMARY_WORDS.get(key, str(key).replace("_", " ").capitalize())
        if isinstance(value, float) and ("rate" in key or "share" in key):
            text = f"{value:.0%}"
        else:
            text = "–" if value is None else str(value)
        rows.append((label, text))
    return rows


def taste_checks_in_words(t: dict[str, Any]) -> list[tuple[str, str]]:
    """The model's taste checks (:func:`whyrec.evaluate.explanations.tastes.
    model_taste_checks`) as rows a reader understands."""

    def share(x: Any) -> str:
        return "–" if x is None else f"{x:.0%}"

    q = t.get("cited_drop_share_q25_q75") or [None, None]
    return [
        ("Checked", f"{t['users']} users × their top {t['items_per_user']} items"),
        (
            "Removing a taste that names one of the item's genres or decades raises the item "
            "(should never happen)",
            f"{t['sign_violations']} of {t['taste_item_pairs']} "
            f"({share(t['sign_violation_share'])})",
        ),
        (
            "A cited taste's effect, as a share of the strongest history item's (median, "
            "middle half)",
            f"{share(t['cited_drop_share_median'])} ({share(q[0])}–{share(q[1])})",
        ),
        ("Cited tastes whose removal moves the item's rank", share(t["cited_rank_moves_share"])),
        ("Tastes left out of reasons as immaterial", str(t["immaterial_tastes_passed_over"])),
        (
            "Users whose top 10 changes without their tastes",
            share(t["users_top10_changed_without_tastes"]),
        ),
    ]


def write_png(path: str | Path, png: bytes) -> Path:
    return atomic_write(path, lambda p: p.write_bytes(png))


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def html_report(
    *,
    title: str,
    metrics: list[dict[str, Any]],
    preference_summary: dict[str, Any],
    explanations: list[dict[str, Any]],
    images: dict[str, bytes],
    notes: Sequence[str] = (),
    taste_checks: dict[str, Any] | None = None,
) -> str:
    """One HTML page: metrics table, preference statistics, heatmaps, explanations."""
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{e(title)}</title><style>"
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px}"
        "th{background:#f4f4f4}.src{color:#666;font-size:90%}.card{border:1px solid #ddd;"
        "border-radius:6px;padding:1em;margin:1em 0}img{max-width:100%}</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    for note in notes:
        parts.append(f"<p class='src'>{e(note)}</p>")
    if metrics:
        cols = list(metrics[0].keys())
        parts.append("<h2>Ranking metrics</h2><table><tr>")
        parts += [f"<th>{e(str(c))}</th>" for c in cols]
        parts.append("</tr>")
        for row in metrics:
            cells = "".join(
                f"<td>{e(f'{v:.4f}' if isinstance(v, float) else str(v))}</td>"
                for v in row.values()
            )
            parts.append(f"<tr>{cells}</tr>")
        parts.append("</table>")
    parts.append(
        "<h2>Tastes</h2><p class='src'>Grounded tastes name what a user picks more often "
        "than most users (genres, decades), with their own titles; an LLM taste is kept only "
        "when it names something in the user's history and is not one of a paraphrase "
        "cluster written for many users.</p><table>"
    )
    for label, value in summary_in_words(preference_summary):
        parts.append(f"<tr><th>{e(label)}</th><td>{e(value)}</td></tr>")
    parts.append("</table>")
    if taste_checks:
        parts.append("<h3>Do the tastes mean what they say?</h3><table>")
        for label, value in taste_checks_in_words(taste_checks):
            parts.append(f"<tr><th>{e(label)}</th><td>{e(value)}</td></tr>")
        parts.append("</table>")
    for name, png in images.items():
        parts.append(f"<h3>{e(name)}</h3>{_img(png, name)}")
    parts.append("<h2>Explanations</h2>")
    parts += [_explanation_card(ex) for ex in explanations]
    parts.append("</body></html>")
    return "\n".join(parts)


def _explanation_card(ex: dict[str, Any]) -> str:
    """One explanation as an HTML card: the reason, where it came from, its evidence."""
    e = html.escape
    cited = ex.get("cited") or {}
    cp, ch = set(cited.get("preferences", [])), set(cited.get("history", []))
    prefs = "".join(
        f"<tr><td>{'✓ ' if p['index'] in cp else ''}{e(p['preference'])}</td>"
        f"<td>{p['score_drop']:+.3f}</td><td>{p['rank_without']}</td>"
        f"<td>{p['weight']:.2f}</td></tr>"
        for p in sorted(ex["preference_effects"], key=lambda p: -p["score_drop"])
    )
    hist = "".join(
        f"<li>{'✓ ' if h['item'] in ch else ''}{e(spoken_title(h['title']))} (score drop "
        f"{h['score_drop']:+.3f}, rank without: {h['rank_without']})</li>"
        for h in ex["history_effects"][:5]
    )
    removed = "".join(
        f"<li>{e(r['sentence'])} — <i>{e(str(r['problem']))}</i></li>"
        for r in ex.get("removed_sentences") or []
    )
    facts = ", ".join(ex.get("item_facts") or [])
    return (
        "<div class='card'>"
        f"<h3>{e(spoken_title(ex['title']))} — rank {ex['rank']}</h3>"
        + (f"<p class='src'>item facts: {e(facts)}</p>" if facts else "")
        + f"<p>{e(ex['reason'])}</p>"
        f"<p class='src'>reason from: {e(ex['reason_source'])}"
        + (f" ({e(ex['model'])})" if ex.get("model") and ex["reason_source"] != "template" else "")
        + "; preferences from: "
        f"{e(ex['preference_source'])}. ✓ marks the evidence the reason is built from: what "
        "lowers this item's score most when removed.</p>"
        + (
            "<p class='src'>added in the template's words, for cited evidence the LLM "
            f"left out: {e(' '.join(ex['completed_sentences']))}</p>"
            if ex.get("completed_sentences")
            else ""
        )
        + (
            f"<p class='src'>LLM sentences removed by the claim verifier:</p><ul>{removed}</ul>"
            if removed
            else ""
        )
        + (
            "<p class='src'>the LLM's reason is not shown: "
            f"{e('; '.join(str(p) for p in ex['problems'])[:400])}</p>"
            if ex["reason_source"] == "template" and ex.get("problems")
            else ""
        )
        + (
            f"<p class='src'>baseline (same LLM, no evidence): {e(ex['baseline'])}</p>"
            if ex.get("baseline")
            else ""
        )
        + "<table><tr><th>preference</th><th>this item's score drop without it</th>"
        "<th>rank without it</th><th>LANE weight (user-level, same for every item)</th>"
        f"</tr>{prefs}</table>"
        f"<p>History items whose removal lowers this item's score most:</p><ul>{hist}</ul>"
        "</div>"
    )
