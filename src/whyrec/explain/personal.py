"""Tastes that say something about this user, checked when they are extracted.

An LLM taste is kept only when it is

* **specific**: it names something checkable in the user's own history — a genre or
  category, a decade (:meth:`whyrec.data.facts.ItemFacts.parse`) or a title the user
  watched. "Themes of love, loss and redemption" names nothing a reader (or the model's
  taste channel) can check; "Enjoys horror" from a user with no horror film names
  something the history does not have;
* **personal**: it is not one of a cluster of paraphrases written for many users.
  Sentences of all users are linked when their sentence embeddings are close (cosine
  ≥ ``similarity``) or their content words overlap (Jaccard ≥ ``word_overlap``); a
  linked group that spans ``min_users`` or more users is boilerplate, however its
  members are worded ("replete with themes of love, loss, redemption…" in four forms is
  one cluster).

A taste that fails is replaced the way an invalid sentence is — by a grounded taste
from the user's own history (:func:`whyrec.explain.fallback.fallback_preferences`, the
distinctive form when a baseline is given) — and the replacement and its reason are
recorded in the user's ``problems`` and counted in the summary.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from whyrec.data.facts import ItemFacts
from whyrec.explain.fallback import fallback_preferences

_WORD = re.compile(r"[a-z]+")
_STOP = frozenset(
    "a an and are as at be by for from has have her his in is it its of on or that the "
    "their them they this to was were which who with user users user's history past "
    "films film movies movie titles title like likes enjoys enjoy such".split()
)


def content_words(text: str) -> frozenset[str]:
    return frozenset(w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 2)


def is_specific(
    sentence: str, facts: ItemFacts, history_facts: set[str], history_titles: Sequence[str]
) -> bool:
    """The sentence names a fact of the history or one of its titles."""
    if set(facts.parse(sentence)) & history_facts:
        return True
    low = sentence.lower()
    for title in history_titles:
        key = re.sub(r"\s*\(\d{4}\)\s*$", "", str(title)).strip().lower()
        if len(key) >= 4 and key in low:
            return True
    return False


def paraphrase_clusters(
    sentences: Sequence[tuple[str, str]],
    encoder: Any = None,
    *,
    similarity: float = 0.8,
    word_overlap: float = 0.6,
) -> list[int]:
    """A cluster label per ``(user, sentence)``: single-link groups of sentences whose
    embeddings (``encoder``) have cosine at least ``similarity``, whose content words
    overlap by at least ``word_overlap`` (Jaccard), or where one sentence's content words
    (three or more) lie 80% inside the other's."""
    n = len(sentences)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)

    texts = [s for _, s in sentences]
    if encoder is not None and n > 1:
        v = np.asarray(encoder.encode(texts), dtype=np.float32)
        v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-8)
        for start in range(0, n, 512):
            sims = v[start : start + 512] @ v.T
            for a, b in zip(*np.nonzero(sims >= similarity), strict=True):
                if start + a < b:
                    union(start + int(a), int(b))
    words = [content_words(t) for t in texts]
    by_word: dict[str, list[int]] = {}
    for i, ws in enumerate(words):
        for w in ws:
            by_word.setdefault(w, []).append(i)
    for i, ws in enumerate(words):
        cands = {j for w in ws for j in by_word[w] if j > i}
        for j in cands:
            inter = len(ws & words[j])
            small = min(len(ws), len(words[j]))
            # the same words, or one sentence's words (3+) nearly all inside the other's
            # (a shortened or extended paraphrase)
            if inter / len(ws | words[j]) >= word_overlap or (small >= 3 and inter / small >= 0.8):
                union(i, j)
    return [find(i) for i in range(n)]


_USER_VERB = re.compile(r"^the user (\w+)\b", re.IGNORECASE)
_IRREGULAR = {"is": "are", "was": "were", "has": "have", "does": "do"}


def _base_form(verb: str) -> str | None:
    """ "enjoys" → "enjoy", "watches" → "watch", "tries" → "try"; None if not -s."""
    low = verb.lower()
    if low in _IRREGULAR:
        return _IRREGULAR[low]
    if low.endswith(("ches", "shes", "sses", "xes", "zes")):
        return verb[:-2]
    if low.endswith("ies") and len(low) > 4:
        return verb[:-3] + "y"
    if low.endswith("s") and not low.endswith(("ss", "us", "'s")) and len(low) > 3:
        return verb[:-1]
    return None


