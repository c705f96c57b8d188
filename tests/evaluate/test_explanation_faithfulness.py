"""Faithfulness metrics on hand-made explanations whose right answers are worked out here."""

import math

import pytest

from whyrec.evaluate.explanations import (
    ExplanationScorer,
    PreferenceMatcher,
    history_faithfulness,
    likelihood_agreement,
    preference_faithfulness,
)
from whyrec.evaluate.explanations.stats import kendall, rankdata, spearman, summarize

from .explanation_helpers import (
    DROPS,
    FAITHFUL,
    PREFS,
    UNFAITHFUL,
    WEIGHTS,
    case,
    catalogue,
    minilm,
)


def test_rank_statistics_on_known_values():
    assert list(rankdata([10, 20, 20, 5])) == [2.0, 3.5, 3.5, 1.0]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [5, 5, 5]) is None  # constant: undefined, not 0
    # one discordant pair of three: (2 - 1) / 3
    assert kendall([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    # tau-b with a tie in y: pairs (1,2) tie_y, (1,3) conc, (2,3) conc -> 2/sqrt(3*2)
    assert kendall([1, 2, 3], [1, 1, 2]) == pytest.approx(2 / math.sqrt(6))
    s = summarize([1.0, None, 3.0])
    assert s == {"mean": 2.0, "std": pytest.approx(math.sqrt(2)), "n": 2}


def test_lexical_mention_scores_are_word_coverage():
    m = PreferenceMatcher(None).scores(FAITHFUL, PREFS)
    # "animated", "family", "musical(s)" all present; no other preference's words are
    assert m["lexical"] == [0.0, 1.0, 0.0, 0.0, 0.0]
    assert m["mentioned"] == [False, True, False, False, False]
    m = PreferenceMatcher(None).scores(UNFAITHFUL, PREFS)
    assert m["lexical"] == [1.0, 0.0, 0.0, 0.0, 0.0]


def test_faithful_and_unfaithful_preference_scores_by_hand():
    # weights [.05, .5, .15, .1, .2]: ranks 1 5 3 2 4, centred -2 2 0 -1 1
    good = preference_faithfulness(WEIGHTS, DROPS, [0, 1, 0, 0, 0])
    # mention ranks 2.5 5 2.5 2.5 2.5 centred -.5 2 -.5 -.5 -.5: cov 5, norms 10 and 5
    assert good["weight_spearman"] == pytest.approx(1 / math.sqrt(2))
    assert good["top_pref_agreement"] == 1.0 and good["top_pref_mentioned"] == 1.0
    assert good["leaned_pref_weight_score"] == 1.0
    bad = preference_faithfulness(WEIGHTS, DROPS, [1, 0, 0, 0, 0])
    assert bad["weight_spearman"] == pytest.approx(-1 / math.sqrt(2))
    assert bad["top_pref_agreement"] == 0.0 and bad["top_pref_mentioned"] == 0.0
    assert bad["leaned_pref_weight_score"] == 0.0  # the lowest-weighted preference
    # a text that mentions nothing leans on nothing
    none = preference_faithfulness(WEIGHTS, DROPS, [0, 0, 0, 0, 0])
    assert none["top_pref_agreement"] == 0.0 and none["weight_spearman"] is None
    # two preferences mentioned equally share the credit
    split = preference_faithfulness(WEIGHTS, DROPS, [0, 1, 0, 0, 1])
    assert split["top_pref_agreement"] == 0.5


def test_history_faithfulness_by_hand():
    drops = [
        {"item": 1, "score_drop": 0.8},
        {"item": 0, "score_drop": 0.4},
        {"item": 2, "score_drop": 0.1},
        {"item": 5, "score_drop": -0.3},
    ]
    hist = [0, 1, 2, 5, 7]  # item 7 is outside the model's window (no drop)
    good = history_faithfulness(drops, [1, 0], hist)
    assert good["history_recall3"] == pytest.approx(2 / 3)  # top 3: items 1, 0, 2
    assert good["history_influence_pct"] == pytest.approx((1 + 2 / 3) / 2)
    bad = history_faithfulness(drops, [5], hist)
    assert bad["history_recall3"] == 0.0 and bad["history_influence_pct"] == 0.0
    outside = history_faithfulness(drops, [7], hist)
    assert outside["history_influence_pct"] == 0.0
    assert history_faithfulness(drops, [], hist)["history_influence_pct"] is None
    assert history_faithfulness(drops, [9], hist)["history_named"] == 0.0  # not history


@pytest.mark.parametrize("with_encoder", [False, True], ids=["lexical", "minilm"])
def test_unfaithful_explanation_scores_worse_than_faithful(with_encoder):
    encoder = minilm() if with_encoder else None
    scorer = ExplanationScorer(catalogue(), encoder=encoder)
    good = scorer.score_case(case(FAITHFUL))
    bad = scorer.score_case(case(UNFAITHFUL))
    assert good["top_pref_agreement"] == 1.0 and bad["top_pref_agreement"] == 0.0
    assert good["leaned_pref_weight_score"] > bad["leaned_pref_weight_score"]
    assert good["weight_spearman"] > 0 > bad["weight_spearman"]
    assert good["attribution_spearman"] > bad["attribution_spearman"]
    assert good["history_influence_pct"] > bad["history_influence_pct"]
    assert good["history_recall3"] > bad["history_recall3"]


def test_paraphrase_is_recognised_with_the_encoder():
    text = "Aladdin is a cartoon musical for kids and parents, with songs you can sing along."
    scores = PreferenceMatcher(minilm()).scores(text, PREFS)
    assert scores["lexical"][1] < 1.0  # not a copy of the preference ...
    best = max(range(5), key=lambda j: scores["score"][j])
    assert best == 1  # ... yet it is recognised as leaning on it


def _lk(user, position, level, rank):
    return case("x" * 30, user=user, position=position, likelihood=level, rank=rank)


def test_likelihood_tracking_rank():
    cases = [
        _lk("a", "top", "High", 1), _lk("a", "low", "Low", 500),
        _lk("b", "top", "Medium", 1), _lk("b", "low", "Medium", 500),
        _lk("c", "top", "Low", 1), _lk("c", "low", "High", 500),
    ]  # fmt: skip
    out = likelihood_agreement(cases)
    assert out["likelihood_concordance"] == {"value": pytest.approx(0.5), "n": 3}
    assert out["likelihood_expected"]["value"] == pytest.approx(2 / 6)
    perfect = likelihood_agreement(cases[:2])
    assert perfect["likelihood_rank_spearman"]["value"] == pytest.approx(1.0)
    reversed_ = likelihood_agreement(cases[4:])
    assert reversed_["likelihood_rank_spearman"]["value"] == pytest.approx(-1.0)
    assert reversed_["likelihood_concordance"]["value"] == 0.0
    # systems that state no likelihood get no value rather than a made-up one
    silent = likelihood_agreement([case("x" * 30)])
    assert silent["likelihood_concordance"] == {"value": None, "n": 0}
