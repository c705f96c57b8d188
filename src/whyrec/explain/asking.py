"""The prompting room: the LLM requests that ask for a reason from one item's evidence.

:func:`explanation_requests` builds, from the evidence chosen for one item, either one
request for LANE's four steps as JSON (``cot``) or one short free-text request per cited
piece of evidence (``sentences``); :func:`baseline_request` is the no-alignment baseline's
request (history and item alone). The message texts live in :mod:`whyrec.explain.prompts`;
:func:`ask` sends one request and keeps any failure as the outcome.
"""

from __future__ import annotations

from typing import Any

from whyrec.explain.evidence import ItemEvidence, evidence_pieces
from whyrec.explain.prompts import (
    BASELINE_VERSION,
    EVIDENCE_SENTENCE_VERSION,
    EXPLANATION_VERSION,
    baseline_messages,
    evidence_sentence_messages,
    explanation_messages,
)
from whyrec.explain.schemas import BaselineExplanation, explanation_schema
from whyrec.explain.templates import strength
from whyrec.llm.client import CompletionClient, LLMRequest

#: Token budget of one evidence sentence (sentences mode).
SENTENCE_TOKENS = 60
#: Token budget of the baseline's reply.
BASELINE_TOKENS = 300


def explanation_requests(
    ev: ItemEvidence,
    history: list[str],
    *,
    mode: str,
    max_tokens: int,
    temperature: float,
) -> tuple[list[LLMRequest], int]:
    """``(requests, m)`` for one item: ``history`` is the titles the prompt shows, ``m``
    the number of cited preferences the ``cot`` reply's schema asks about (0 for
    ``sentences``)."""
    if mode == "sentences":
        requests = [
            _request(
                evidence_sentence_messages(
                    history=history, item_title=ev.title, item_facts=ev.facts, piece=piece
                ),
                None,
                SENTENCE_TOKENS,
                temperature,
                EVIDENCE_SENTENCE_VERSION,
            )  # fmt: skip
            for piece in evidence_pieces(ev)
        ]
        return requests, 0
    cited_p = ev.cited_preference_effects()
    messages = explanation_messages(
        history=history,
        item_title=ev.title,
        item_facts=ev.facts,
        preferences=[str(p["preference"]) for p in cited_p],
        preference_effects=[
            f"matters {strength(ev.share(p))}; without it, rank {ev.rank} becomes "
            f"{p['rank_without']}"
            for p in cited_p
        ],
        # titles alone: a weight after a title gets copied into the reason with it
        influential=[str(h["title"]) for h in ev.cited_history_effects()],
        shared_facts=ev.shared_facts,
    )
    m = len(cited_p)
    return [
        _request(messages, explanation_schema(m), max_tokens, temperature, EXPLANATION_VERSION)
    ], m


def baseline_request(
    history: list[str], item_title: str, item_text: str, *, temperature: float
) -> LLMRequest:
    """The no-alignment baseline's request: the same LLM with only history and item."""
    messages = baseline_messages(history=history, item_title=item_title, item_text=item_text)
    return _request(
        messages, BaselineExplanation, BASELINE_TOKENS, temperature, BASELINE_VERSION, "baseline"
    )


def _request(
    messages: list[dict[str, str]],
    schema: Any,
    max_tokens: int,
    temperature: float,
    prompt_version: str,
    stage: str = "explanations",
) -> LLMRequest:
    """One request as every explanation stage sends it: seeded 0, so a cached reply holds."""
    return LLMRequest(
        messages=messages,
        schema=schema,
        max_tokens=max_tokens,
        temperature=temperature,
        seed=0,
        stage=stage,
        prompt_version=prompt_version,
    )


def ask(client: CompletionClient, request: LLMRequest) -> Any:
    """One planned request answered by ``client``: its result, or the exception it raised
    (typed LLM errors and anything else become part of the outcome, never a crash)."""
    try:
        return request.send(client)
    except Exception as exc:
        return exc
