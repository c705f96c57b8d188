"""Ranking evaluation: full-catalogue and sampled protocols, HR/NDCG/MRR, tables and JSON."""

from whyrec.evaluate.ranking import (
    RankingProtocol,
    compute_ranks,
    evaluate,
    full_ranking,
    parse_protocols,
    sample_negatives,
    sampled_ranking,
)
from whyrec.evaluate.report import EvaluationReport, EvaluationResult
from whyrec.metrics import (
    DEFAULT_KS,
    hit_rate_at_k,
    mask_history,
    mrr,
    ndcg_at_k,
    rank_of_target,
    summarize,
)

__all__ = [
    "DEFAULT_KS",
    "EvaluationReport",
    "EvaluationResult",
    "RankingProtocol",
    "compute_ranks",
    "evaluate",
    "full_ranking",
    "hit_rate_at_k",
    "mask_history",
    "mrr",
    "ndcg_at_k",
    "parse_protocols",
    "rank_of_target",
    "sample_negatives",
    "sampled_ranking",
    "summarize",
]
