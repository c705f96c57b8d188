"""How well a surrogate LLM agrees with its recommender, and what it knows about recommendation.

**Alignment with f** (RecExplainer's metrics), on evaluation samples built for users the
surrogate was not trained on, with f's predictions as the reference:

* retrieval: the generated title against f's top 5 — HR@5 (the title is one of them) and
  NDCG@5 (by its position there), exact title match after whitespace clean-up. With a
  title trie the decoding is constrained to catalogue titles: reported separately as
  ``retrieval_trie``;
* ranking: NDCG@5 of the generated order of five shuffled items against f's order
  (graded relevance 5..1 down f's order);
* interest: accuracy of Yes/No read from the logits of the first answer token (balanced:
  every user gets one item from f's top 20% and one from its bottom 50%);
* history: coverage ratio — the share of the user's most recent items whose titles the
  surrogate lists (intention and hybrid forms only: a behaviour prompt shows the history).

**Recommendation knowledge** (Cao et al.): full-catalogue Recall@10 / NDCG@10 of the
surrogate's top 10 titles (beam search over the title trie, history titles excluded)
against the true next item of the test split, beside the recommender ranked the same way.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from whyrec.align.decoding import TitleTrie, beam_titles, choice_scores, generate
from whyrec.align.samples import SampleSet
from whyrec.align.text import LETTERS, clean_text
from whyrec.align.tuning import Surrogate
from whyrec.data.dataset import Dataset


# ------------------------------------------------------------------ metrics
def position_gain(position: int | None, k: int) -> tuple[float, float]:
    """(hit, NDCG) of one relevant answer at 0-based ``position`` (None = missed) in top ``k``."""
    if position is None or position >= k:
        return 0.0, 0.0
    return 1.0, 1.0 / float(np.log2(position + 2))


def ranking_ndcg(predicted: Sequence[int], n: int) -> float:
    """NDCG of a predicted order of f's positions ``0..n-1`` (relevance ``n - position``)."""
    dcg = sum((n - p) / np.log2(k + 2) for k, p in enumerate(predicted))
    ideal = sum((n - k) / np.log2(k + 2) for k in range(n))
    return float(dcg / ideal)


def chance_ranking_ndcg(n: int = 5) -> float:
    """Expected :func:`ranking_ndcg` of a uniformly random order."""
    perms = list(itertools.permutations(range(n)))
    return float(np.mean([ranking_ndcg(p, n) for p in perms]))


def parse_letters(text: str, n: int) -> tuple[list[int], bool]:
    """Candidate indices in the order a reply names them; missing ones appended in shown order.

    Returns (order, complete) where complete says every candidate was named.
    """
    valid = LETTERS[:n]
    seen: list[int] = []
    for m in re.finditer(r"(?<![A-Za-z])([A-Za-z])(?![a-z])", text):
        ch = m.group(1).upper()
        if ch in valid and valid.index(ch) not in seen:
            seen.append(valid.index(ch))
    complete = len(seen) == n
    return seen + [i for i in range(n) if i not in seen], complete


def _norm(title: str) -> str:
    return clean_text(title)


