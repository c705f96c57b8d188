"""Do the tastes mean what they say? Checks on the reasons shown and on the model itself.

On the reasons (:func:`reason_taste_agreement`):

* **semantic agreement** — of the reasons that cite a taste, the share whose cited
  tastes each name a fact the item has (a genre, a decade), and the share that cite a
  taste naming facts the item has none of ("Enjoys Drama" for a comedy).

On the model (:func:`model_taste_checks`), over users' top-k items:

* **sign sanity** — over every (user, item, taste naming one of the item's facts), the
  share where removing the taste *raises* the item's score (it should lower it);
* **materiality** — for the taste a reason would cite, its score drop as a share of the
  largest history-item drop, and whether removing it moves the item's rank; the tastes
  passed over as immaterial; and the share of users whose top-10 changes when all their
  tastes are removed.

Which taste a reason cites is read from its text the way the claim verifier reads it
(quoted, or its content words and the genre it names used).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from whyrec.explain.verify import leaned_preferences, split_sentences


def cited_tastes(text: str, preferences: Sequence[str], catalogue: Any, item: int) -> set[int]:
    """The preferences a reason's sentences lean on."""
    out: set[int] = set()
    for sentence in split_sentences(text or "", catalogue):
        out.update(leaned_preferences(sentence, preferences, catalogue, target=item))
    return out


def reason_taste_agreement(cases: Sequence[Any], catalogue: Any) -> dict[str, Any]:
    """Semantic agreement of the tastes cited by the reasons shown, per system.

    ``cases`` are :class:`ExplanationCase` records whose ``details`` carry
    ``taste_facts`` (the facts each preference names) and ``item_facts`` (the item's).
    """
    by_system: dict[str, dict[str, Any]] = {}
    for c in cases:
        if not c.ok or "taste_facts" not in c.details:
            continue
        row = by_system.setdefault(
            c.system, {"reasons": 0, "citing": 0, "agree": 0, "mismatch": 0, "examples": []}
        )
        row["reasons"] += 1
        cited = cited_tastes(c.text or "", c.preferences, catalogue, c.item)
        if not cited:
            continue
        row["citing"] += 1
        item_facts = set(c.details["item_facts"])
        named = [set(c.details["taste_facts"][j]) for j in sorted(cited)]
        if all(n & item_facts for n in named):
            row["agree"] += 1
        if any(n and not n & item_facts for n in named):
            row["mismatch"] += 1
            if len(row["examples"]) < 5:
                j = next(
                    j for j in sorted(cited) if not set(c.details["taste_facts"][j]) & item_facts
                )
                row["examples"].append({"title": c.title, "taste": c.preferences[j]})
    for row in by_system.values():
        n = row["citing"]
        row["agreement"] = round(row["agree"] / n, 3) if n else None
        row["mismatch_share"] = round(row["mismatch"] / n, 3) if n else None
    return by_system


def model_taste_checks(
    explainer: Any, users: Sequence[int], *, k: int = 5, top_n: int = 10
) -> dict[str, Any]:
    """Sign sanity, materiality and the top-10 effect of all tastes, for ``users``' top-k.

    ``explainer`` is an :class:`~whyrec.explain.explainer.ExplanationPipeline` on a model
    with preferences (its evidence gives each taste's drop, the facts it names and the
    item's facts).
    """
    model = explainer.model
    if not model.has_preferences:
        return {"users": len(users), "model_has_tastes": False}
    pairs = violations = 0
    shares: list[float] = []
    rank_moves = cited_n = immaterial = 0
    top_changed = 0
    drops_named: list[float] = []
    for u in users:
        subject = explainer.subject(int(u))
        recs = model.recommend(int(u), k=max(k, top_n))
        for item in recs.items[:k]:
            ev = explainer.evidence(subject, int(item))
            top_hist = max((h["score_drop"] for h in ev.history_effects), default=0.0)
            for p in ev.preference_effects:
                if p["matching"]:  # the taste names one of the item's facts
                    pairs += 1
                    drops_named.append(float(p["score_drop"]))
                    violations += p["score_drop"] < -1e-6
            immaterial += sum(t["why"] == "immaterial" for t in ev.uncited_tastes)
            for p in ev.cited_preference_effects():
                cited_n += 1
                if top_hist > 0:
                    shares.append(float(p["score_drop"]) / top_hist)
                rank_moves += int(p["rank_without"]) != int(ev.rank)
        # all tastes removed: does the top-n list change?
        none = np.zeros_like(model.user_preference_vectors(int(u)))  # every taste removed
        with model.using_preferences(none):
            bare = model.recommend(history=model.histories[int(u)], k=top_n)
        top_changed += list(bare.items) != list(recs.items[:top_n])
    n_users = len(users)
    return {
        "users": n_users,
        "items_per_user": k,
        "taste_item_pairs": pairs,
        "sign_violations": violations,
        "sign_violation_share": round(violations / pairs, 3) if pairs else None,
        "cited_tastes": cited_n,
        "cited_drop_share_median": round(float(np.median(shares)), 3) if shares else None,
        "cited_drop_share_q25_q75": (
            [round(float(x), 3) for x in np.percentile(shares, [25, 75])] if shares else None
        ),
        "cited_rank_moves_share": round(rank_moves / cited_n, 3) if cited_n else None,
        "immaterial_tastes_passed_over": immaterial,
        "users_top10_changed_without_tastes": round(top_changed / n_users, 3) if n_users else None,
        "median_drop_of_named_tastes": (
            round(float(np.median(drops_named)), 4) if drops_named else None
        ),
    }
