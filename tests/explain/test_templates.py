"""The template: who shares the item's facts, and evidence weighed in words, largest first."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from whyrec.explain.templates import history_sentence

SLEEPER = {"title": "Sleeper (1973)", "facts": ["Comedy", "Sci-Fi"]}
LEGENDS = {"title": "Legends of the Fall (1994)", "facts": ["Drama", "Romance"]}


def test_only_the_items_that_share_a_fact_are_said_to_share_it():
    # demo, 2026-12-07: "Sleeper and Legends of the Fall … they share its Comedy genre",
    # but only Sleeper is a comedy
    ev = SimpleNamespace(shared_facts=["Comedy"], share=lambda e: 1.0)
    text = history_sentence(ev, [SLEEPER, LEGENDS])
    assert text.endswith("; Sleeper (1973) shares its Comedy genre.")
    assert "they share" not in text


def test_all_share_and_one_item():
    ev = SimpleNamespace(shared_facts=["Comedy"], share=lambda e: 1.0)
    both = [SLEEPER, {"title": "Dave (1993)", "facts": ["Comedy", "Romance"]}]
    assert history_sentence(ev, both).endswith("; they share its Comedy genre.")
    assert history_sentence(ev, [SLEEPER]).endswith("; it shares its Comedy genre.")
    # each shares a different fact: a true statement about one of them
    ev = SimpleNamespace(shared_facts=["Comedy", "Drama"], share=lambda e: 1.0)
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
    ev = SimpleNamespace(rank=1, share=lambda e: 1.0)
    text = preference_sentence(ev, {"preference": pref, "rank_without": 1})
    assert text.endswith(pref) and "…" not in text


TITLES = ["Ghost (1990)", "Sleeper (1973)", "Heat (1995)"]
GENRES = ["Comedy|Romance|Thriller", "Comedy|Sci-Fi", "Action|Crime"]


def _evidence(
    taste_drop,
    history_drops,
    taste="You pick Comedy titles more often than most users",
    titles=TITLES,
):
    from whyrec.explain.evidence import select_evidence

    att = SimpleNamespace(
        item=0,
        rank=1,
        score=3.0,
        weights=[0.5, 0.5],
        preferences=[
            {"index": 0, "weight": 0.5, "score_drop": taste_drop, "rank_without": 1},
            {"index": 1, "weight": 0.5, "score_drop": 0.4, "rank_without": 2},
        ],
        history=[
            {"item": i + 1, "position": i, "score_drop": d, "rank_without": 3}
            for i, d in enumerate(history_drops)
        ],
    )
    return select_evidence(
        att,
        item_id="g",
        title=titles[0],
        titles=titles,
        item_texts=GENRES,
        preferences=[taste, "You pick Horror titles more often than most users"],
        preference_source="fallback",
        taste_facts=[["genre:Comedy"], ["genre:Horror"]],
        fact_keys=["genre:Comedy", "genre:Romance", "genre:Thriller", "decade:1990s"],
    )


def test_a_reason_leads_with_its_largest_effect_and_says_how_much_each_matters():
    """Demo user 16: Sleeper (+1.19) put the item first; the comedy taste adds a little."""
    from whyrec.explain.templates import template_reason

    ev = _evidence(0.15, [1.19])
    # the horror taste lowers... nothing here: it names no fact of Ghost, so it is not cited
    assert ev.cited_preferences == [0]
    assert {"index": 1, "why": "names no fact of the item"} in ev.uncited_tastes
    text = template_reason(ev)
    lead = text.index("You are seeing it mostly because you watched Sleeper (1973)")
    taste = text.index("Your taste for Comedy adds a little")
    assert lead < taste
    assert "Horror" not in text and "the user" not in text.lower()


def test_a_strong_taste_comes_first_and_an_immaterial_one_is_not_cited():
    from whyrec.explain.templates import template_reason

    strong = template_reason(_evidence(2.0, [1.0]))
    assert strong.index("mostly because of your taste for Comedy") < strong.index("Sleeper")
    assert "Sleeper (1973) from your history also raises it strongly" in strong
    weak = _evidence(0.05, [1.0])  # 5% of the top history drop: immaterial
    assert weak.cited_preferences == []
    assert {"index": 0, "why": "immaterial"} in weak.uncited_tastes
    assert "taste" not in template_reason(weak)


def test_titles_are_named_as_a_reader_says_them_and_still_verify():
    """Demo user 450, 2026-12-07: "mostly because you watched Devil's Own, The (1997)".
    The catalogue keeps MovieLens' trailing articles; a reason puts them in front, and
    the claim verifier still finds the titles it names in the user's history."""
    from whyrec.explain.grounding import Catalogue
    from whyrec.explain.templates import template_reason
    from whyrec.explain.verify import ClaimVerifier

    titles = ["Fish Called Wanda, A (1988)", "Devil's Own, The (1997)", "Boot, Das (1981)"]
    ev = _evidence(0.15, [1.19, 1.1], titles=titles)
    text = template_reason(ev)
    assert text.startswith("We suggest A Fish Called Wanda (1988)")
    assert "you watched The Devil's Own (1997) and Das Boot (1981)" in text
    assert ", The" not in text and ", A " not in text and ", Das" not in text
    checked = ClaimVerifier(Catalogue(titles, GENRES)).verify(text, ev, [1, 2])
    assert checked.names_evidence
    assert not [r for r in checked.removed if "history" in (r.problem or "")]
    assert "The Devil's Own (1997)" in checked.text


SPOKEN = json.loads((Path(__file__).parent / "fixtures" / "spoken_titles.json").read_text())


@pytest.mark.parametrize("title, spoken", SPOKEN["cases"])
def test_spoken_title(title, spoken):
    from whyrec.explain.grounding import spoken_title

    assert spoken_title(title) == spoken


@pytest.mark.parametrize("seed_title", ["Devil's Own, The (1997)", "x"])
def test_spoken_title_only_moves_the_article(seed_title):
    """Untrusted titles: whatever the text, the spoken form keeps every character but the
    comma before the moved article (spaces aside)."""
    from collections import Counter

    from hypothesis import given
    from hypothesis import strategies as st

    from whyrec.explain.grounding import spoken_title

    @given(st.text(alphabet=st.sampled_from(list("ab ,()'TheLAn\t\u202e")), max_size=40))
    def check(body):
        for text in (body, body + seed_title, seed_title + body):
            out = spoken_title(text)
            if out == text:
                continue
            seen = Counter(c for c in out if not c.isspace())
            assert seen + Counter(",") == Counter(c for c in text if not c.isspace())

    check()
