"""Decoding for the surrogate: greedy (free or constrained to catalogue titles), beam
search over the title trie, and answer-token scores for multiple choice.

Free greedy decoding is what the exact-title-match metrics use. *Constrained* decoding
walks a trie of the tokenised catalogue titles, so every answer is a real title; results
obtained that way are always labelled ``trie`` because the constraint does part of the
model's work. Placeholder tokens are never generated.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from whyrec.align.samples import SampleSet
from whyrec.align.text import clean_text
from whyrec.align.tuning import Surrogate


@dataclass
class TrieNode:
    children: dict[int, TrieNode] = field(default_factory=dict)
    title: str | None = None  # set on the node reached by the end-of-answer token
    count: int = 0  # titles in this subtree


class TitleTrie:
    """Token trie of answers ``title + end-of-turn`` for a catalogue."""

    def __init__(self, surrogate: Surrogate, titles: Iterable[str]) -> None:
        self.end_id = surrogate.end_id
        self.root = TrieNode()
        self.titles: set[str] = set()
        for title in titles:
            t = clean_text(title)
            if not t or t in self.titles:
                continue
            self.titles.add(t)
            node = self.root
            node.count += 1
            for token in self.tokens(surrogate, t):
                node = node.children.setdefault(int(token), TrieNode())
                node.count += 1
            node.title = t

    def tokens(self, surrogate: Surrogate, title: str) -> list[int]:
        return [*surrogate.tokenizer(title, add_special_tokens=False)["input_ids"], self.end_id]

    def blocked(self, surrogate: Surrogate, titles: Iterable[str]) -> set[int]:
        """ids of the nodes whose every title is among ``titles`` (dead ends for a search)."""
        hits: dict[int, int] = {}
        nodes: dict[int, TrieNode] = {}
        for t in {clean_text(x) for x in titles} & self.titles:
            node = self.root
            for token in self.tokens(surrogate, t):
                node = node.children[token]
                hits[id(node)] = hits.get(id(node), 0) + 1
                nodes[id(node)] = node
        return {k for k, n in hits.items() if n >= nodes[k].count}

    def __len__(self) -> int:
        return len(self.titles)


def _prefill(
    sur: Surrogate, sset: SampleSet, indices: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, object]:
    """Run the prompts; return (last hidden state, attention mask, next positions, cache)."""
    from transformers import DynamicCache

    enc = [sur.encode(sset.samples[i], where=f"sample {i}") for i in indices]
    ids, mask, positions, _ = sur.batch(enc, with_answer=False)
    cache = DynamicCache(config=sur.core.config)
    embeds = sur.input_embeddings(ids, [e.vectors for e in enc], sur._tables(sset))
    out = sur.decoder(
        inputs_embeds=embeds,
        attention_mask=mask,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
    )
    return out.last_hidden_state[:, -1], mask, positions[:, -1:] + 1, cache


def _step(
    sur: Surrogate, tokens: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache: object
) -> torch.Tensor:
    out = sur.decoder(
        input_ids=tokens[:, None],
        attention_mask=mask,
        position_ids=pos,
        past_key_values=cache,
        use_cache=True,
    )
    return out.last_hidden_state[:, -1]


def _banned(sur: Surrogate) -> list[int]:
    return [sur.user_id, sur.item_id]


def generate(
    sur: Surrogate,
    sset: SampleSet,
    indices: Sequence[int] | None = None,
    *,
    max_new_tokens: int = 32,
    trie: TitleTrie | None = None,
    batch_size: int = 8,
) -> list[str]:
    """Greedy answers for the samples (prompt only; the sample's answer is ignored)."""
    indices = list(range(len(sset))) if indices is None else list(indices)
    out: list[str] = []
    sur.model.eval()
    with torch.inference_mode(), sur.autocast():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            h, mask, pos, cache = _prefill(sur, sset, chunk)
            n = len(chunk)
            nodes: list[TrieNode | None] = [trie.root if trie else None] * n
            tokens: list[list[int]] = [[] for _ in range(n)]
            done = torch.zeros(n, dtype=torch.bool)
            for _ in range(max_new_tokens):
                logits = sur.lm_head(h).float()
                logits[:, _banned(sur)] = -torch.inf
                if trie is not None:
                    allowed = torch.full_like(logits, -torch.inf)
                    for r, node in enumerate(nodes):
                        if node is not None and node.children:
                            allowed[r, list(node.children)] = 0.0
                        else:
                            allowed[r, sur.end_id] = 0.0
                    logits = logits + allowed
                nxt = logits.argmax(-1)
                for r in range(n):
                    if done[r]:
                        continue
                    t = int(nxt[r])
                    if t == sur.end_id:
                        done[r] = True
                        continue
                    tokens[r].append(t)
                    if trie is not None and nodes[r] is not None:
                        nodes[r] = nodes[r].children.get(t)
                if bool(done.all()):
                    break
                nxt = torch.where(done, torch.full_like(nxt, sur.end_id), nxt)
                mask = torch.cat([mask, torch.ones(n, 1, dtype=mask.dtype)], dim=1)
                h = _step(sur, nxt, mask, pos, cache)
                pos = pos + 1
            out.extend(sur.tokenizer.decode(t, skip_special_tokens=True).strip() for t in tokens)
    return out


def beam_titles(
    sur: Surrogate,
    sset: SampleSet,
    index: int,
    trie: TitleTrie,
    *,
    beams: int = 10,
    n_best: int = 10,
    exclude: Iterable[str] = (),
    max_steps: int = 48,
) -> list[tuple[str, float]]:
    """The ``n_best`` catalogue titles of highest log-probability, by beam search on ``trie``.

    Titles in ``exclude`` (e.g. the user's history) are cut out of the trie for this
    search, so beams are not spent on them. Scores are summed token log-probabilities;
    ``beams`` should be at least ``n_best``.
    """
    excluded = {clean_text(t) for t in exclude}
    dead = trie.blocked(sur, excluded)  # subtrees holding excluded titles only
    finished: dict[str, float] = {}
    sur.model.eval()
    with torch.inference_mode(), sur.autocast():
        h, mask, pos, cache = _prefill(sur, sset, [index])
        next_pos = int(pos[0, 0])
        active: list[tuple[float, TrieNode]] = [(0.0, trie.root)]
        for _ in range(max_steps):
            logp = torch.log_softmax(sur.lm_head(h).float(), dim=-1)
            cands: list[tuple[float, int, int]] = []
            for b, (score, node) in enumerate(active):
                allowed = [t for t, c in node.children.items() if id(c) not in dead]
                if not allowed:
                    continue
                lp = logp[b, allowed].tolist()
                cands.extend((score + v, b, t) for v, t in zip(lp, allowed, strict=True))
            cands.sort(key=lambda c: -c[0])
            new: list[tuple[float, int, int, TrieNode]] = []
            for score, b, t in cands:
                child = active[b][1].children[t]
                if t == trie.end_id:
                    title = child.title
                    if title is not None and title not in excluded and title not in finished:
                        finished[title] = score
                elif len(new) < beams:
                    new.append((score, b, t, child))
            if not new:
                break
            best_done = sorted(finished.values(), reverse=True)
            if len(best_done) >= n_best and best_done[n_best - 1] >= new[0][0]:
                break  # no open beam can beat the n_best-th finished title any more
            idx = torch.tensor([b for _, b, _, _ in new], dtype=torch.long)
            cache.reorder_cache(idx)
            mask = torch.cat([mask[idx], torch.ones(len(new), 1, dtype=mask.dtype)], dim=1)
            pos = torch.full((len(new), 1), next_pos, dtype=torch.long)
            next_pos += 1
            tokens = torch.tensor([t for _, _, t, _ in new], dtype=torch.long)
            h = _step(sur, tokens, mask, pos, cache)
            active = [(s, node) for s, _, _, node in new]
    ranked = sorted(finished.items(), key=lambda kv: -kv[1])
    return ranked[:n_best]


def choice_scores(
    sur: Surrogate,
    sset: SampleSet,
    indices: Sequence[int] | None,
    choices: Sequence[str],
    *,
    batch_size: int = 8,
) -> np.ndarray:
    """Logits of the first token of each choice (e.g. "Yes"/"No") as the answer's start."""
    indices = list(range(len(sset))) if indices is None else list(indices)
    first = [sur.tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in choices]
    if len(set(first)) != len(first):
        raise ValueError(f"choices {list(choices)} share their first token")
    rows = []
    sur.model.eval()
    with torch.inference_mode(), sur.autocast():
        for start in range(0, len(indices), batch_size):
            h, *_ = _prefill(sur, sset, indices[start : start + batch_size])
            rows.append(sur.lm_head(h).float()[:, first].numpy())
    return np.concatenate(rows) if rows else np.zeros((0, len(choices)), np.float32)
