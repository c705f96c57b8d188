"""Boilerplate LLM preference sentences are replaced by grounded, personal ones."""

from whyrec.explain.personal import replace_boilerplate_preferences
from whyrec.explain.preferences import UserPreferences

BOILER = "The user's history is made for a family of fans of a niche."


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


def test_a_sentence_shared_by_many_users_is_replaced_with_their_own_history(tiny_dataset):
    prefs = _prefs(
        tiny_dataset,
        lambda u: [
            BOILER,
            f"Watches films with a {'xyzvwqrstu'[u % 10]}{'abcdefg'[u // 10]} code.",
        ],
    )
    summary = replace_boilerplate_preferences(prefs, tiny_dataset, m=3, window=50)
    assert summary["boilerplate_replaced"] == tiny_dataset.n_users
    assert summary["llm_sentences"] == 2 * tiny_dataset.n_users
    for p in prefs.values():
        assert BOILER not in p.preferences and len(p.preferences) == 3
        assert p.llm_count == 1 and p.source == "partial"
        assert any("boilerplate" in q for q in p.problems)
        # the replacement is grounded in the user's own history (a genre they watched)
        assert any(s.startswith("Enjoys") for s in p.preferences)


def test_sentences_written_by_fewer_users_stay(tiny_dataset):
    words = "ant bee cat dog eel fox gnu hen ibis jay kiwi lynx mole newt owl pug".split()
    words += "quail rat seal toad urchin vole wasp yak zebu asp boa cod dace emu".split()
    prefs = _prefs(
        tiny_dataset, lambda u: [BOILER if u < 2 else f"Likes films about the {words[u]}."]
    )
    summary = replace_boilerplate_preferences(prefs, tiny_dataset, m=3, window=50)
    assert summary["boilerplate_replaced"] == 0
    assert prefs[0].preferences[0] == BOILER
