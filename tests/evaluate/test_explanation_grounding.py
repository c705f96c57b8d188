"""Grounding: title mentions and genre claims, on hand-made texts with known answers."""

import pytest

from whyrec.evaluate.explanations import Catalogue, ExplanationScorer
from whyrec.explain.grounding import display_title, title_key

from .explanation_helpers import FAITHFUL, HALLUCINATING, TITLES, case, catalogue


def test_title_forms():
    assert display_title("Lion King, The (1994)") == "The Lion King"
    assert title_key("Lion King, The (1994)") == "lion king"
    assert title_key("The Lion King") == "lion king"
    assert (
        display_title("City of Lost Children, The (Cité des enfants perdus, La) (1995)")
        == "The City of Lost Children"
    )
    assert display_title("Appartement, L' (1996)") == "L'Appartement"


def test_grounded_text_names_only_history_and_target():
    g = catalogue().ground(FAITHFUL, target=3, history=[0, 1, 2, 5], preferences=[])
    found = {(m.item, m.status) for m in g.mentions}
    assert found == {(3, "target"), (1, "history"), (0, "history")}
    assert g.metrics()["invented_titles"] == 0.0
    assert g.metrics()["title_grounding"] == 1.0
    assert set(g.genres) == {"animation", "musical"} and g.unsupported_genres == []


def test_hallucinating_text_is_caught():
    g = catalogue().ground(HALLUCINATING, target=3, history=[0, 1, 2, 5])
    invented = {(m.text, m.status) for m in g.invented}
    # a real film the user never watched, and a film that does not exist
    assert ("Star Wars (1977)", "catalogue") in invented
    assert ("The Midnight Garden", "unknown") in invented
    m = g.metrics()
    assert m["invented_titles"] == 2.0 and m["has_invented_title"] == 1.0
    assert m["title_grounding"] == pytest.approx(1 / 3)  # only Aladdin is grounded
    # "war" and "adventure" are claimed, but neither Aladdin nor the history has them;
    # the "Wars" inside the title "Star Wars" is not a claim
    assert sorted(g.unsupported_genres) == ["adventure", "war"]


def test_hallucinating_scores_worse_than_grounded():
    scorer = ExplanationScorer(catalogue())
    good = scorer.score_case(case(FAITHFUL))
    bad = scorer.score_case(case(HALLUCINATING))
    assert good["invented_titles"] < bad["invented_titles"]
    assert good["title_grounding"] > bad["title_grounding"]
    assert good["unsupported_genres"] < bad["unsupported_genres"]


def test_year_pattern_fuzzy_match_and_unknown_titles():
    cat = catalogue()
    ms = cat.find_titles(
        "Because you rated Shawshank Redemtion (1994) highly, try Moonlight Harbor (1997).",
        target=3,
        history=[6],
    )
    assert [(m.item, m.status, m.how) for m in ms] == [
        (6, "history", "year"),  # typo, still matched to the catalogue
        (None, "unknown", "year"),
    ]
    assert ms[1].text == "Moonlight Harbor (1997)"


def test_the_year_picks_between_same_named_titles():
    cat = catalogue()
    (m,) = cat.find_titles("Hamlet (1990) comes to mind.", target=3, history=[8])
    assert m.item == 7  # the 1990 film, not the 1996 one
    # the user watched the 1996 Hamlet: a mention of "Hamlet" without year is grounded
    (m,) = cat.find_titles("Like Hamlet, it is a tragedy.", target=3, history=[8])
    assert m.status == "history"


def test_things_that_are_not_title_mentions():
    cat = catalogue()
    # one-word catalogue titles are matched only for the user's own items
    assert cat.find_titles("It builds up heat and Heat-like tension.", target=3, history=[0]) == []
    # a quoted preference sentence (as the template writes) is not a title
    text = (
        "We suggest Aladdin because it matches “Enjoys Drama (genre), e.g. Fargo (1996) and "
        "Heat (1995)” (40% of the weight)."
    )
    ms = cat.find_titles(
        text, target=3, history=[2, 5], preferences=["Enjoys Drama (genre), e.g. Fargo (1996)"]
    )
    assert {(m.item, m.status) for m in ms} == {(3, "target"), (2, "history"), (5, "history")}
    # quoted lower-case words and quoted genre names are not titles either
    assert cat.find_titles('A "feel-good" pick, pure "Comedy".', target=3, history=[]) == []


def test_catalogue_from_dataset_uses_genres():
    import pandas as pd

    class DS:  # the two attributes Catalogue.from_dataset reads
        titles = TITLES[:2]
        text_fields = ["genres"]
        items = pd.DataFrame({"genres": ["Animation", None]})

    cat = Catalogue.from_dataset(DS())
    assert cat.tags == ["Animation", ""] and "animation" in cat.vocabulary


def test_catalogue_spelling_and_titles_inside_quotes():
    cat = Catalogue(["Lion King, The (1994)", "Fan, The (1996)", "Omen, The (1976)"])
    text = (
        "We suggest Fan, The (1996): it matches “Nightmare On Ice (1994)” (33% of the weight). "
        "Among what you watched, Lion King, The (1994) and The Omen raised its score most."
    )
    ms = cat.find_titles(text, target=1, history=[0, 2])
    got = [(m.text, m.status) for m in ms]
    assert got == [
        ("Fan, The (1996)", "target"),  # the catalogue's own word order, with its year
        ("Nightmare On Ice (1994)", "unknown"),  # a title-like run opened by a quote mark
        ("Lion King, The (1994)", "history"),
        ("The Omen", "history"),
    ]
    # a plural slip still names the same film
    (m,) = cat.find_titles("Fans of Fans, The (1996) will like it.", target=1, history=[])
    assert m.status == "target"


def test_a_dated_title_right_after_a_found_one_is_still_found():
    ms = catalogue().find_titles("Like The Lion King, Moonlight Harbor (1997) shines.", target=3,
                                 history=[1])  # fmt: skip
    assert [(m.text, m.status) for m in ms] == [
        ("The Lion King", "history"),
        ("Moonlight Harbor (1997)", "unknown"),
    ]
