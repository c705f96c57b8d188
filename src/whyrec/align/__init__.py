"""Tuning-based alignment: a small LLM fine-tuned to act as a surrogate of a recommender.

* :mod:`whyrec.align.builders` — training data from a trained recommender ``f``
  (RecExplainer's alignment tasks in behaviour / intention / hybrid form) and the
  recommendation-knowledge mixture of Cao et al. (retrieval, ranking, rating, MIM, MLM,
  BPR);
* :mod:`whyrec.align.samples` — the sample directory format, OpenAI chat JSONL and
  Hugging Face ``datasets`` export;
* :mod:`whyrec.align.tuning` — LoRA fine-tuning on CPU (transformers + peft) with
  ``<user>``/``<item>`` tokens and connectors for intention alignment;
* :mod:`whyrec.align.decoding` / :mod:`whyrec.align.evaluation` — greedy, trie-constrained
  and beam decoding; alignment and recommendation-knowledge metrics;
* :mod:`whyrec.align.explainer` — explanations written by a surrogate.

Tuning needs the ``tune`` extra (``pip install 'whyrec[tune]'``); torch-free parts import
without it.
"""

from __future__ import annotations

from whyrec.align.builders import (
    ALIGN_FORMS,
    ALIGN_TASKS,
    AUX_TASKS,
    KNOWLEDGE_TASKS,
    REC_ONLY_MIX,
    REC_TASKS,
    WITH_AUX_MIX,
    AlignmentConfig,
    KnowledgeConfig,
    build_alignment,
    build_knowledge,
    knowledge_eval_samples,
    recommender_view,
    user_states,
)
from whyrec.align.samples import Sample, SampleSet, export_openai, to_hf_dataset

__all__ = [
    "ALIGN_FORMS",
    "ALIGN_TASKS",
    "AUX_TASKS",
    "KNOWLEDGE_TASKS",
    "REC_ONLY_MIX",
    "REC_TASKS",
    "WITH_AUX_MIX",
    "AlignmentConfig",
    "KnowledgeConfig",
    "Sample",
    "SampleSet",
    "build_alignment",
    "build_knowledge",
    "export_openai",
    "knowledge_eval_samples",
    "recommender_view",
    "to_hf_dataset",
    "user_states",
]
