"""Personal preferences: an LLM sentence written (nearly) alike for many users is not
about this user. It is replaced the way an invalid sentence is — by a grounded fallback
sentence from the user's own history — and the replacement is recorded.

The detector is :class:`whyrec.explain.verify.BoilerplateDetector`, the same one the
explanation verifier and the explanation-quality harness use.
"""

from __future__ import annotations

from typing import Any

from whyrec.explain.fallback import fallback_preferences
from whyrec.explain.verify import BoilerplateDetector


def replace_boilerplate_preferences(
    prefs: dict[int, Any],
    dataset: Any,
    encoder: Any = None,
    *,
    m: int,
    window: int,
    min_users: int = 3,
    similarity: float = 0.92,
    cuts: Any = None,
) -> dict[str, Any]:
    """Replace boilerplate LLM sentences in ``prefs`` (user index → UserPreferences, the
    LLM's sentences first) in place; returns counts for the extraction summary."""
    llm_sents = {str(u): p.preferences[: p.llm_count] for u, p in prefs.items() if p.llm_count > 0}
    written = sum(len(s) for s in llm_sents.values())
    det = BoilerplateDetector(encoder, min_users=min_users, similarity=similarity).fit(llm_sents)
    field = "genres" if "genres" in getattr(dataset, "text_fields", []) else None
    texts = (
        dataset.items[field].fillna("").astype(str).tolist() if field else [""] * dataset.n_items
    )
    seqs = dataset.user_sequences(("train",))
    replaced = 0
    for u, p in prefs.items():
        if p.llm_count == 0:
            continue
        own = p.preferences[: p.llm_count]
        flagged = [s for s in own if det.is_boilerplate(s, str(u))]
        if not flagged:
            continue
        keep = [s for s in own if s not in flagged]
        seq = list((seqs[u] if cuts is None else seqs[u][: int(cuts[u])])[-window:])
        titles = [str(dataset.titles[i]) for i in seq]
        pool = fallback_preferences(titles, [texts[i] for i in seq], m + len(flagged), None)
        rest = [s for s in p.preferences[p.llm_count :] if s not in keep]
        for s in pool:
            if len(keep) + len(rest) >= m:
                break
            if s not in keep and s not in rest:
                rest.append(s)
        p.preferences = (keep + rest)[:m]
        p.fallback_count = len(p.preferences) - len(keep)
        p.source = "llm" if not p.fallback_count else ("partial" if keep else "fallback")
        for s in flagged:
            n = len(det.users_writing(s) | {str(u)})
            p.problems.append(f"{s[:60]!r} is boilerplate (written alike for {n} users)")
        replaced += len(flagged)
    distinct = len({" ".join(s.lower().split()) for v in llm_sents.values() for s in v})
    return {
        "llm_sentences": written,
        "distinct_llm_sentences": distinct,
        "boilerplate_replaced": replaced,
        "llm_sentences_kept": written - replaced,
        "kept_share": round((written - replaced) / written, 3) if written else None,
    }
