"""The claim verifier and the boilerplate detector, on hand-made evidence.

Real SmolLM2 replies that the verifier must handle are kept in
``fixtures/smollm2_reasons.json`` and checked in test_real_replies below."""

import json
from pathlib import Path

import pytest

from whyrec.explain.evidence import ItemEvidence, item_facts
from whyrec.explain.grounding import Catalogue
from whyrec.explain.verify import BoilerplateDetector, ClaimVerifier

TITLES = [
    "Jurassic Park (1993)",
    "Star Wars (1977)",
    "Heat (1995)",
    "Toy Story (1995)",
    "Ghost (1990)",
    "Fargo (1996)",
    "The Lion King (1994)",
]
GENRES = [
    "Action|Adventure|Sci-Fi",
    "Action|Adventure|Sci-Fi|War",
    "Action|Crime|Thriller",
    "Animation|Children's|Comedy",
    "Comedy|Romance|Thriller",
    "Crime|Drama|Thriller",
    "Animation|Children's|Musical",
]
PREFS = [
    "Enjoys Action (genre), e.g. Star Wars and Heat.",
    "Enjoys Comedy (genre), e.g. Toy Story and Ghost.",
    "Enjoys Drama (genre), e.g. Fargo.",
]


def evidence(drops=(0.10, 0.06, -0.07)) -> ItemEvidence:
    """Jurassic Park for a user who watched Star Wars, Heat, Toy Story, Ghost and Fargo."""
    hist = [
        {"item": 1, "title": TITLES[1], "position": 0, "score_drop": 0.2, "rank_without": 4,
         "facts": item_facts(GENRES[1])},
        {"item": 2, "title": TITLES[2], "position": 1, "score_drop": 0.1, "rank_without": 3,
         "facts": item_facts(GENRES[2])},
        {"item": 5, "title": TITLES[5], "position": 4, "score_drop": -0.1, "rank_without": 1,
         "facts": item_facts(GENRES[5])},
    ]  # fmt: skip
    prefs = [
        {"index": j, "preference": p, "weight": 1 / 3, "score_drop": d, "rank_without": 2}
        for j, (p, d) in enumerate(zip(PREFS, drops, strict=True))
    ]
    return ItemEvidence(
        item=0, item_id="1", title=TITLES[0], facts=item_facts(GENRES[0]), rank=1, score=2.0,
        preferences=PREFS, preference_source="fallback", lane_weights=[1 / 3] * 3,
        preference_effects=prefs, history_effects=hist, cited_preferences=[0],
        cited_history=[0, 1], shared_facts=["Action", "Adventure", "Sci-Fi"],
    )  # fmt: skip


HISTORY = [1, 2, 3, 4, 5]


@pytest.fixture(scope="module")
def verifier():
    return ClaimVerifier(Catalogue(TITLES, GENRES))


@pytest.mark.parametrize(
    "sentence, problem",
    [
        ("You watched Star Wars (1977), an action film like this one.", None),
        ("Jurassic Park (1993) is an adventure with dinosaurs.", None),
        ("Jurassic Park (1993) is a romantic comedy.", "claims"),
        ("You loved The Lion King (1994), so try this.", "neither the item nor in the history"),
        ("You will love Midnight Garden (1987) too.", "neither the item nor in the history"),
        ("The user's history is made for a family of fans of a niche.", "generic"),
        ("Since you enjoy drama, this is for you.", "claims"),
        ("It suits your taste “Enjoys Drama (genre), e.g. Fargo”.", "does not lower"),
        ("Heat (1995) raised its score; both are action films.", None),
        # SmolLM2-135M, 2026-12-07: a reply cut right after "e.g." (its example lost)
        ("The item is an adventure, e.g.", "unfinished"),
        # demo, 2026-12-07: a history title with the item's year ("Sleeper (1990)")
        ("Heat (1977) is an action film.", "neither the item nor in the history"),
    ],
)
def test_each_claim_is_checked(verifier, sentence, problem):
    check = verifier.check_sentence(sentence, evidence(), HISTORY)
    if problem is None:
        assert check.ok, check.problem
    else:
        assert check.problem and problem in check.problem


def test_a_reason_keeps_only_supported_sentences_and_must_name_its_evidence(verifier):
    ev = evidence()
    v = verifier.verify(
        "You watched Star Wars (1977) and Heat (1995). It is a romance. "
        "The user's history is made for a family of fans of a niche.",
        ev,
        HISTORY,
    )
    assert v.text == "You watched Star Wars (1977) and Heat (1995)." and v.names_evidence
    assert len(v.removed) == 2
    only_item = verifier.verify("Jurassic Park (1993) is a film for you.", ev, HISTORY)
    assert only_item.text == "" and not only_item.names_evidence
    assert "names only the item" in only_item.removed[0].problem


