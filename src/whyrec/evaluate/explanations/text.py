"""Text metrics: diversity and length, and overlap with reference texts when there are any.

* ``usr`` — unique sentence ratio as in PETER (Li et al. 2021): distinct explanations
  (compared lower-cased, whitespace collapsed) ÷ explanations. ``usr_sentences`` does the
  same over the individual sentences of all explanations.
* ``distinct1`` / ``distinct2`` — distinct word uni-/bigrams ÷ all uni-/bigrams over the
  system's explanations (lower-cased word tokens; bigrams do not cross explanations).
* ``words`` — words per explanation.
* ``bleu`` — sentence BLEU (sacrebleu, exponential smoothing, 0–100) per explanation
  against its references; ``corpus_bleu`` the corpus score.
* ``rouge1`` / ``rouge2`` / ``rougeL`` — ROUGE F1 (rouge-score, Porter stemmer), best
  over the references.
* ``bertscore_minilm_f1`` — a *BERTScore-style* F1 computed with all-MiniLM-L6-v2 (the
  packaged sentence encoder), not the published BERTScore: every token of the text is
  matched greedily to its most similar reference token (cosine of the encoder's final
  contextual token vectors) and vice versa; precision and recall are the mean best
  similarities, F1 their harmonic mean; no IDF weighting and no baseline rescaling, so
  its values are not comparable with published BERTScore figures — compare systems
  within one run. With an encoder that exposes no token vectors, whole sentences are
  matched instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from whyrec.explain.textutil import ngrams, normalize_text, sentences, words


def unique_sentence_ratio(texts: Sequence[str]) -> float | None:
    """Distinct texts ÷ texts (PETER's USR), None for no texts."""
    if not texts:
        return None
    return len({normalize_text(t) for t in texts}) / len(texts)


def sentence_usr(texts: Sequence[str]) -> float | None:
    """USR over the sentences of all ``texts``."""
    sents = [s for t in texts for s in sentences(t)]
    return unique_sentence_ratio(sents)


def distinct_n(texts: Sequence[str], n: int) -> float | None:
    """Distinct ``n``-grams ÷ all ``n``-grams over ``texts`` (None if there are none)."""
    grams = [g for t in texts for g in ngrams(words(t), n)]
    if not grams:
        return None
    return len(set(grams)) / len(grams)


def length_words(text: str) -> int:
    return len(words(text))


def sentence_bleu(text: str, references: Sequence[str]) -> float | None:
    """sacrebleu sentence BLEU (0–100, exponential smoothing); None without references."""
    refs = [r for r in references if r and r.strip()]
    if not refs:
        return None
    import sacrebleu

    return float(sacrebleu.sentence_bleu(text, refs, smooth_method="exp").score)


def corpus_bleu(texts: Sequence[str], references: Sequence[Sequence[str]]) -> float | None:
    """sacrebleu corpus BLEU over the texts that have references (first reference each)."""
    pairs = [
        (t, [r for r in rs if r and r.strip()]) for t, rs in zip(texts, references, strict=True)
    ]
    pairs = [(t, rs) for t, rs in pairs if rs]
    if not pairs:
        return None
    import sacrebleu

    width = max(len(rs) for _, rs in pairs)
    # sacrebleu wants reference *streams*; pad short lists by repeating the first reference
    streams = [[rs[k] if k < len(rs) else rs[0] for _, rs in pairs] for k in range(width)]
    return float(sacrebleu.corpus_bleu([t for t, _ in pairs], streams).score)


_ROUGE: Any = None


def rouge(text: str, references: Sequence[str]) -> dict[str, float] | None:
    """ROUGE-1/2/L F1 (best over references); None without references."""
    refs = [r for r in references if r and r.strip()]
    if not refs:
        return None
    global _ROUGE
    if _ROUGE is None:
        from rouge_score import rouge_scorer

        _ROUGE = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    best = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for r in refs:
        scores = _ROUGE.score(r, text)
        for k in best:
            best[k] = max(best[k], float(scores[k].fmeasure))
    return best


class BertScoreStyle:
    """Greedy token matching with a sentence encoder's token vectors (see module doc)."""

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder
        self._st = self._sentence_transformer(encoder)

    @property
    def level(self) -> str:
        return "token" if self._st is not None else "sentence"

    @staticmethod
    def _sentence_transformer(encoder: Any) -> Any:
        try:
            model = encoder.model  # SentenceTransformerEncoder loads it lazily
        except Exception:
            return None
        return model if hasattr(model, "tokenizer") and hasattr(model, "encode") else None

    def _token_vectors(self, text: str) -> np.ndarray:
        out = self._st.encode(
            [text], output_value=None, convert_to_numpy=False, show_progress_bar=False
        )[0]
        ids = out["input_ids"].tolist()
        mask = out["attention_mask"].tolist()
        special = set(self._st.tokenizer.all_special_ids)
        emb = out["token_embeddings"].detach().cpu().numpy().astype(np.float64)
        keep = [k for k, (t, a) in enumerate(zip(ids, mask, strict=True)) if a and t not in special]
        v = emb[keep] if keep else emb[:1]
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    def _sentence_vectors(self, text: str) -> np.ndarray:
        sents = sentences(text) or [text]
        v = np.asarray(self.encoder.encode(sents), dtype=np.float64)
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    def _vectors(self, text: str) -> np.ndarray:
        return self._token_vectors(text) if self._st is not None else self._sentence_vectors(text)

    def score(self, text: str, references: Sequence[str]) -> dict[str, float] | None:
        """Precision, recall and F1 against the best-matching reference (by F1)."""
        refs = [r for r in references if r and r.strip()]
        if not refs or not text.strip():
            return None
        c = self._vectors(text)
        best: dict[str, float] | None = None
        for r in refs:
            v = self._vectors(r)
            sim = c @ v.T
            p = float(sim.max(axis=1).mean())
            rec = float(sim.max(axis=0).mean())
            f = 2 * p * rec / (p + rec) if p + rec > 0 else 0.0
            if best is None or f > best["f1"]:
                best = {"precision": p, "recall": rec, "f1": f}
        return best


def case_text_metrics(
    text: str, references: Sequence[str], bertscore: BertScoreStyle | None = None
) -> dict[str, float | None]:
    """Per-explanation text metrics (reference metrics are None without references)."""
    out: dict[str, float | None] = {"words": float(length_words(text))}
    out["bleu"] = sentence_bleu(text, references)
    r = rouge(text, references)
    for k in ("rouge1", "rouge2", "rougeL"):
        out[k] = r[k] if r else None
    b = bertscore.score(text, references) if bertscore is not None else None
    out["bertscore_minilm_f1"] = b["f1"] if b else None
    return out


def corpus_text_metrics(
    texts: Sequence[str], references: Sequence[Sequence[str]] | None = None
) -> dict[str, dict[str, Any]]:
    """Set-level diversity metrics (and corpus BLEU) of one system's explanations."""
    refs = references if references is not None else [[] for _ in texts]
    return {
        "usr": {"value": unique_sentence_ratio(texts), "n": len(texts)},
        "usr_sentences": {
            "value": sentence_usr(texts),
            "n": sum(len(sentences(t)) for t in texts),
        },
        "distinct1": {"value": distinct_n(texts, 1), "n": len(texts)},
        "distinct2": {"value": distinct_n(texts, 2), "n": len(texts)},
        "corpus_bleu": {
            "value": corpus_bleu(texts, refs),
            "n": sum(1 for r in refs if any(x and x.strip() for x in r)),
        },
    }
