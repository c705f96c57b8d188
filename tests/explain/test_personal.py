"""LLM tastes are kept only when specific (they name something in the user's history) and
personal (not one of a paraphrase cluster written for many users)."""

import json
from pathlib import Path

import pandas as pd
import pytest

from whyrec.data import RawData, build_dataset
from whyrec.explain.personal import check_tastes, is_specific, paraphrase_clusters
from whyrec.explain.preferences import UserPreferences

# one boilerplate idea in several wordings (SmolLM2 wrote these for users 71, 165, 478, 766)
LOVE_LOSS = [
    "The user's history is replete with themes of love, loss, redemption, and the blurred "
    "lines between right and wrong.",
    "The user's history is replete with themes of love, loss and redemption.",
    "The user's history is full of themes of love, loss, and redemption.",
    "Themes of love, loss, redemption and the lines between right and wrong.",
]


def _prefs(ds, sentences_by_user, m=3):
    out = {}
    for u in range(ds.n_users):
        own = sentences_by_user(u)
        out[u] = UserPreferences(
            user=str(u), preferences=own + [f"Grounded filler {k} for user {u}." for k in
                                            range(m - len(own))],
            source="llm" if len(own) == m else "partial", model="scripted",
            prompt_version="t", history_hash="h", fallback_count=m - len(own),
        )  # fmt: skip
    return out


def _group(ds, u):
    """tiny_dataset: user "uK" watches within genre group K % 3."""
    return int(ds.users.loc[u, "user_id"][1:]) % 3


def _group_genre(ds, u):
    return ["crime dramas", "animated films", "sci-fi action"][_group(ds, u)]


def test_paraphrases_of_one_idea_form_one_cluster_across_users():
    sentences = [(str(u), s) for u, s in enumerate(LOVE_LOSS)]
    sentences += [("9", "Loves westerns with John Wayne"), ("8", "Enjoys 1950s musicals")]
    labels = paraphrase_clusters(sentences)
    assert len(set(labels[:4])) == 1
    assert labels[4] != labels[0] and labels[5] != labels[0] and labels[4] != labels[5]


def test_a_paraphrase_cluster_is_replaced_however_it_is_worded(tiny_dataset):
    prefs = _prefs(
        tiny_dataset,
        lambda u: [
            LOVE_LOSS[u % 4],
            f"Likes {_group_genre(tiny_dataset, u)} like Film {_group(tiny_dataset, u) * 10 + 1}",
        ],
    )
    summary = check_tastes(prefs, tiny_dataset, m=3, window=50)
    n = tiny_dataset.n_users
    assert summary["llm_sentences"] == 2 * n
    assert summary["replaced_boilerplate"] >= n  # every love-and-loss variant
    for p in prefs.values():
        assert not any("love" in s for s in p.preferences) and len(p.preferences) == 3
        assert any("paraphrase cluster" in q for q in p.problems)


def test_specific_personal_tastes_stay_and_vague_ones_go(tiny_dataset):
    words = "ant bee cat dog eel fox gnu hen ibis jay kiwi lynx mole newt owl pug".split()
    words += "quail rat seal toad urchin vole wasp yak zebu asp boa cod dace emu".split()

    def sentences(u):
        group = _group(tiny_dataset, u)
        own_genre = ["crime", "animation", "sci-fi"][group]
        wrong = ["westerns", "horror", "musicals"][group]  # not in anyone's history
        return [
            f"Watches {own_genre} titles with a {words[u]} in them",
            f"Likes films about the {words[u]}",  # names nothing checkable
            f"Enjoys {wrong} about the {words[u]}",  # names what the history lacks
        ]

    prefs = _prefs(tiny_dataset, sentences)
    summary = check_tastes(prefs, tiny_dataset, m=3, window=50, similarity=0.99)
    n = tiny_dataset.n_users
    assert summary["replaced_unspecific"] == 2 * n and summary["replaced_boilerplate"] == 0
    assert summary["specific_share"] == round(1 / 3, 3)
    for u, p in prefs.items():
        assert p.preferences[0] == sentences(u)[0] and p.llm_count == 1
        assert sum("names nothing checkable" in q for q in p.problems) == 2


def test_specificity_reads_genres_decades_and_titles(tiny_dataset):
    from whyrec.data.facts import ItemFacts

    facts = ItemFacts.from_dataset(tiny_dataset)
    hist = [0, 1, 2]  # Crime, Drama films of 1990-1992
    have = facts.of_items(hist)
    titles = [tiny_dataset.titles[i] for i in hist]
    assert is_specific("Loves tense crime stories", facts, have, titles)
    assert is_specific("Mostly films from the early 90s", facts, have, titles)
    assert is_specific("Keeps coming back to Film 1", facts, have, titles)
    assert not is_specific("Enjoys the 2010s", facts, have, titles)
    assert not is_specific("Appreciates complex characters", facts, have, titles)
    assert not is_specific("Enjoys animated films", facts, have, titles)