def test_boilerplate_is_found_by_words_and_by_the_encoder():
    from whyrec.embed import get_encoder

    same = "The user's history is made for a family of fans of a niche."
    near = "The user's history is made for families of fans of a niche!"
    by_user = {
        f"u{i}": [same if i % 2 else near, f"Likes films shot in {town}."]
        for i, town in enumerate(["Rome", "Oslo", "Lima", "Kyoto", "Accra", "Perth"])
    }
    plain = BoilerplateDetector().fit(by_user)
    assert plain.is_boilerplate(same) and not plain.is_boilerplate("Likes films shot in Oslo.")
    assert len(plain.users_writing(same)) == 3  # exact words only
    enc = BoilerplateDetector(get_encoder()).fit(by_user)
    assert len(enc.users_writing(same)) == 6  # the near copies too
    assert enc.summary()["boilerplate_sentences"] >= 2


def test_verifier_with_boilerplate_removes_a_sentence_shared_by_many(verifier):
    line = "You watched Star Wars (1977), a classic for everyone."
    det = BoilerplateDetector().fit({f"u{i}": [line] for i in range(4)})
    v = ClaimVerifier(verifier.catalogue, boilerplate=det).verify(line, evidence(), HISTORY)
    assert not v.kept and "boilerplate" in v.removed[0].problem


FIXTURES = Path(__file__).parent / "fixtures" / "smollm2_reasons.json"


@pytest.mark.skipif(not FIXTURES.is_file(), reason="no recorded SmolLM2 replies")
def test_real_smollm2_replies():
    """Replies SmolLM2-135M wrote for the demo's LANE run (bench/reason_fixtures.py),
    with what the verifier concluded when they were recorded and reviewed."""
    data = json.loads(FIXTURES.read_text(encoding="utf-8"))
    cat = Catalogue(data["titles"], data["texts"])
    verifier = ClaimVerifier(cat)
    assert data["cases"]
    for c in data["cases"]:
        ev = ItemEvidence(**c["evidence"])
        v = verifier.verify(c["reply"], ev, c["history"], c["user"])
        assert v.text == c["kept"], c["reply"]
        assert v.names_evidence == c["names_evidence"], c["reply"]
        assert [r.problem for r in v.removed] == [r["problem"] for r in c["removed"]]


def test_titles_named_as_examples_in_a_taste_do_not_make_a_sentence_lean_on_it(verifier):
    # the Action taste names Star Wars and Heat as examples; with a negative drop it must
    # not be "leaned on" by a sentence that names those history items
    ev = evidence(drops=(-0.05, 0.06, 0.02))
    check = verifier.check_sentence(
        "In your history, Star Wars (1977) and Heat (1995) raise its score the most.",
        ev,
        HISTORY,
    )
    assert check.ok and check.preferences == []


def test_a_sentence_end_inside_a_title_does_not_split_it():
    from whyrec.explain.verify import split_sentences

    cat = Catalogue([*TITLES, "To Wong Foo, Thanks for Everything! Julie Newmar (1995)"])
    text = "You watched To Wong Foo, Thanks for Everything! Julie Newmar (1995). It fits."
    assert split_sentences(text, cat) == [
        "You watched To Wong Foo, Thanks for Everything! Julie Newmar (1995).",
        "It fits.",
    ]


# explanations bench, 2026-12-07 (user 39): two LLM tastes that open alike, one quoted
ALIKE = [
    "The user's history is replete with themes of identity, self-discovery, and the "
    "blurred lines between reality and fantasy.",
    "The user's history is replete with themes and subjects that evoke a mix of emotions.",
    "The user enjoys a mix of action, comedy, and mystery, with a focus on identity.",
]


def test_a_quoted_taste_is_matched_whole_and_the_longer_match_wins():
    from whyrec.explain.grounding import quoted_spans

    text = f"A taste of yours raises its score: {ALIKE[0]} In your history, Heat (1995)."
    spans = quoted_spans(text, ALIKE)
    assert [j for _, _, j in spans] == [0]  # not ALIKE[1], which opens with the same words
    a, b, _ = spans[0]
    assert text[a:b] == ALIKE[0].rstrip(".")
    # a taste cut short with an ellipsis is still the quote of that taste
    cut = f"A taste of yours: {ALIKE[1][:60]}… More."
    assert [j for _, _, j in quoted_spans(cut, ALIKE)] == [1]
    # the opening alone, then other words: not a quote
    assert quoted_spans("The user's history is replete with themes of war films.", ALIKE) == []


def test_the_words_of_a_quoted_taste_do_not_count_for_another_taste():
    from whyrec.explain.verify import leaned_preferences

    cat = Catalogue(TITLES, GENRES)
    sentence = f"A taste of yours raises its score: {ALIKE[0]}"
    # ALIKE[2]'s own words (user, enjoys, mix, focus, identity) partly occur in ALIKE[0]
    assert leaned_preferences(sentence, ALIKE, cat) == [0]


def test_a_genre_word_inside_a_quoted_taste_is_not_a_claim_about_the_item():
    cat = Catalogue(TITLES, [*GENRES[:-1], "Animation|Children's|Fantasy"])
    text = f"We suggest Heat (1995). A taste of yours raises its score: {ALIKE[0]}"
    g = cat.ground(text, target=2, history=[1], preferences=ALIKE)
    assert "fantasy" not in g.genres and g.unsupported_genres == []
    # the same word outside the quote is a claim, and Heat is no fantasy
    g = cat.ground("Heat (1995) is a fantasy.", target=2, history=[1], preferences=ALIKE)
    assert g.unsupported_genres == ["fantasy"]
