"""Grounded preferences when the LLM gives none that validate.

They are built only from the user's own history: the text fields (genres, categories)
that dominate it, weighted towards recent items, and — when fields are missing or too
few — groups of similar history titles found by clustering their embeddings. Each
sentence names real titles from the history, so nothing in it is invented.

Titles and field values are untrusted catalogue text: every title enters a sentence
through :func:`whyrec.safety.quote_title` (one line, markup and chat control strings
removed, at most ``TITLE_CAP`` characters, in quotation marks) and every tag through
:func:`whyrec.safety.safe_title` capped at :data:`TAG_CAP`, so a sentence stays short and
a title never reads as part of it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from whyrec.data.facts import ItemFacts, fact_lift
from whyrec.safety import TITLE_CAP, quote_title, safe_title

#: Longest tag (genre, category) or field name quoted in a fallback sentence.
TAG_CAP = 40


def split_field(value: str) -> list[str]:
    return [v.strip() for v in str(value).replace("|", ",").split(",") if v.strip()]


def fallback_preferences(
    titles: Sequence[str],
    fields: Sequence[str],
    m: int,
    title_vectors: np.ndarray | None = None,
    field_name: str = "genres",
    baseline: Mapping[str, float] | None = None,
) -> list[str]:
    """``m`` distinct preference sentences grounded in the history.

    ``fields[i]`` is the text field value (e.g. "Action, Comedy") of ``titles[i]``;
    ``title_vectors`` (one row per title) enable the cluster-based sentences.

    With ``baseline`` (fact → share of all users' interactions that have it, see
    :func:`whyrec.data.facts.fact_baseline`) the first sentences name what this history
    has *more than most users*: its most over-represented genres and decades, with the
    count and two of its own titles — a taste everyone has ("Drama" on MovieLens) says
    nothing about the user. The rest (or all, without a baseline) name its most frequent
    tags.
    """
    n = len(titles)
    if n == 0:
        return [f"No history yet; preference {i + 1} is unknown." for i in range(m)]
    pairs = _distinctive(titles, fields, m, baseline) if baseline else []
    out = [sentence for sentence, _ in pairs]
    named = {fact for _, fact in pairs}
    recency = np.linspace(0.5, 1.0, n)  # newer items count up to twice as much
    score: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    for i, (title, value) in enumerate(zip(titles, fields, strict=True)):
        for raw_tag in split_field(value):
            tag = safe_title(raw_tag, TAG_CAP)
            if not tag or tag.lower() == "unknown":
                continue
            score[tag] += float(recency[i])
            examples.setdefault(tag, []).append(title)
    noun = safe_title(field_name, TAG_CAP).rstrip("s") or "category"
    for tag, _ in score.most_common():
        if len(out) >= m:
            break
        if f"genre:{tag}" in named:
            continue
        recent = list(dict.fromkeys(reversed(examples[tag])))[:2]
        shown = " and ".join(quote_title(t, TITLE_CAP) for t in recent)
        out.append(f"Enjoys {tag} ({noun}), e.g. {shown}.")
    if len(out) < m:
        out.extend(_cluster_sentences(titles, title_vectors, m - len(out), exclude=out))
    k = 1
    while len(out) < m:  # tiny histories: fall back to single recent titles
        title = titles[-k % n] if k <= n else titles[0]
        sentence = f"Liked {quote_title(title)} and similar titles (recent pick {k})."
        if sentence not in out:
            out.append(sentence)
        k += 1
    return out[:m]


#: Opening words of a distinctive grounded taste (how the explainer recognises one).
DISTINCTIVE_LEAD = "You pick "


def distinctive_preferences(
    titles: Sequence[str],
    fields: Sequence[str],
    m: int,
    baseline: Mapping[str, float],
    *,
    min_count: int = 2,
) -> list[str]:
    """Up to ``m`` sentences naming the facts (genres, decades) this history has more
    than most users, strongest first: "You pick Film-Noir titles more often than most users
    (3 of 20), e.g. “Chinatown” and “Vertigo”."."""
    return [sentence for sentence, _ in _distinctive(titles, fields, m, baseline, min_count)]


def _distinctive(
    titles: Sequence[str],
    fields: Sequence[str],
    m: int,
    baseline: Mapping[str, float],
    min_count: int = 2,
) -> list[tuple[str, str]]:
    n = len(titles)
    facts = ItemFacts.from_texts(titles, list(fields))
    base = np.array([float(baseline.get(f, 0.0)) for f in facts.names])
    known = base > 0
    lifts = fact_lift(facts, range(n), np.where(known, base, 1.0))
    need = min(min_count, max(1, n // 5))
    out: list[tuple[str, str]] = []
    for fact, _lift, count in lifts:
        if len(out) >= m:
            break
        if count < need or not known[facts.index(fact) or 0]:
            continue
        j = facts.index(fact)
        holders = [titles[i] for i in np.flatnonzero(facts.matrix[:, j])]
        recent = list(dict.fromkeys(reversed(holders)))[:2]
        shown = " and ".join(quote_title(t, TITLE_CAP) for t in recent)
        kind, _, value = fact.partition(":")
        what = (
            f"titles from the {safe_title(value, TAG_CAP)}"
            if kind == "decade"
            else f"{safe_title(value, TAG_CAP)} titles"
        )
        lead = f"{DISTINCTIVE_LEAD}{what} more often than most users ({count} of {n})"
        out.append((f"{lead}, e.g. {shown}.", fact))
    return out


def _cluster_sentences(
    titles: Sequence[str], vectors: np.ndarray | None, k: int, exclude: Sequence[str]
) -> list[str]:
    if vectors is None or len(titles) < 2 or k <= 0:
        return []
    x = np.asarray(vectors, dtype=np.float32)
    k_eff = min(k, len(titles))
    centers = _kmeans(x, k_eff)
    assign = np.argmax(x @ centers.T, axis=1)
    out = []
    for c in range(k_eff):
        members = np.flatnonzero(assign == c)
        if len(members) == 0:
            continue
        sims = x[members] @ centers[c]
        top = [titles[i] for i in members[np.argsort(-sims)][:2]]
        named = " and ".join(quote_title(t) for t in dict.fromkeys(top))
        sentence = f"Likes titles in the vein of {named}."
        if sentence not in exclude and sentence not in out:
            out.append(sentence)
    return out


def _kmeans(x: np.ndarray, k: int, iters: int = 20) -> np.ndarray:
    """Spherical k-means with deterministic farthest-point seeding."""
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)
    centers = [xn[-1]]  # the most recent title seeds the first cluster
    for _ in range(1, k):
        sims = np.max(xn @ np.stack(centers).T, axis=1)
        centers.append(xn[int(np.argmin(sims))])
    c = np.stack(centers)
    for _ in range(iters):
        assign = np.argmax(xn @ c.T, axis=1)
        new = np.stack([xn[assign == j].mean(0) if np.any(assign == j) else c[j] for j in range(k)])
        new /= np.maximum(np.linalg.norm(new, axis=1, keepdims=True), 1e-8)
        if np.allclose(new, c):
            break
        c = new
    return c
