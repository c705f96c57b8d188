"""Faithfulness: does an explanation lean on what actually drove the recommender's score?

For each preference the explanation gets a *mention score* in [0, 1]: the share of the
preference's content words that the explanation uses (lexical), averaged with the best
cosine similarity between the preference and any sentence of the explanation (semantic,
with the sentence encoder; lexical only without one). A preference counts as
*mentioned* when at least half of its content words appear (``LEXICAL_MENTION``) or a
sentence is at least ``SEMANTIC_MENTION`` similar to it. Against LANE's evidence:

* ``top_pref_agreement`` — the preference with the highest mention score is the one with
  the highest weight (and some preference is mentioned at all); preferences within
  ``NEAR_TIE`` of the best score share the credit;
* ``top_pref_mentioned`` — the top-weighted preference is mentioned;
* ``leaned_pref_weight_score`` — where the most-mentioned preference sits in the weight
  order: 1 = the top-weighted one, 0 = the lowest-weighted one;
* ``weight_spearman`` / ``weight_kendall`` — rank correlation of weights and mention
  scores over the ``m`` preferences;
* ``attribution_spearman`` — rank correlation of each preference's score drop (the
  attribution: how much the item's score falls without it) and its mention score;
* ``history_recall3`` — share of the three history items whose removal lowers the
  score most (positive drops only) that the explanation names;
* ``history_influence_pct`` — mean influence percentile of the history items it names
  (1 = the most influential item of the model's input window, 0 = the least; a history
  item outside the window counts 0 — the model did not read it).

Stated likelihood against the rank (set-level, per system): explanations of each user's
top-ranked item and of a low-ranked item should say High and Low.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from whyrec.evaluate.explanations.cases import ExplanationCase
from whyrec.evaluate.explanations.stats import kendall, rankdata, spearman
from whyrec.explain.textutil import content_words, coverage, sentences

#: A preference is mentioned when this share of its content words is in the text ...
LEXICAL_MENTION = 0.5
#: ... or when a sentence of the text has at least this cosine similarity with it.
SEMANTIC_MENTION = 0.45
#: Mention scores this close to the best one count as leaned on just as much.
NEAR_TIE = 0.05
#: Without per-part scores, a combined mention score this high counts as a mention.
MENTION_THRESHOLD = 0.25


class PreferenceMatcher:
    """Mention scores of preferences in a text: lexical coverage, plus encoder similarity."""

    def __init__(
        self,
        encoder: Any = None,
        *,
        lexical_mention: float = LEXICAL_MENTION,
        semantic_mention: float = SEMANTIC_MENTION,
    ) -> None:
        self.encoder = encoder
        self.lexical_mention = lexical_mention
        self.semantic_mention = semantic_mention

    @property
    def kind(self) -> str:
        if self.encoder is None:
            return "lexical"
        return f"lexical+cosine ({getattr(self.encoder, 'id', type(self.encoder).__name__)})"

    def scores(self, text: str, preferences: Sequence[str]) -> dict[str, list[Any]]:
        """``{"lexical", "semantic" (with an encoder), "score", "mentioned"}``, one value
        per preference."""
        tw = content_words(text)
        lexical = [coverage(p, tw) for p in preferences]
        out: dict[str, list[float]] = {"lexical": lexical}
        sents = sentences(text) or ([text] if text.strip() else [])
        if self.encoder is not None and sents and len(preferences):
            vecs = np.asarray(self.encoder.encode([*preferences, *sents]), dtype=np.float64)
            vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
            p, s = vecs[: len(preferences)], vecs[len(preferences) :]
            semantic = np.clip((p @ s.T).max(axis=1), 0.0, 1.0)
            out["semantic"] = [float(x) for x in semantic]
            out["score"] = [(a + b) / 2 for a, b in zip(lexical, out["semantic"], strict=True)]
        else:
            out["score"] = list(lexical)
        sem = out.get("semantic", [0.0] * len(lexical))
        out["mentioned"] = [
            bool(lx >= self.lexical_mention or se >= self.semantic_mention)
            for lx, se in zip(lexical, sem, strict=True)
        ]
        return out


def _tie_share(best: Sequence[int], target: int) -> float:
    return 1.0 / len(best) if target in best else 0.0


def preference_faithfulness(
    weights: Sequence[float],
    drops: Sequence[float],
    mention: Sequence[float],
    mentioned: Sequence[bool] | None = None,
    *,
    threshold: float = MENTION_THRESHOLD,
) -> dict[str, float | None]:
    """Faithfulness of the mention scores to the weights and the score drops.

    ``mentioned`` says which preferences count as mentioned (default: score ≥
    ``threshold``)."""
    m = len(weights)
    if m == 0 or len(mention) != m:
        return {
            k: None
            for k in (
                "top_pref_agreement",
                "top_pref_mentioned",
                "leaned_pref_weight_score",
                "weight_spearman",
                "weight_kendall",
                "attribution_spearman",
            )
        }
    w = np.asarray(weights, dtype=np.float64)
    s = np.asarray(mention, dtype=np.float64)
    men = np.asarray(mentioned, dtype=bool) if mentioned is not None else s >= threshold
    top = int(np.argmax(w))
    best = [int(j) for j in np.flatnonzero(s >= s.max() - NEAR_TIE)]
    mentioned_any = bool(men.any())
    agreement = _tie_share(best, top) if mentioned_any else 0.0
    # weight position of the most-mentioned preference: 1 = top weight, 0 = lowest
    if mentioned_any and m > 1:
        wr = rankdata(w)  # 1 = lowest weight
        lean = float(np.mean([(wr[j] - 1) / (m - 1) for j in best]))
    elif mentioned_any:
        lean = 1.0
    else:
        lean = 0.0
    return {
        "top_pref_agreement": agreement,
        "top_pref_mentioned": float(men[top]),
        "leaned_pref_weight_score": lean,
        "weight_spearman": spearman(w, s),
        "weight_kendall": kendall(list(w), list(s)),
        "attribution_spearman": spearman(list(drops), list(s)) if len(drops) == m else None,
    }


def history_faithfulness(
    history_drops: Sequence[dict[str, Any]], mentioned: Sequence[int], history: Sequence[int]
) -> dict[str, float | None]:
    """How influential the history items an explanation names were (see module doc)."""
    drops: dict[int, float] = {}
    for h in history_drops:
        i = int(h["item"])
        drops[i] = max(float(h["score_drop"]), drops.get(i, float("-inf")))
    in_hist = set(int(h) for h in history)
    named = [i for i in dict.fromkeys(int(x) for x in mentioned) if i in in_hist]
    out: dict[str, float | None] = {"history_named": float(len(named))}
    positive = sorted((i for i in drops if drops[i] > 0), key=lambda i: -drops[i])[:3]
    out["history_recall3"] = len(set(positive) & set(named)) / len(positive) if positive else None
    if not named:
        out["history_influence_pct"] = None
        return out
    items = list(drops)
    ranks = rankdata([drops[i] for i in items])  # 1 = smallest drop
    pct = {
        i: ((r - 1) / (len(items) - 1) if len(items) > 1 else 1.0)
        for i, r in zip(items, ranks, strict=True)
    }
    out["history_influence_pct"] = float(np.mean([pct.get(i, 0.0) for i in named]))
    return out


def likelihood_agreement(cases: Sequence[ExplanationCase]) -> dict[str, dict[str, Any]]:
    """Stated likelihood vs the recommender's rank, for one system's cases.

    ``likelihood_concordance``: over users with a stated likelihood for both their top and
    their low item, 1 when top > low, 0.5 when equal, 0 when reversed (mean);
    ``likelihood_expected``: share of cases saying High for a top item and Low for a low
    one; ``likelihood_rank_spearman`` / ``_kendall``: correlation of the stated level
    (Low 1, Medium 2, High 3) with the item's rank, sign flipped so that agreeing with the
    ranking is positive.
    """
    stated = [c for c in cases if c.likelihood_level is not None]
    by_user: dict[str, dict[str, int]] = {}
    for c in stated:
        by_user.setdefault(c.user, {})[c.position] = c.likelihood_level  # type: ignore[assignment]
    pairs = [(d["top"], d["low"]) for d in by_user.values() if "top" in d and "low" in d]
    conc = [1.0 if t > lo else 0.5 if t == lo else 0.0 for t, lo in pairs]
    expected = [
        float(
            (c.position == "top" and c.likelihood_level == 3)
            or (c.position == "low" and c.likelihood_level == 1)
        )
        for c in stated
        if c.position in ("top", "low")
    ]
    levels = [float(c.likelihood_level) for c in stated]  # type: ignore[arg-type]
    neg_rank = [-float(c.rank) for c in stated]

    def row(value: float | None, n: int) -> dict[str, Any]:
        return {"value": value, "n": n}

    return {
        "likelihood_concordance": row(float(np.mean(conc)) if conc else None, len(conc)),
        "likelihood_expected": row(float(np.mean(expected)) if expected else None, len(expected)),
        "likelihood_rank_spearman": row(spearman(levels, neg_rank), len(stated)),
        "likelihood_rank_kendall": row(kendall(levels, neg_rank), len(stated)),
    }
