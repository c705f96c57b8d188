"""The explanation pipeline: item-specific evidence, plan/finish, verification, fallback.

A scripted fake LLM stands in for parsing and fallback logic; the real model runs in
test_real_model.py."""

import json

import numpy as np

from whyrec.explain.evidence import MATERIAL_SHARE
from whyrec.explain.explainer import ExplanationPipeline, LaneExplainer
from whyrec.models.lane import Lane

from .conftest import GOOD, prefs_json


def _fit(ds, texts, pref_dim=12):
    rng = np.random.default_rng(0)
    prefs = rng.normal(size=(ds.n_users, 5, pref_dim)).astype(np.float32)
    m = Lane(dim=16, max_len=10, epochs=3, item_table="id", seed=0)
    m.set_preferences(prefs, [texts] * ds.n_users, ["llm"] * ds.n_users)
    return m.fit(ds, progress=False)


def cot_reply(m, explanation, likelihood="High"):
    return json.dumps(
        {
            "preference_reasons": ["seen in the history"] * m,
            "item_summary": "A film the user may like",
            "fitness": [9, 2, 1, 5, 3][:m],
            "likelihood": likelihood,
            "likelihood_reason": "fits the top preference",
            "explanation": explanation,
        }
    )


def _pipeline(model, client, ds):
    return ExplanationPipeline(model, client, item_texts=ds.items["genres"].tolist())


def _plan(model, ds):
    p = _pipeline(model, None, ds)
    item = int(model.recommend(0, k=1).items[0])
    return p, p.plan(p.subject(0), item)


def test_evidence_is_item_specific_and_never_cites_a_preference_that_lowers_it(tiny_dataset):
    model = _fit(tiny_dataset, GOOD)
    p = _pipeline(model, None, tiny_dataset)
    subject = p.subject(0)
    for item in model.recommend(0, k=5).items:
        ev = p.evidence(subject, int(item))
        drops = [e["score_drop"] for e in ev.preference_effects]
        top_hist = max((h["score_drop"] for h in ev.history_effects), default=0.0)
        # citable: lowers the item, names a fact the item has, and is material
        eligible = [
            j
            for j, e in enumerate(ev.preference_effects)
            if e["score_drop"] > 0
            and e["matching"]
            and (top_hist <= 0 or e["score_drop"] >= MATERIAL_SHARE * top_hist)
        ]
        if eligible:
            assert ev.cited_preferences[0] == max(eligible, key=lambda j: drops[j])
        assert set(ev.cited_preferences) <= set(eligible)
        assert all(drops[j] > 0 for j in ev.cited_preferences)
        # every taste that lowers the item but is not cited says why
        passed_over = {t["index"] for t in ev.uncited_tastes}
        assert {j for j in range(len(drops)) if drops[j] > 0} - set(eligible) == passed_over
        for j in ev.cited_preferences:
            assert set(ev.preference_effects[j]["matching"]) <= set(ev.fact_keys)
        assert all(ev.history_effects[i]["score_drop"] > 0 for i in ev.cited_history)
        # LANE's weights are user-level: identical for every item of the user
        assert np.allclose(
            ev.lane_weights, p.evidence(subject, int(model.recommend(0, k=1).items[0])).lane_weights
        )
        # shared facts are facts of the item
        assert set(ev.shared_facts) <= set(ev.facts)


def test_the_template_cites_the_item_specific_evidence_not_the_weights(tiny_dataset):
    model = _fit(tiny_dataset, GOOD)
    p, plan = _plan(model, tiny_dataset)
    ex, ev = plan.fallback, plan.evidence
    assert ex.reason_source == "template" and ex.title in ex.reason
    for j in ev.cited_preferences:
        assert GOOD[j] in ex.reason
    for j in set(range(5)) - set(ev.cited_preferences):
        assert GOOD[j] not in ex.reason  # uncited tastes (whatever their weight) are not reasons
    for h in ev.cited_history_effects():
        assert h["title"] in ex.reason
    assert ex.cited["history"] == [h["item"] for h in ev.cited_history_effects()]
    assert "%" not in ex.reason  # no user-level weight presented as the item's reason


