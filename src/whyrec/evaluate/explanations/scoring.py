"""Score explanation cases: per-case metrics, then per-system summaries.

:class:`ExplanationScorer` fills ``case.metrics`` (faithfulness, grounding, text) and
``case.details`` (mention scores, the titles found); :func:`summarize_systems` turns the
cases of each system into rows of mean ± std and N, plus the set-level metrics (USR,
distinct-n, corpus BLEU, likelihood against rank, length against judge grade).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from whyrec.evaluate.explanations.cases import ExplanationCase
from whyrec.evaluate.explanations.faithfulness import (
    MENTION_THRESHOLD,
    PreferenceMatcher,
    history_faithfulness,
    likelihood_agreement,
    preference_faithfulness,
)
from whyrec.evaluate.explanations.stats import spearman, summarize
from whyrec.evaluate.explanations.text import (
    BertScoreStyle,
    case_text_metrics,
    corpus_text_metrics,
)
from whyrec.explain.grounding import Catalogue

#: (key, group, label, better): "up" higher is better, "down" lower is better, "" neither.
METRICS: list[tuple[str, str, str, str]] = [
    ("top_pref_agreement", "faithfulness", "leans on the top-weighted preference", "up"),
    ("top_pref_mentioned", "faithfulness", "mentions the top-weighted preference", "up"),
    (
        "leaned_pref_weight_score",
        "faithfulness",
        "weight position of the preference it leans on (1 = top)",
        "up",
    ),
    ("weight_spearman", "faithfulness", "Spearman: preference weight vs mention", "up"),
    ("weight_kendall", "faithfulness", "Kendall: preference weight vs mention", "up"),
    (
        "attribution_spearman",
        "faithfulness",
        "Spearman: score drop without preference vs mention",
        "up",
    ),
    (
        "history_recall3",
        "faithfulness",
        "names the 3 most influential history items (recall)",
        "up",
    ),
    (
        "history_influence_pct",
        "faithfulness",
        "influence percentile of the history items named",
        "up",
    ),
    ("likelihood_concordance", "faithfulness", "likelihood: top item above low item (pairs)", "up"),
    ("likelihood_expected", "faithfulness", "likelihood: High for top, Low for low item", "up"),
    ("likelihood_rank_spearman", "faithfulness", "Spearman: stated likelihood vs rank", "up"),
    ("likelihood_rank_kendall", "faithfulness", "Kendall: stated likelihood vs rank", "up"),
    ("cf_cited", "counterfactual", "evidence pieces the text cites (preferences + history)", ""),
    ("cf_score_drop", "counterfactual", "score drop without the cited evidence", "up"),
    ("cf_rank_drop", "counterfactual", "rank drop without the cited evidence", "up"),
    ("cf_control_score_drop", "counterfactual", "score drop without as much uncited evidence", ""),
    ("cf_control_rank_drop", "counterfactual", "rank drop without as much uncited evidence", ""),
    ("necessity_win", "counterfactual", "necessity: cited evidence beats the random control", "up"),
    (
        "sufficiency_topk",
        "counterfactual",
        "sufficiency: cited evidence alone keeps it top-10",
        "up",
    ),
    ("sufficiency_rank", "counterfactual", "rank with only the cited evidence", "down"),
    ("verified_sentences", "grounding", "share of sentences the claim verifier supports", "up"),
    ("boilerplate_sentences", "grounding", "share of sentences written alike for 3+ users", "down"),
    ("invented_titles", "grounding", "invented titles per explanation", "down"),
    ("has_invented_title", "grounding", "explanations with an invented title", "down"),
    ("grounded_titles", "grounding", "history/target titles named per explanation", ""),
    ("title_grounding", "grounding", "share of named titles that are grounded", "up"),
    ("unsupported_genres", "grounding", "genre claims the data does not support", "down"),
    ("words", "text", "words per explanation", ""),
    ("usr", "text", "unique sentence ratio (USR, explanations)", "up"),
    ("usr_sentences", "text", "unique sentence ratio (sentences)", "up"),
    ("distinct1", "text", "distinct-1", "up"),
    ("distinct2", "text", "distinct-2", "up"),
    ("bleu", "text", "sentence BLEU vs references (0-100)", "up"),
    ("corpus_bleu", "text", "corpus BLEU vs references (0-100)", "up"),
    ("rouge1", "text", "ROUGE-1 F1 vs references", "up"),
    ("rouge2", "text", "ROUGE-2 F1 vs references", "up"),
    ("rougeL", "text", "ROUGE-L F1 vs references", "up"),
    ("bertscore_minilm_f1", "text", "BERTScore-style F1, MiniLM token vectors", "up"),
    ("rubric", "judge", "LLM rubric grade (0-3)", "up"),
    ("rubric_length_spearman", "judge", "Spearman: length vs rubric grade", ""),
    ("llm_written", "meta", "written by the LLM (not a fallback; may be completed)", ""),
    ("llm_completed", "meta", "LLM reason completed with template sentences", ""),
    ("failed", "meta", "no explanation produced", "down"),
]
METRIC_INFO = {k: {"group": g, "label": lab, "better": b} for k, g, lab, b in METRICS}
LLM_SOURCES = ("llm", "baseline-llm")


class ExplanationScorer:
    """Per-case metrics against a catalogue, with an optional sentence encoder."""

    def __init__(
        self,
        catalogue: Catalogue,
        *,
        encoder: Any = None,
        threshold: float = MENTION_THRESHOLD,
        bertscore: bool = True,
    ) -> None:
        self.catalogue = catalogue
        self.matcher = PreferenceMatcher(encoder)  # decides "mentioned" itself
        self.threshold = threshold
        self.bert = BertScoreStyle(encoder) if (encoder is not None and bertscore) else None

    def describe(self) -> dict[str, Any]:
        return {
            "mention_score": self.matcher.kind,
            "mentioned_if": (
                f"lexical coverage >= {self.matcher.lexical_mention} or sentence cosine >= "
                f"{self.matcher.semantic_mention}"
            ),
            "bertscore_level": self.bert.level if self.bert is not None else None,
        }

    def score_case(self, case: ExplanationCase) -> dict[str, Any]:
        """Compute and store ``case.metrics``; returns them."""
        metrics: dict[str, Any] = {
            "failed": 0.0 if case.ok else 1.0,
            "llm_written": 1.0 if case.source.split("+", 1)[0] in LLM_SOURCES else 0.0,
            "llm_completed": 1.0 if case.source.endswith("+template") else 0.0,
        }
        if not case.ok:
            case.metrics.update(metrics)
            return case.metrics
        text = str(case.text)
        g = self.catalogue.ground(
            text, target=case.item, history=case.history, preferences=case.preferences
        )
        mention = self.matcher.scores(text, case.preferences) if case.preferences else {}
        metrics.update(
            preference_faithfulness(
                case.weights,
                case.preference_drops,
                mention.get("score", []),
                mention.get("mentioned"),
                threshold=self.threshold,
            )
        )
        named_history = [m.item for m in g.mentions if m.status == "history" and m.item is not None]
        metrics.update(history_faithfulness(case.history_drops, named_history, case.history))
        metrics.update(g.metrics())
        metrics.update(case_text_metrics(text, case.references, self.bert))
        case.metrics.update(metrics)
        case.details["mention_scores"] = mention
        case.details["grounding"] = g.to_dict()
        return case.metrics

    def score_all(self, cases: Sequence[ExplanationCase]) -> None:
        for c in cases:
            self.score_case(c)


def summarize_systems(
    cases: Sequence[ExplanationCase], systems: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Rows ``{system, metric, group, label, kind, mean, std, n}`` for every metric."""
    systems = list(systems) if systems else list(dict.fromkeys(c.system for c in cases))
    rows: list[dict[str, Any]] = []
    for s in systems:
        mine = [c for c in cases if c.system == s]
        ok = [c for c in mine if c.ok]
        set_level: dict[str, dict[str, Any]] = {}
        set_level.update(corpus_text_metrics([str(c.text) for c in ok], [c.references for c in ok]))
        set_level.update(likelihood_agreement(ok))
        graded = [c for c in ok if c.metrics.get("rubric") is not None]
        set_level["rubric_length_spearman"] = {
            "value": spearman(
                [c.metrics["words"] for c in graded], [c.metrics["rubric"] for c in graded]
            )
            if len(graded) > 1
            else None,
            "n": len(graded),
        }
        for key, group, label, _better in METRICS:
            if key in set_level:
                v = set_level[key]
                row = {
                    "mean": v["value"],
                    "std": None,
                    "n": v["n"] if v["value"] is not None else 0,
                }
                kind = "set"
            else:
                pool = mine if key in ("failed", "llm_written") else ok
                row = summarize([c.metrics.get(key) for c in pool])
                kind = "case"
            rows.append({"system": s, "metric": key, "group": group, "label": label,
                         "kind": kind, **row})  # fmt: skip
    return rows


def pooled_length_correlation(cases: Sequence[ExplanationCase]) -> dict[str, Any]:
    """Spearman of length and rubric grade over all systems' graded explanations."""
    graded = [c for c in cases if c.ok and c.metrics.get("rubric") is not None]
    value = (
        spearman([c.metrics["words"] for c in graded], [c.metrics["rubric"] for c in graded])
        if len(graded) > 1
        else None
    )
    return {"value": value, "n": len(graded)}
