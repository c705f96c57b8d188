"""LANE's LLM stages and the faithful evidence they use.

Preference extraction (:mod:`.preferences`), the explainer (:mod:`.explainer`), grounded
fallbacks and templates, the end-to-end pipeline (:mod:`.pipeline`) and the report.
"""

from whyrec.explain.explainer import Explanation, LaneExplainer
from whyrec.explain.pipeline import PreferenceSet, extract_preferences, train_lane
from whyrec.explain.preferences import (
    PreferenceExtractor,
    PreferenceStore,
    UserPreferences,
    embed_preferences,
)
from whyrec.explain.templates import template_reason

__all__ = [
    "Explanation",
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
