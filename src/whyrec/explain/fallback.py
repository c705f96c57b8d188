"""Grounded preferences when the LLM gives none that validate.

They are built only from the user's own history: the text fields (genres, categories)
that dominate it, weighted towards recent items, and — when fields are missing or too
few — groups of similar history titles found by clustering their embeddings. Each
sentence names real titles from the history, so nothing in it is invented.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np


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
        for tag in split_field(value):
            if tag.lower() == "unknown":
                continue
            score[tag] += float(recency[i])
            examples.setdefault(tag, []).append(title)
    out: list[str] = []
    noun = field_name.rstrip("s") or "category"
    for tag, _ in score.most_common():
        if len(out) >= m:
            break
        recent = list(dict.fromkeys(reversed(examples[tag])))[:2]
        out.append(f"Enjoys {tag} ({noun}), e.g. {' and '.join(recent)}.")
    if len(out) < m:
        out.extend(_cluster_sentences(titles, title_vectors, m - len(out), exclude=out))
    k = 1
    while len(out) < m:  # tiny histories: fall back to single recent titles
        title = titles[-k % n] if k <= n else titles[0]
        sentence = f"Liked {title} and similar titles (recent pick {k})."
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
        sentence = f"Likes titles in the vein of {' and '.join(dict.fromkeys(top))}."
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