def test_replacements_are_distinctive_grounded_tastes(tiny_dataset):
    from whyrec.explain.pipeline import dataset_baseline

    prefs = _prefs(tiny_dataset, lambda u: ["Appreciates complex characters"])
    check_tastes(prefs, tiny_dataset, m=3, window=50, baseline=dataset_baseline(tiny_dataset))
    for u, p in prefs.items():
        assert p.source == "fallback" and p.llm_count == 0
        # what this user picks more than most: their group's genres, never another group's
        own = [("Crime", "Drama"), ("Animation", "Children's"), ("Sci-Fi", "Action")]
        lead = p.preferences[0]
        assert lead.startswith("You pick ") and "more often than most users" in lead
        assert any(g in lead for g in own[_group(tiny_dataset, u)])


def test_kept_llm_tastes_speak_to_the_user():
    from whyrec.explain.personal import second_person

    assert second_person("The user enjoys a mix of horror and comedy.") == (
        "You enjoy a mix of horror and comedy."
    )
    assert second_person("The user's history is full of westerns.") == (
        "Your history is full of westerns."
    )
    assert second_person("The user watches 1950s musicals") == "You watch 1950s musicals"
    assert second_person("The user is drawn to noir") == "You are drawn to noir"


# ----------------------------------------------------------- real SmolLM2 replies
@pytest.mark.slow
def test_real_smollm2_tastes_are_checked_with_the_real_encoder():
    """24 users' replies from the packaged SmolLM2-135M (five aspect calls each, recorded
    on MovieLens-100k) through the extraction-time checks with the packaged MiniLM: the
    boilerplate SmolLM2 writes for everyone ("replete with themes of …", "made for a
    family of …", "nostalgic and nostalgic …") is never kept, and every kept taste names
    a genre, decade or title of that user's own history."""
    from whyrec.data.facts import ItemFacts
    from whyrec.embed import get_encoder

    fx = json.loads((Path(__file__).parent / "fixtures" / "smollm2_tastes.json").read_text())
    items: dict[str, str] = {}
    rows = []
    for x in fx["users"]:
        for t, (title, genres) in enumerate(x["history"]):
            items.setdefault(title, genres)
            rows.append((x["user"], title, t))
    ids = {title: f"i{k}" for k, title in enumerate(items)}
    ds = build_dataset(
        RawData(
            pd.DataFrame(
                [(u, ids[t], ts) for u, t, ts in rows], columns=["user_id", "item_id", "timestamp"]
            ),
            pd.DataFrame(
                {
                    "item_id": list(ids.values()),
                    "title": list(items),
                    "genres": list(items.values()),
                }
            ),
        ),
        name="smollm2-fixture",
        split="none",
    )
    by_user = {x["user"]: x["sentences"] for x in fx["users"]}
    prefs = {}
    for u in range(ds.n_users):
        own = by_user[str(ds.users.loc[u, "user_id"])]
        prefs[u] = UserPreferences(
            user=str(u), preferences=list(own), source="llm", model=fx["model"],
            prompt_version=fx["prompt_version"], history_hash="h", fallback_count=0,
        )  # fmt: skip
    written = sum(len(p.preferences) for p in prefs.values())
    summary = check_tastes(prefs, ds, get_encoder(), m=5, window=20)
    assert summary["llm_sentences"] == written == 120
    # measured 2026-12-07: 58 of 120 name something of the history; 6 clusters of 3+ users
    assert 0.3 <= summary["specific_share"] <= 0.7
    assert summary["paraphrase_clusters"] >= 4
    assert summary["llm_sentences_kept"] <= 12
    facts = ItemFacts.from_dataset(ds)
    seqs = ds.user_sequences(("train",))
    for u, p in prefs.items():
        for s in p.preferences[: p.llm_count]:
            low = s.lower()
            assert not any(
                b in low
                for b in (
                    "replete with themes",
                    "made for a family of adults",
                    "nostalgic and nostalgic",
                )
            ), s
            hist = [int(i) for i in seqs[u][-20:]]
            assert is_specific(s, facts, facts.of_items(hist), [ds.titles[i] for i in hist]), s
            assert not low.startswith("the user"), s  # said to the user
        assert len(p.preferences) == 5
