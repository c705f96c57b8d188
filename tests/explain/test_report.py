"""The report page reads as a user wants it: summary in words, labels readable on cells,
grounded tastes that say what distinguishes the user."""

import html

import numpy as np

from whyrec.explain.fallback import fallback_preferences
from whyrec.explain.report import html_report, summary_in_words, text_colour, weights_heatmap


def _contrast(a: str, rgba) -> float:
    def lum(rgb):
        def ch(c):
            return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

        r, g, b = (ch(float(c)) for c in rgb[:3])
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    ink = (0.0, 0.0, 0.0) if a == "black" else (1.0, 1.0, 1.0)
    hi, lo = sorted([lum(ink), lum(rgba)], reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_every_heatmap_label_is_readable_on_its_cell():
    """The cited cells were light text on light yellow; every colour of the two maps the
    report uses now gets the ink with at least 4.5:1 contrast (WCAG AA)."""
    import matplotlib

    for name in ("viridis", "magma"):
        cmap = matplotlib.colormaps[name]
        for x in np.linspace(0, 1, 41):
            rgba = cmap(x)
            assert _contrast(text_colour(rgba), rgba) >= 4.5, (name, x)
    png = weights_heatmap(
        np.array([[0.1, 0.9], [0.5, 0.0]]),
        ["taste: Comedy", "taste: 1990s films"],
        ["A", "B"],
        "t",
        marks=np.array([[False, True], [False, False]]),
    )
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_preference_summary_is_in_words():
    summary = {
        "users": 943,
        "sampled_llm_complete": 0,
        "fallback_sentence_rate": 0.977,
        "specific_share": 0.586,
        "some_new_key": 3,
    }
    rows = dict(summary_in_words(summary))
    assert "Sampled users with all tastes written by the LLM" in rows
    assert rows["Share of the sampled users' tastes that are grounded"] == "98%"
    assert "Some new key" in rows
    page = html_report(
        title="t", metrics=[], preference_summary=summary, explanations=[], images={}
    )
    assert "sampled_llm_complete" not in page and "fallback_sentence_rate" not in page
    assert html.escape("Share of the LLM's sentences naming a genre") in page


def test_grounded_tastes_name_what_the_user_picks_more_than_most():
    titles = ["Chinatown (1974)", "Vertigo (1958)", "Heat (1995)", "Big Sleep, The (1946)"]
    fields = ["Film-Noir|Mystery", "Mystery|Thriller", "Action|Crime", "Film-Noir"]
    titles += [f"Drama {k} (1995)" for k in range(3)]
    fields += ["Drama"] * 3
    # everybody watches drama (this user a little less than most); film-noir is rare
    baseline = {"genre:Drama": 0.45, "genre:Film-Noir": 0.01, "genre:Mystery": 0.05,
                "genre:Thriller": 0.2, "genre:Action": 0.25, "genre:Crime": 0.08,
                "decade:1990s": 0.6, "decade:1970s": 0.1, "decade:1950s": 0.02,
                "decade:1940s": 0.01}  # fmt: skip
    prefs = fallback_preferences(titles, fields, 3, None, baseline=baseline)
    assert prefs[0].startswith("You pick Film-Noir titles more often than most users (2 of 7)")
    assert "“Big Sleep, The (1946)”" in prefs[0]
    assert not any("Drama titles more often" in p for p in prefs)  # common, not distinctive
    plain = fallback_preferences(titles, fields, 3, None)
    assert plain[0].startswith("Enjoys Drama")  # without a baseline: the most frequent