def test_llm_reason_is_verified_and_the_prompt_carries_item_evidence(make_client, tiny_dataset):
    model = _fit(tiny_dataset, GOOD)
    p, plan = _plan(model, tiny_dataset)
    hist_title = plan.evidence.cited_history_effects()[0]["title"]
    m = len(plan.evidence.cited_preferences)
    reply = cot_reply(
        m,
        f"You watched {hist_title}, which raised its score. "
        "The user's history is made for a family of fans of a niche. "
        "You will love Midnight Garden Party (1987).",
    )
    client, backend = make_client([reply])
    pipe = _pipeline(model, client, tiny_dataset)
    ex = pipe.explain(plan.evidence.item, 0)
    written = f"You watched {hist_title}, which raised its score."
    # the cited tastes (and any other cited history item) the LLM left out are added in
    # the template's words, so the reason shown names all of the item's cited evidence
    assert ex.reason_source == "llm+template" and ex.completed_sentences
    assert ex.reason == " ".join([written, *ex.completed_sentences])
    for j in plan.evidence.cited_preferences:
        assert GOOD[j].rstrip(". ") in ex.reason
    for h in plan.evidence.cited_history_effects():
        assert h["title"] in ex.reason
    assert hist_title not in " ".join(ex.completed_sentences)  # named by the LLM already
    problems = " | ".join(s["problem"] for s in ex.removed_sentences)
    assert "generic" in problems and "neither the item nor in the history" in problems
    assert ex.steps["likelihood"] == "High"
    prompt = backend.calls[0][1]["content"]
    assert hist_title in prompt and "weight" not in prompt
    for j in plan.evidence.cited_preferences:
        assert GOOD[j] in prompt


def test_unsupported_genre_and_uncited_taste_sentences_are_removed(make_client, tiny_dataset):
    model = _fit(tiny_dataset, GOOD)
    p, plan = _plan(model, tiny_dataset)
    ev = plan.evidence
    hist_title = ev.cited_history_effects()[0]["title"]
    claims = p.verifier.catalogue.genre_claims
    negative = [
        e for e in ev.preference_effects if e["score_drop"] <= 0 and not claims(e["preference"])
    ]
    groups = {"crime": "a crime drama", "animation": "an animated film", "sci-fi": "a sci-fi film"}
    wrong = next(
        v for k, v in groups.items() if k not in {f.lower() for f in ev.facts}
        and k not in {f.lower() for h in ev.history_effects for f in h["facts"]}
    )  # fmt: skip
    text = f"{ev.title} is {wrong}. You watched {hist_title} before."
    if negative:
        text += f" It matches your taste: {negative[0]['preference'].lower()}."
    client, _ = make_client([cot_reply(len(ev.cited_preferences), text)])
    ex = _pipeline(model, client, tiny_dataset).explain(ev.item, 0)
    assert ex.reason == " ".join([f"You watched {hist_title} before.", *ex.completed_sentences])
    problems = [s["problem"] for s in ex.removed_sentences]
    assert any("claims" in q for q in problems)
    if negative:
        assert any("does not lower this item's score" in q for q in problems)


def test_a_reason_left_without_its_evidence_becomes_the_flagged_template(make_client, tiny_dataset):
    model = _fit(tiny_dataset, GOOD)
    p, plan = _plan(model, tiny_dataset)
    m = len(plan.evidence.cited_preferences)
    client, _ = make_client([cot_reply(m, "The user recommends this item to the user.")])
    ex = _pipeline(model, client, tiny_dataset).explain(plan.evidence.item, 0)
    assert ex.reason_source == "template" and ex.reason == plan.fallback.reason
    assert any("names this item's evidence" in q for q in ex.problems)


def test_invalid_replies_fall_back_to_the_template(make_client, tiny_dataset):
    model = _fit(tiny_dataset, GOOD)
    bad = json.dumps({"explanation": "OK"})
    client, backend = make_client([bad, bad], max_reasks=1)
    ex = _pipeline(model, client, tiny_dataset).explain(5, 0)
    assert ex.reason_source == "template" and ex.problems and ex.title in ex.reason
    assert len(backend.calls) == 2


def test_finish_is_pure_and_plan_is_repeatable(make_client, tiny_dataset):
    from whyrec.llm.errors import LLMOutputError

    model = _fit(tiny_dataset, GOOD)
    client, _ = make_client([])
    pipe = _pipeline(model, client, tiny_dataset)
    item = int(model.recommend(0, k=1).items[0])
    a, b = pipe.plan(pipe.subject(0), item), pipe.plan(pipe.subject(0), item)
    assert a.requests_json() == b.requests_json() and a.fallback == b.fallback
    err = LLMOutputError("no valid reply", text="{}", problems=["missing field"], attempts=2)
    first, second = pipe.finish(a, err), pipe.finish(a, err)
    assert first == second and first.reason_source == "template"
    assert first.problems == ["missing field"]
    assert pipe.finish(a, None) == a.fallback


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

    def reply(messages):
        content = messages[-1]["content"]
        title = next(t for t in (f"Film {k} ({1990 + k})" for k in (0, 1, 2)) if t in content)
        return cot_reply(content.count("without it, rank"), f"You watched {title} recently.")

    client, backend = make_client([prefs_json(*GOOD), reply])
    explainer = ExplanationPipeline(
        model, client, extractor=PreferenceExtractor(client, m=5), encoder=get_encoder(),
        item_texts=tiny_dataset.items["genres"].tolist(),
    )  # fmt: skip
    out = explainer.recommend_and_explain(history=[0, 1, 2], k=1)
    assert out[0].preference_source == "llm" and out[0].user is None
    assert out[0].item not in (0, 1, 2)
    assert len(backend.calls) == 2


