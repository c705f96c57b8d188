"""Text metrics on tiny texts whose values are computed by hand in the comments."""

import math

import pytest

from whyrec.evaluate.explanations import (
    BertScoreStyle,
    corpus_bleu,
    distinct_n,
    rouge,
    sentence_bleu,
    unique_sentence_ratio,
)
from whyrec.evaluate.explanations.text import corpus_text_metrics, sentence_usr
from whyrec.explain.textutil import sentences

from .explanation_helpers import minilm

CAND = "the cat sat on the mat"
REF = "the cat sat on a mat"


def test_unique_sentence_ratio():
    # "A b." and "a  B." are the same sentence once lower-cased and spaces collapsed
    assert unique_sentence_ratio(["A b.", "a  B.", "c d."]) == pytest.approx(2 / 3)
    assert unique_sentence_ratio([]) is None
    # sentence level: "Great film." twice + "Other one." -> 2 distinct of 3
    assert sentence_usr(["Great film. Great film.", "Other one."]) == pytest.approx(2 / 3)


def test_sentence_split_keeps_abbreviations():
    assert sentences("Enjoys drama, e.g. Fargo. Also comedy! Right?") == [
        "Enjoys drama, e.g. Fargo.",
        "Also comedy!",
        "Right?",
    ]


def test_distinct_n():
    texts = ["the cat sat", "the cat ran"]
    # unigrams the cat sat the cat ran: 4 distinct of 6
    assert distinct_n(texts, 1) == pytest.approx(4 / 6)
    # bigrams (the cat)(cat sat)(the cat)(cat ran): 3 distinct of 4; none across texts
    assert distinct_n(texts, 2) == pytest.approx(3 / 4)
    assert distinct_n(["one"], 2) is None


def test_bleu_by_hand():
    # n-gram precisions 5/6, 3/5, 2/4, 1/3; equal lengths so no brevity penalty
    expected = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert sentence_bleu(CAND, [REF]) == pytest.approx(expected, abs=0.01)
    assert sentence_bleu(CAND, [CAND]) == pytest.approx(100.0)
    assert corpus_bleu([CAND], [[REF]]) == pytest.approx(expected, abs=0.01)
    assert sentence_bleu(CAND, []) is None
    assert corpus_bleu([CAND, "x"], [[], [""]]) is None


def test_rouge_by_hand():
    r = rouge(CAND, [REF])
    # unigram overlap 5 of 6 both ways; bigram overlap 3 of 5; LCS "the cat sat on mat" = 5
    assert r["rouge1"] == pytest.approx(5 / 6)
    assert r["rouge2"] == pytest.approx(3 / 5)
    assert r["rougeL"] == pytest.approx(5 / 6)
    # best over several references
    assert rouge(CAND, ["dogs bark loudly", CAND])["rouge1"] == pytest.approx(1.0)
    assert rouge(CAND, []) is None


def test_corpus_metrics_report_n():
    out = corpus_text_metrics(["A b.", "A b."], [[], []])
    assert out["usr"] == {"value": 0.5, "n": 2}
    assert out["corpus_bleu"] == {"value": None, "n": 0}


def test_bertscore_style_with_minilm_tokens():
    b = BertScoreStyle(minilm())
    assert b.level == "token"  # MiniLM exposes contextual token vectors
    same = b.score(CAND, [CAND])
    assert same["f1"] == pytest.approx(1.0, abs=1e-6)
    close = b.score("A cat was sitting on the mat.", [CAND])["f1"]
    far = b.score("Stock prices fell sharply in early trading.", [CAND])["f1"]
    assert close > far
    assert b.score(CAND, []) is None
    assert all(math.isfinite(v) for v in same.values())


def test_bertscore_style_falls_back_to_sentences_without_token_vectors():
    from whyrec.embed import HashingEncoder

    b = BertScoreStyle(HashingEncoder(64, cache=False))
    assert b.level == "sentence"
    assert b.score(CAND, [CAND])["f1"] == pytest.approx(1.0, abs=1e-6)
