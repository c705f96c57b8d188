"""LANE's LLM stages and the faithful evidence they use.

Preference extraction (:mod:`.preferences`), the explanation pipeline (:mod:`.explainer`,
composing the evidence room :mod:`.gathering`, the prompting room :mod:`.asking` and the
finishing room :mod:`.finishing`; its records in :mod:`.record`), grounded fallbacks and
templates, LANE's training stages (:mod:`.pipeline`) and the report.
"""

from whyrec.explain.explainer import ExplanationPipeline, LaneExplainer
from whyrec.explain.pipeline import PreferenceSet, extract_preferences, train_lane
from whyrec.explain.preferences import (
    PreferenceExtractor,
    PreferenceStore,
    UserPreferences,
    embed_preferences,
)
from whyrec.explain.record import Explanation
from whyrec.explain.templates import template_reason

__all__ = [
    "Explanation",
    "ExplanationPipeline",
    "LaneExplainer",
    "PreferenceExtractor",
    "PreferenceSet",
    "PreferenceStore",
    "UserPreferences",
    "embed_preferences",
    "extract_preferences",
    "template_reason",
    "train_lane",
]
