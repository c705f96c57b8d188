"""Recommenders say what they offer (capability flags, a typed protocol); callers above
ask those, never the model's name."""

import numpy as np

from whyrec.models import MODELS, ExplainableModel, model_class
from whyrec.models.attribution import Removal


def test_only_lane_has_preferences_and_only_popularity_lacks_attribution():
    assert {n for n, c in MODELS.items() if c.has_preferences} == {"lane"}
    assert {n for n, c in MODELS.items() if not c.has_attribution} == {"popularity"}
    assert model_class("sasrec-id").has_attribution  # aliases reach the same class


def test_a_model_whose_scores_ignore_the_history_has_no_history_evidence(fitted):
    """``has_attribution`` is true exactly when removing history items can move a score."""
    for name, model in fitted.items():
        hist = np.asarray(model.histories[0])
        item = int(model.recommend(0, k=1).items[0])
        res = model.counterfactual(item, history=hist, removals=[])
        drops = model.counterfactual(
            item, history=hist, removals=[Removal(history=(p,)) for p in range(len(hist))]
        )
        moved = any(abs(s - res[0][0]) > 1e-6 for s, _ in drops[1:])
        assert moved == model.has_attribution, name


def test_every_fitted_model_is_an_explainable_model(fitted):
    for name, model in fitted.items():
        assert isinstance(model, ExplainableModel), name
