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
from collections.abc import Sequence

import numpy as np

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
) -> list[str]:
    """``m`` distinct preference sentences grounded in the history.

    ``fields[i]`` is the text field value (e.g. "Action, Comedy") of ``titles[i]``;
    ``title_vectors`` (one row per title) enable the cluster-based sentences.
    """
    n = len(titles)
    if n == 0:
        return [f"No history yet; preference {i + 1} is unknown." for i in range(m)]
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
    out: list[str] = []
    noun = safe_title(field_name, TAG_CAP).rstrip("s") or "category"
    for tag, _ in score.most_common():
        if len(out) >= m:
            break
        recent = list(dict.fromkeys(reversed(examples[tag])))[:2]
        named = " and ".join(quote_title(t, TITLE_CAP) for t in recent)
        out.append(f"Enjoys {tag} ({noun}), e.g. {named}.")
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