# ------------------------------------------------------------------ alignment
def evaluate_alignment(
    sur: Surrogate,
    samples: SampleSet,
    *,
    trie: TitleTrie | None = None,
    batch_size: int = 8,
    n_examples: int = 3,
) -> dict[str, Any]:
    """Alignment metrics of ``sur`` on evaluation ``samples`` (from :func:`build_alignment`
    with ``per_state=True``). Tasks missing from ``samples`` are left out of the result."""
    by_task: dict[str, list[int]] = {}
    for i, s in enumerate(samples.samples):
        by_task.setdefault(s.task, []).append(i)
    out: dict[str, Any] = {"surrogate": sur.name, "form": _form(samples), "examples": {}}
    t0 = time.perf_counter()
    if "retrieval" in by_task:
        idx = by_task["retrieval"]
        for label, constraint in (("retrieval", None), ("retrieval_trie", trie)):
            if label == "retrieval_trie" and trie is None:
                continue
            texts = generate(
                sur, samples, idx, max_new_tokens=24, trie=constraint, batch_size=batch_size
            )
            hits, gains = [], []
            for i, text in zip(idx, texts, strict=True):
                meta = samples.samples[i].meta
                top = [_norm(t) for t in meta["f_top_titles"]]
                got = _norm(text)
                pos = top.index(got) if got in top else None
                h, g = position_gain(pos, 5)
                hits.append(h)
                gains.append(g)
            out[label] = {"HR@5": _mean(hits), "NDCG@5": _mean(gains), "n": len(idx)}
            if trie is not None:
                out[label]["valid_title_rate"] = _mean(
                    [t in trie.titles for t in map(_norm, texts)]
                )
            out["examples"][label] = _examples(samples, idx, texts, n_examples)
    if "ranking" in by_task:
        idx = by_task["ranking"]
        texts = generate(sur, samples, idx, max_new_tokens=20, batch_size=batch_size)
        scores, complete = [], []
        for i, text in zip(idx, texts, strict=True):
            meta = samples.samples[i].meta
            n = len(meta["items"])
            order, ok = parse_letters(text, n)
            f_pos = {LETTERS.index(letter): p for p, letter in enumerate(meta["order"])}
            scores.append(ranking_ndcg([f_pos[c] for c in order], n))
            complete.append(ok)
        out["ranking"] = {
            "NDCG@5": _mean(scores),
            "complete_rate": _mean(complete),
            "chance_NDCG@5": chance_ranking_ndcg(5),
            "n": len(idx),
        }
        out["examples"]["ranking"] = _examples(samples, idx, texts, n_examples)
    if "interest" in by_task:
        idx = by_task["interest"]
        logits = choice_scores(sur, samples, idx, ["Yes", "No"], batch_size=batch_size)
        pred = logits[:, 0] > logits[:, 1]
        labels = np.array([bool(samples.samples[i].meta["label"]) for i in idx])
        out["interest"] = {
            "accuracy": float((pred == labels).mean()) if len(idx) else 0.0,
            "yes_rate": float(pred.mean()) if len(idx) else 0.0,
            "n": len(idx),
        }
    if "history" in by_task:
        idx = by_task["history"]
        texts = generate(sur, samples, idx, max_new_tokens=64, batch_size=batch_size)
        cover = []
        for i, text in zip(idx, texts, strict=True):
            target = {_norm(t) for t in samples.samples[i].meta["titles"]}
            lines = {
                _norm(re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line)) for line in text.splitlines()
            }
            cover.append(len(target & lines) / max(len(target), 1))
        out["history"] = {"coverage": _mean(cover), "n": len(idx)}
        out["examples"]["history"] = _examples(samples, idx, texts, n_examples)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def _form(samples: SampleSet) -> str:
    forms = sorted({s.form for s in samples.samples})
    return forms[0] if len(forms) == 1 else "+".join(forms)


def _mean(values: Sequence[float | bool]) -> float:
    return float(np.mean(values)) if len(values) else 0.0


def _examples(
    samples: SampleSet, idx: Sequence[int], texts: Sequence[str], n: int
) -> list[dict[str, str]]:
    return [
        {"expected": samples.samples[i].answer, "generated": t}
        for i, t in list(zip(idx, texts, strict=True))[:n]
    ]


# ------------------------------------------------------------------ knowledge
def evaluate_knowledge(
    sur: Surrogate,
    samples: SampleSet,
    trie: TitleTrie,
    titles: Sequence[str],
    *,
    k: int = 10,
    beams: int = 10,
) -> dict[str, Any]:
    """Recall@k / NDCG@k of the surrogate's top-k titles against the true next item.

    ``samples``: from :func:`whyrec.align.builders.knowledge_eval_samples`.
    """
    hits, gains, seconds = [], [], []
    examples = []
    for i, s in enumerate(samples.samples):
        t0 = time.perf_counter()
        seen = [titles[j] for j in s.meta["seen"]]
        ranked = beam_titles(sur, samples, i, trie, beams=beams, n_best=k, exclude=seen)
        seconds.append(time.perf_counter() - t0)
        names = [t for t, _ in ranked]
        target = _norm(titles[s.meta["target"]])
        h, g = position_gain(names.index(target) if target in names else None, k)
        hits.append(h)
        gains.append(g)
        if len(examples) < 3:
            examples.append({"target": target, "top3": names[:3]})
    return {
        "surrogate": sur.name,
        f"Recall@{k}": _mean(hits),
        f"NDCG@{k}": _mean(gains),
        "n": len(samples),
        "decoding": f"beam search over the catalogue title trie (beams={beams}), history excluded",
        "seconds_per_user": round(float(np.median(seconds)), 2) if seconds else None,
        "examples": examples,
    }


def recommender_knowledge(
    model: Any, dataset: Dataset, users: Sequence[int], *, k: int = 10
) -> dict[str, Any]:
    """The same Recall@k / NDCG@k for a whyrec recommender: full ranking, history excluded."""
    from whyrec.metrics import hit_rate_at_k, mask_history, ndcg_at_k, rank_of_target

    us, hists, targets = dataset.histories_for("test")
    keep = np.isin(us, np.asarray(list(users)))
    us, targets = us[keep], targets[keep]
    hists = [h for h, m in zip(hists, keep, strict=True) if m]
    scores = model.score_batch(hists, us).astype(np.float64)
    mask_history(scores, hists, targets)
    ranks = rank_of_target(scores, targets)
    return {
        "model": model.name,
        f"Recall@{k}": hit_rate_at_k(ranks, k),
        f"NDCG@{k}": ndcg_at_k(ranks, k),
        "n": len(us),
        "decoding": "full ranking over the catalogue, history excluded",
    }
