"""Explanation quality: faithfulness to the recommender, grounding, text, LLM judges, humans.

``evaluate_explanations(model, client=..., dataset=..., encoder=...)`` runs the whole
comparison (LANE, baseline, template) and returns an :class:`ExplanationReport`; the
pieces are usable on their own: :class:`ExplanationScorer` scores any
:class:`ExplanationCase`, :class:`Catalogue` grounds titles and genres, the judges grade
with any LLM client, and :mod:`~whyrec.evaluate.explanations.questionnaire` exports and
scores the human questionnaire. See docs/explanation-quality.md.
"""

from whyrec.evaluate.explanations.cases import ExplanationCase
from whyrec.evaluate.explanations.faithfulness import (
    MENTION_THRESHOLD,
    PreferenceMatcher,
    history_faithfulness,
    likelihood_agreement,
    preference_faithfulness,
)
from whyrec.evaluate.explanations.harness import (
    SYSTEMS,
    evaluate_explanations,
    explain_cases,
    judge_cases,
    load_references,
    rescore_report,
    select_users,
)
from whyrec.evaluate.explanations.judges import (
    PairwiseJudge,
    RubricJudge,
    reconcile,
    summarize_pairwise,
)
from whyrec.evaluate.explanations.questionnaire import (
    CRITERIA,
    export_questionnaire,
    score_questionnaire,
)
from whyrec.evaluate.explanations.report import ExplanationReport
from whyrec.evaluate.explanations.scoring import METRICS, ExplanationScorer, summarize_systems
from whyrec.evaluate.explanations.text import (
    BertScoreStyle,
    corpus_bleu,
    distinct_n,
    rouge,
    sentence_bleu,
    unique_sentence_ratio,
)
from whyrec.explain.grounding import Catalogue, Grounding, TitleMention

__all__ = [
    "CRITERIA",
    "MENTION_THRESHOLD",
    "METRICS",
    "SYSTEMS",
    "BertScoreStyle",
    "Catalogue",
    "ExplanationCase",
    "ExplanationReport",
    "ExplanationScorer",
    "Grounding",
    "PairwiseJudge",
    "PreferenceMatcher",
    "RubricJudge",
    "TitleMention",
    "corpus_bleu",
    "distinct_n",
    "evaluate_explanations",
    "explain_cases",
    "export_questionnaire",
    "history_faithfulness",
    "judge_cases",
    "likelihood_agreement",
    "load_references",
    "preference_faithfulness",
    "reconcile",
    "rescore_report",
    "rouge",
    "score_questionnaire",
    "select_users",
    "sentence_bleu",
    "summarize_pairwise",
    "summarize_systems",
    "unique_sentence_ratio",
]
