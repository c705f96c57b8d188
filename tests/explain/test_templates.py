"""The template's history sentence says who shares the item's facts."""

from types import SimpleNamespace

from whyrec.explain.templates import history_sentence

SLEEPER = {"title": "Sleeper (1973)", "facts": ["Comedy", "Sci-Fi"]}
LEGENDS = {"title": "Legends of the Fall (1994)", "facts": ["Drama", "Romance"]}


def test_only_the_items_that_share_a_fact_are_said_to_share_it():
    # demo, 2026-12-07: "Sleeper and Legends of the Fall … they share its Comedy genre",
    # but only Sleeper is a comedy
    ev = SimpleNamespace(shared_facts=["Comedy"])
    text = history_sentence(ev, [SLEEPER, LEGENDS])
    assert text.endswith("; Sleeper (1973) shares its Comedy genre.")
    assert "they share" not in text


def test_all_share_and_one_item():
    ev = SimpleNamespace(shared_facts=["Comedy"])
    both = [SLEEPER, {"title": "Dave (1993)", "facts": ["Comedy", "Romance"]}]
    assert history_sentence(ev, both).endswith("; they share its Comedy genre.")
    assert history_sentence(ev, [SLEEPER]).endswith("; it shares its Comedy genre.")
    # each shares a different fact: a true statement about one of them
    ev = SimpleNamespace(shared_facts=["Comedy", "Drama"])
    assert history_sentence(ev, [SLEEPER, LEGENDS]).endswith(
        "; Sleeper (1973) shares its Comedy genre."
    )


def test_a_validated_preference_is_quoted_whole():
    # explanations bench, 2026-12-07: a 150-character preference was cut at 120
    # characters and the reason read "… with a focus…."
    from whyrec.explain.schemas import MAX_PREFERENCE_CHARS
    from whyrec.explain.templates import preference_sentence

    pref = (
        "The user's history is replete with themes and subjects that continue to evoke a "
        "mix of emotions and ideas, with a focus on the darker aspects of human nature."
    )
    assert len(pref) <= MAX_PREFERENCE_CHARS
    ev = SimpleNamespace(rank=1)
    text = preference_sentence(ev, {"preference": pref, "rank_without": 1})
    assert text.endswith(pref) and "…" not in text