def second_person(sentence: str) -> str:
    """An LLM taste about "the user" said to them: "The user enjoys horror" → "You enjoy
    horror", "The user's history is …" → "Your history is …"."""
    s = sentence.strip()
    m = _USER_VERB.match(s)
    if m and (verb := _base_form(m.group(1))) is not None:
        s = f"You {verb}{s[m.end() :]}"
    s = re.sub(r"^the user's\b", "Your", s, flags=re.IGNORECASE)
    s = re.sub(r"\bthe user's\b", "your", s, flags=re.IGNORECASE)
    s = re.sub(r"^the user\b", "You", s, flags=re.IGNORECASE)
    return re.sub(r"\bthe user\b", "you", s, flags=re.IGNORECASE)


def check_tastes(
    prefs: dict[int, Any],
    dataset: Any,
    encoder: Any = None,
    *,
    m: int,
    window: int,
    min_users: int = 3,
    similarity: float = 0.8,
    word_overlap: float = 0.6,
    cuts: Any = None,
    baseline: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Check every LLM taste in ``prefs`` (user index → UserPreferences, the LLM's
    sentences first) for specificity and cross-user paraphrase; replace the failures in
    place with grounded tastes. Returns counts for the extraction summary."""
    facts = ItemFacts.from_dataset(dataset)
    field = facts.tag_field
    texts = (
        dataset.items[field].fillna("").astype(str).tolist() if field else [""] * dataset.n_items
    )
    seqs = dataset.user_sequences(("train",))

    def history(u: int) -> list[int]:
        seq = seqs[u] if cuts is None else seqs[u][: int(cuts[u])]
        return [int(i) for i in seq[-window:]]

    llm = {u: list(p.preferences[: p.llm_count]) for u, p in prefs.items() if p.llm_count > 0}
    flat = [(str(u), s) for u, sents in llm.items() for s in sents]
    labels = paraphrase_clusters(flat, encoder, similarity=similarity, word_overlap=word_overlap)
    users_of: dict[int, set[str]] = {}
    for (u, _), lab in zip(flat, labels, strict=True):
        users_of.setdefault(lab, set()).add(u)
    label_of = {(u, s): lab for (u, s), lab in zip(flat, labels, strict=True)}

    written = len(flat)
    specific = unspecific = clustered = 0
    for u, own in llm.items():
        p = prefs[u]
        seq = history(u)
        hist_titles = [str(dataset.titles[i]) for i in seq]
        hist_facts = facts.of_items(seq)
        keep: list[str] = []
        for s in own:
            spec = is_specific(s, facts, hist_facts, hist_titles)
            specific += spec
            n_users = len(users_of[label_of[(str(u), s)]])
            if n_users >= min_users:
                clustered += 1
                p.problems.append(
                    f"{s[:60]!r} is boilerplate (a paraphrase cluster written for {n_users} users)"
                )
            elif not spec:
                unspecific += 1
                p.problems.append(f"{s[:60]!r} names nothing checkable in the history")
            else:
                keep.append(second_person(s))
        pool = fallback_preferences(
            hist_titles, [texts[i] for i in seq], m + len(own), None, baseline=baseline
        )
        rest = [s for s in pool if s not in keep][: max(0, m - len(keep))]
        p.preferences = (keep + rest)[:m]
        p.fallback_count = len(p.preferences) - len(keep)
        p.source = "llm" if not p.fallback_count else ("partial" if keep else "fallback")
    replaced = clustered + unspecific
    distinct = len({" ".join(s.lower().split()) for _, s in flat})
    return {
        "llm_sentences": written,
        "distinct_llm_sentences": distinct,
        "paraphrase_clusters": len({lab for lab, us in users_of.items() if len(us) >= min_users}),
        "specific_share": round(specific / written, 3) if written else None,
        "replaced_unspecific": unspecific,
        "replaced_boilerplate": clustered,
        # kept for older readers of the summary: every replaced sentence
        "boilerplate_replaced": replaced,
        "llm_sentences_kept": written - replaced,
        "kept_share": round((written - replaced) / written, 3) if written else None,
    }
