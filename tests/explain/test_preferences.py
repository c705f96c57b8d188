import json

import numpy as np
import pytest

from whyrec.explain.fallback import fallback_preferences
from whyrec.explain.preferences import PreferenceExtractor, PreferenceStore
from whyrec.explain.schemas import preference_schema

from .conftest import GOOD, prefs_json


def test_valid_reply_is_used(make_client, tiny_dataset):
    client, backend = make_client([prefs_json(*GOOD)])
    ex = PreferenceExtractor(client, m=5)
    out = ex.extract_dataset(tiny_dataset, [0], progress=False)
    p = out[0]
    assert p.source == "llm" and p.preferences == GOOD and p.fallback_count == 0
    assert json.loads(p.raw_reply)["preferences"] == GOOD
    # only training titles are shown: the user's valid/test items are not in the prompt
    seq_all = tiny_dataset.user_sequences()[0]
    held_out = [tiny_dataset.titles[i] for i in seq_all[-2:]]
    prompt = backend.calls[0][1]["content"]
    assert all(t not in prompt for t in held_out)


def test_copied_titles_are_reasked_then_completed_from_history(make_client, tiny_dataset):
    titles = [tiny_dataset.titles[i] for i in tiny_dataset.user_sequences(("train",))[1]]
    bad = prefs_json(*titles[:5])  # the tiny-model failure mode: echoing titles
    half = prefs_json(GOOD[0], GOOD[1], titles[0], titles[1], GOOD[0])
    client, backend = make_client([bad, half], max_reasks=1)
    ex = PreferenceExtractor(client, m=5)
    p = ex.extract_dataset(tiny_dataset, [1], progress=False)[1]
    assert len(backend.calls) == 2  # asked, then re-asked with the problem fed back
    assert (
        "3+ words" in backend.calls[1][-1]["content"]
        or "repeats" in backend.calls[1][-1]["content"]
    )
    assert p.source == "partial"
    assert p.preferences[:2] == GOOD[:2] and p.fallback_count == 3
    assert len(set(p.preferences)) == 5
    assert p.problems  # why the LLM reply was not used as is
    assert ex.last_report.partial == 1


def test_never_valid_gives_flagged_grounded_fallback(make_client, tiny_dataset):
    client, _ = make_client(["not json at all", '{"preferences": "OK"}'], max_reasks=1)
    ex = PreferenceExtractor(client, m=5)
    u = tiny_dataset.user_index("u2")  # group 2: Sci-Fi/Action titles
    p = ex.extract_dataset(tiny_dataset, [u], progress=False)[u]
    assert p.source == "fallback" and p.fallback_count == 5
    assert len(p.preferences) == 5 and len(set(p.preferences)) == 5
    # grounded: user 2 watches Sci-Fi/Action titles, and the fallback says so
    assert any("Sci-Fi" in s or "Action" in s for s in p.preferences)
    history = {tiny_dataset.titles[i] for i in tiny_dataset.user_sequences(("train",))[u]}
    assert any(t in s for s in p.preferences for t in history)
    assert ex.last_report.fallback == 1


def test_store_reuses_unchanged_users_only(make_client, tiny_dataset, tmp_path):
    store = PreferenceStore(tmp_path / "p.sqlite")
    client, backend = make_client([prefs_json(*GOOD)] * 3)
    ex = PreferenceExtractor(client, m=5, store=store)
    ex.extract_dataset(tiny_dataset, [0, 1], progress=False)
    assert len(backend.calls) == 2 and len(store) == 2
    ex.extract_dataset(tiny_dataset, [0, 1], progress=False)
    assert len(backend.calls) == 2 and ex.last_report.reused == 2
    # a changed window changes user 0's prompt input (history hash): only then re-asked
    ex2 = PreferenceExtractor(client, m=5, store=store, window=3)
    ex2.extract_dataset(tiny_dataset, [0], progress=False)
    assert len(backend.calls) == 3
    # the store survives reopening
    store.close()
    again = PreferenceStore(tmp_path / "p.sqlite")
    assert again.get("u0").preferences == GOOD


def test_schema_rejects_duplicates_and_titles():
    schema = preference_schema(3)
    with pytest.raises(ValueError, match="repeats"):
        schema(
            preferences=[
                "Enjoys old noir films",
                "enjoys OLD noir films!",
                "Likes big loud musicals",
            ]
        )
    with pytest.raises(ValueError, match="3\\+ words"):
        schema(preferences=["Heat (1995)", "Likes a b c", "Likes d e f"])
    ok = schema(
        preferences=["1. Enjoys old noir films", "- Likes big musicals", "Loves quiet dramas"]
    )
    assert ok.preferences[0] == "Enjoys old noir films"


