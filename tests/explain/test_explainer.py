import json

import numpy as np

from whyrec.explain.explainer import LaneExplainer
from whyrec.models.lane import Lane

from .conftest import GOOD, prefs_json


def _fit(ds, texts, pref_dim=12):
    rng = np.random.default_rng(0)
    prefs = rng.normal(size=(ds.n_users, 5, pref_dim)).astype(np.float32)
    m = Lane(dim=16, max_len=10, epochs=3, item_table="id", seed=0)
    m.set_preferences(prefs, [texts] * ds.n_users, ["llm"] * ds.n_users)
    return m.fit(ds, progress=False)


def cot_reply(m=5, likelihood="High", explanation=None):
    return json.dumps(
        {
            "preference_reasons": ["seen in the history"] * m,
            "item_summary": "A film the user may like",
            "fitness": [9, 2, 1, 5, 3][:m],
            "likelihood": likelihood,
            "likelihood_reason": "fits the top preference",
            "explanation": explanation
            or "You enjoy tense crime dramas, and this film is one of them.",
        }
    )


def test_llm_explanation_is_parsed_and_carries_evidence(make_client, tiny_dataset):
    model = _fit(tiny_dataset, GOOD)
    client, backend = make_client([cot_reply()])
    ex = LaneExplainer(model, client).recommend_and_explain(0, k=1)[0]
    assert ex.reason_source == "llm" and ex.reason.startswith("You enjoy")
    assert ex.steps["likelihood"] == "High" and ex.steps["fitness"] == [0.9, 0.2, 0.1, 0.5, 0.3]
    assert np.isclose(sum(ex.weights), 1.0, atol=1e-5)
    assert [p["preference"] for p in ex.preference_effects] == GOOD
    assert ex.rank == 1
    # the prompt shows the weights the model computed
    prompt = backend.calls[0][1]["content"]
    top = int(np.argmax(ex.weights))
    assert f"P{top + 1} (weight {ex.weights[top]:.2f})" in prompt


def test_invalid_explanations_fall_back_to_the_template(make_client, tiny_dataset):
    model = _fit(tiny_dataset, GOOD)
    bad = json.dumps({"explanation": "OK"})
    client, backend = make_client([bad, bad], max_reasks=1)
    ex = LaneExplainer(model, client).explain(5, 0)
    assert ex.reason_source == "template" and ex.problems
    top = GOOD[int(np.argmax(ex.weights))].rstrip(".")
    assert top in ex.reason and ex.title in ex.reason
    assert len(backend.calls) == 2


def test_a_valid_reason_that_names_none_of_its_evidence_shows_the_template(
    make_client, tiny_dataset
):
    model = _fit(tiny_dataset, GOOD)
    client, _ = make_client([cot_reply(explanation="The user recommends this item to the user.")])
    ex = LaneExplainer(model, client).explain(5, 0)
    assert ex.reason_source == "template" and ex.title in ex.reason
    assert ex.problems and "names nothing" in ex.problems[0]


def test_a_failed_baseline_says_why(make_client, tiny_dataset):
    model = _fit(tiny_dataset, GOOD)
    fragment = json.dumps({"explanation": "The user is recommended to the item"})
    good = json.dumps({"explanation": "A tense crime drama, like the ones you watch most."})
    client, _ = make_client([fragment, fragment, good], max_reasks=1)
    explainer = LaneExplainer(model, client)
    text, problems = explainer.baseline_with_problems(5, 0)
    assert text is None and any("no complete sentence" in p for p in problems)
    assert explainer.baseline(5, 0) == "A tense crime drama, like the ones you watch most."


def test_new_history_extracts_preferences_on_the_fly(make_client, tiny_dataset):
    from whyrec.embed import get_encoder
    from whyrec.explain.preferences import PreferenceExtractor

    model = _fit(tiny_dataset, GOOD, pref_dim=384)  # the packaged MiniLM's width
    client, backend = make_client([prefs_json(*GOOD), cot_reply()])
    explainer = LaneExplainer(
        model, client, extractor=PreferenceExtractor(client, m=5), encoder=get_encoder()
    )
    out = explainer.recommend_and_explain(history=[0, 1, 2], k=1)
    assert out[0].preference_source == "llm" and out[0].user is None
    assert out[0].item not in (0, 1, 2)
    assert len(backend.calls) == 2
