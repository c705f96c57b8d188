"""Decoding and the alignment / knowledge metrics."""

from __future__ import annotations

import numpy as np
import pytest

from whyrec.align.builders import AlignmentConfig, build_alignment, knowledge_eval_samples
from whyrec.align.evaluation import (
    chance_ranking_ndcg,
    evaluate_alignment,
    evaluate_knowledge,
    parse_letters,
    position_gain,
    ranking_ndcg,
    recommender_knowledge,
)
from whyrec.align.text import clean_text

pytest.importorskip("peft")


def test_metric_helpers_by_hand():
    assert position_gain(0, 5) == (1.0, 1.0)
    assert position_gain(1, 5) == pytest.approx((1.0, 1 / np.log2(3)))
    assert position_gain(5, 5) == (0.0, 0.0) and position_gain(None, 5) == (0.0, 0.0)
    assert ranking_ndcg([0, 1, 2, 3, 4], 5) == pytest.approx(1.0)
    worst = ranking_ndcg([4, 3, 2, 1, 0], 5)
    assert worst < chance_ranking_ndcg(5) < 1.0
    # rel 5..1 by f's position: DCG of order (1, 0) over n=2 is 1/1 + 2/log2(3)
    assert ranking_ndcg([1, 0], 2) == pytest.approx((1 + 2 / np.log2(3)) / (2 + 1 / np.log2(3)))
    assert parse_letters("C, A, E, B, D", 5) == ([2, 0, 4, 1, 3], True)
    assert parse_letters("B then A", 5) == ([1, 0, 2, 3, 4], False)  # missing: shown order
    assert parse_letters("A: Answer is D", 5)[0][:2] == [0, 3]


@pytest.fixture(scope="module")
def untuned_tiny(tiny_base_module):
    from whyrec.align.tuning import Surrogate, TuneConfig

    model, tok = tiny_base_module
    return Surrogate.create(TuneConfig(lora_r=2), None, base_model=(model, tok))


@pytest.fixture(scope="module")
def tiny_base_module(smol_tokenizer):
    import copy

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = copy.deepcopy(smol_tokenizer)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(cfg).eval(), tok


def test_constrained_decoding_only_produces_catalogue_titles(untuned_tiny, f_model, ring_ds):
    from whyrec.align.decoding import TitleTrie, beam_titles, generate

    sset = build_alignment(
        f_model,
        ring_ds,
        np.arange(4),
        AlignmentConfig(form="behaviour", per_state=True, tasks={"retrieval": 1}),
        split="test",
    )
    trie = TitleTrie(untuned_tiny, ring_ds.titles)
    assert len(trie) == 30
    titles = generate(untuned_tiny, sset, trie=trie, max_new_tokens=40)
    assert all(t in trie.titles for t in titles)
    free = generate(untuned_tiny, sset, max_new_tokens=5)
    assert len(free) == 4 and all(isinstance(t, str) for t in free)
    # batching does not change greedy answers
    one_by_one = [generate(untuned_tiny, sset, [i], trie=trie)[0] for i in range(4)]
    assert one_by_one == titles
    exclude = [ring_ds.titles[i] for i in range(10)]
    ranked = beam_titles(untuned_tiny, sset, 0, trie, beams=8, n_best=8, exclude=exclude)
    names = [t for t, _ in ranked]
    assert len(names) == 8 and len(set(names)) == 8
    assert not set(names) & {clean_text(t) for t in exclude}
    scores = [s for _, s in ranked]
    assert scores == sorted(scores, reverse=True) and all(s < 0 for s in scores)


def test_alignment_evaluation_runs_every_metric(untuned_tiny, f_model, ring_ds):
    from whyrec.align.decoding import TitleTrie

    users = np.arange(40, 44)
    ev = build_alignment(
        f_model,
        ring_ds,
        users,
        AlignmentConfig(form="behaviour", per_state=True, max_history=4),
        split="test",
    )
    trie = TitleTrie(untuned_tiny, ring_ds.titles)
    rep = evaluate_alignment(untuned_tiny, ev, trie=trie, batch_size=4)
    assert rep["retrieval"]["n"] == 4 and rep["retrieval_trie"]["valid_title_rate"] == 1.0
    assert rep["interest"]["n"] == 8
    assert 0.0 <= rep["ranking"]["NDCG@5"] <= 1.0
    assert rep["ranking"]["chance_NDCG@5"] == pytest.approx(chance_ranking_ndcg(5))
    assert "history" not in rep  # the behaviour form cannot pose it
    for key in ("retrieval", "retrieval_trie"):
        assert 0.0 <= rep[key]["NDCG@5"] <= rep[key]["HR@5"] <= 1.0


def test_knowledge_metrics_beside_the_recommender(untuned_tiny, f_model, ring_ds):
    from whyrec.align.decoding import TitleTrie
    from whyrec.evaluate import evaluate

    users = np.arange(ring_ds.n_users)
    ref = recommender_knowledge(f_model, ring_ds, users)
    full = evaluate(f_model, ring_ds, protocols="full")["full"]
    assert ref["n"] == full.n_users
    assert ref["Recall@10"] == pytest.approx(full["HR@10"])
    assert ref["NDCG@10"] == pytest.approx(full["NDCG@10"])

    ev = knowledge_eval_samples(ring_ds, np.arange(3), max_history=4)
    trie = TitleTrie(untuned_tiny, ring_ds.titles)
    rep = evaluate_knowledge(untuned_tiny, ev, trie, ring_ds.titles, beams=4)
    assert rep["n"] == 3 and 0 <= rep["NDCG@10"] <= rep["Recall@10"] <= 1


def test_surrogate_explanations_go_through_the_quality_harness(untuned_tiny, f_model, ring_ds):
    from whyrec.align.explainer import SurrogateExplainer, explanation_cases
    from whyrec.evaluate.explanations import Catalogue, ExplanationScorer, summarize_systems

    ex = SurrogateExplainer(untuned_tiny, f_model, max_new_tokens=12)
    cases = explanation_cases(ex, [0, 1], low_rank=5)
    assert [c.position for c in cases] == ["top", "low"] * 2
    assert cases[0].rank == 1 and cases[1].rank == 5
    assert all(c.system == "surrogate-behaviour" and c.text for c in cases)
    ExplanationScorer(Catalogue.from_dataset(ring_ds)).score_all(cases)
    rows = summarize_systems(cases)
    assert {r["system"] for r in rows} == {"surrogate-behaviour"}
    assert all(r["n"] >= 1 for r in rows if r["metric"] == "failed")