def test_fallback_without_fields_uses_title_clusters():
    titles = ["Alien", "Aliens", "Toy Story", "Toy Story 2", "Heat"]
    vecs = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0.95, 0.05], [0, 0, 1]], float)
    out = fallback_preferences(titles, [""] * 5, 3, vecs)
    assert len(out) == 3 and len(set(out)) == 3
    joined = " ".join(out)
    assert "Alien" in joined and "Toy Story" in joined and "Heat" in joined


def test_fallback_prefers_dominant_genres():
    titles = ["A", "B", "C", "D"]
    fields = ["Drama", "Drama, Crime", "Comedy", "Drama"]
    out = fallback_preferences(titles, fields, 2)
    # Drama dominates; Comedy (recent) outranks Crime (older) through recency weighting
    assert out[0].startswith("Enjoys Drama")
    assert out[1].startswith("Enjoys Comedy")


# ------------------------------------------------------------------ aspects mode
def test_aspects_mode_asks_once_per_aspect_and_keeps_first_sentences(make_client, tiny_dataset):
    replies = [f"{s}. And a second sentence that is dropped." for s in GOOD]
    client, backend = make_client(replies)
    ex = PreferenceExtractor(client, m=5, mode="aspects")
    assert ex.prompt_version == "aspect-v1"
    p = ex.extract_dataset(tiny_dataset, [0], progress=False)[0]
    assert len(backend.calls) == 5  # one call per aspect
    assert p.source == "llm" and p.preferences == [s + "." for s in GOOD]
    assert p.prompt_version == "aspect-v1"
    assert json.loads(p.raw_reply) == replies  # every raw reply is kept
    # the history goes first and the aspect last (a local model reuses the prefix);
    # genres travel with the titles as data
    first, second = backend.calls[0][1]["content"], backend.calls[1][1]["content"]
    data_end = first.index("</data>")
    assert first[:data_end] == second[:data_end]
    assert "[Crime, Drama]" in first[:data_end]
    assert first.rstrip().endswith("for this user.")


def test_aspects_mode_rejects_loops_copies_and_invented_titles(make_client, tiny_dataset):
    u = 1
    titles = [tiny_dataset.titles[i] for i in tiny_dataset.user_sequences(("train",))[u]]
    replies = [
        GOOD[1],
        "The user is a nostalgic and nostalgic, with a dry and nostalgic tone.",
        titles[0],
        'Loves the film "The Kingkala of Nowhere" above all.',
        GOOD[1],  # repeats the first sentence
    ]
    client, _ = make_client(replies)
    ex = PreferenceExtractor(client, m=5, mode="aspects")
    p = ex.extract_dataset(tiny_dataset, [u], progress=False)[u]
    assert p.source == "partial" and p.llm_count == 1 and p.preferences[0] == GOOD[1]
    assert len(p.preferences) == 5 and len(set(p.preferences)) == 5
    joined = " ".join(p.problems)
    for why in ("repeats the word", "copies a history title", "not in the history", "earlier"):
        assert why in joined, why


def test_sampled_extraction_gives_the_rest_grounded_fallback(make_client, tiny_dataset):
    client, backend = make_client([prefs_json(*GOOD)])
    ex = PreferenceExtractor(client, m=5)
    out = ex.extract_dataset(tiny_dataset, [0, 1, 2], ask=[1], progress=False)
    assert len(backend.calls) == 1 and sorted(out) == [0, 1, 2]
    assert out[1].source == "llm"
    assert out[0].source == out[2].source == "fallback"
    assert out[0].problems == ["not in the LLM sample"] and out[0].fallback_count == 5
    assert ex.last_report.users == 1  # the report covers the users the LLM was asked about


def test_unknown_mode_is_a_config_error(make_client):
    from whyrec.errors import ConfigError

    client, _ = make_client([])
    with pytest.raises(ConfigError, match="mode"):
        PreferenceExtractor(client, mode="chatty")
    with pytest.raises(ConfigError, match="at most"):
        PreferenceExtractor(client, m=50, mode="aspects")


def test_auto_mode_picks_json_for_api_backends(make_client):
    client, _ = make_client([])
    assert PreferenceExtractor(client).mode == "json"  # the fake backend has no GGUF file


def test_invented_dated_titles_are_rejected_but_history_titles_pass():
    from whyrec.explain.schemas import invented_title_problem

    history = ["Toy Story (1995)", "Aladdin (1992)"]
    assert "Nightmare On Ice" in invented_title_problem("Nightmare On Ice (1994)", history)
    assert invented_title_problem("Loves films like Toy Story (1995) and more", history) is None
    assert invented_title_problem('Enjoys "Aladdin" and other musicals', history) is None
    assert invented_title_problem('Enjoys "Space Pirates" above all', history) is not None


def test_a_reply_cut_by_the_length_cap_ends_at_its_last_sentence():
    from whyrec.explain.schemas import trim_to_sentence

    assert trim_to_sentence("You will like it. It has songs and a cast that") == "You will like it."
    assert trim_to_sentence("Complete sentence here.") == "Complete sentence here."
    assert trim_to_sentence("no sentence end at all") == "no sentence end at all"