def test_non_lane_models_are_explained_from_history_evidence(tiny_dataset):
    from whyrec.models import create_model

    model = create_model("sasrec", dim=16, max_len=10, epochs=2, seed=0).fit(
        tiny_dataset, progress=False
    )
    p = _pipeline(model, None, tiny_dataset)
    [ex] = p.recommend_and_explain(0, k=1)
    assert ex.weights == [] and ex.preference_effects == [] and ex.history_effects
    assert ex.reason_source == "template" and ex.title in ex.reason


def test_sentences_mode_asks_one_sentence_per_cited_piece_and_verifies_them(
    make_client, tiny_dataset
):
    import re

    model = _fit(tiny_dataset, GOOD)
    item = int(model.recommend(0, k=1).items[0])

    def reply(messages):
        watched = re.search(r'<data name="watched">\n(.*)\n</data>', messages[-1]["content"])
        if watched:  # a history piece: name it, then ramble into an invented title
            title = json.loads(watched.group(1))
            return f"You watched {title}, so try this. Also see Moon Garden (1987)."
        return "The user's history is made for a family of fans of a niche."

    client, backend = make_client([reply] * 6)
    pipe = ExplanationPipeline(
        model, client, item_texts=tiny_dataset.items["genres"].tolist(), mode="sentences"
    )
    plan = pipe.plan(pipe.subject(0), item)
    ev = plan.evidence
    assert plan.kind == "sentences"
    assert len(plan.requests) == len(ev.cited_history) + len(ev.cited_preferences)
    ex = pipe.finish(plan, [pipe.client.complete(r.messages) for r in plan.requests])
    assert len(backend.calls) == len(plan.requests)
    # each reply's first sentence is kept; the generic one is removed by the verifier
    titles = [h["title"] for h in ev.cited_history_effects()]
    written = " ".join(f"You watched {t}, so try this." for t in titles)
    if ev.cited_preferences:  # their generic sentences were removed: template words
        assert ex.reason_source == "llm+template"
        assert ex.reason == " ".join([written, *ex.completed_sentences])
    else:
        assert ex.reason_source == "llm" and ex.reason == written
    assert all("Moon Garden" not in s["sentence"] for s in ex.removed_sentences)
    if ev.cited_preferences:
        assert any("generic" in s["problem"] for s in ex.removed_sentences)


def test_completion_only_adds_what_the_llm_left_out(make_client, tiny_dataset):
    model = _fit(tiny_dataset, GOOD)
    p = _pipeline(model, None, tiny_dataset)
    # an item whose evidence cites both a taste and history items
    user, ev = next(
        (u, ev)
        for u in range(tiny_dataset.n_users)
        for item in model.recommend(u, k=3).items
        if (ev := p.evidence(p.subject(u), int(item))).cited_preferences and ev.cited_history
    )
    titles = [h["title"] for h in ev.cited_history_effects()]
    tastes = [GOOD[j].rstrip(". ") for j in ev.cited_preferences]
    # varied wording: a repeated sentence frame reads as a loop to the reply validator
    frames_h = ["You watched {}, which raised its score.", "{} from your history also fits."]
    frames_p = ["It suits your taste: {}.", "Another of your tastes agrees: {}."]
    full = " ".join(
        [f.format(t) for f, t in zip(frames_h, titles, strict=False)]
        + [f.format(t) for f, t in zip(frames_p, tastes, strict=False)]
    )
    assert len(titles) <= 2 and len(tastes) <= 2
    client, _ = make_client([cot_reply(len(tastes), full)] * 2)
    ex = _pipeline(model, client, tiny_dataset).explain(ev.item, user)
    assert ex.completed_sentences == [], (ex.reason, ex.removed_sentences)
    assert ex.reason_source == "llm" and ex.reason == full
    # the option off: the verified LLM text alone, even when it leaves evidence out
    client, _ = make_client([cot_reply(len(tastes), f"You watched {titles[0]}, which fits.")])
    pipe = ExplanationPipeline(
        model, client, item_texts=tiny_dataset.items["genres"].tolist(), complete_reasons=False
    )
    ex = pipe.explain(ev.item, user)
    assert ex.reason_source == "llm" and ex.reason == f"You watched {titles[0]}, which fits."
    assert ex.completed_sentences == []
