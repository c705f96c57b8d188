"""Batched local decoding (several sequences per llama_decode) against the sequential
backend, with the real SmolLM2 model: at temperature 0 the replies must be identical."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from whyrec.explain.prompts import (
    PREFERENCE_ASPECTS,
    aspect_preference_messages,
    explanation_messages,
    preference_messages,
)
from whyrec.explain.schemas import explanation_schema, preference_schema
from whyrec.llm import LLMClient, LLMRequest
from whyrec.llm.backends import Decoding
from whyrec.llm.backends.batched import BatchedLocalBackend
from whyrec.llm.backends.local import LocalBackend
from whyrec.llm.errors import LLMRequestError
from whyrec.llm.parse import Schema
from whyrec.llm.settings import LLMSettings

pytestmark = pytest.mark.slow

HISTORIES = [
    ["Toy Story (1995)", "Aladdin (1992)", "Lion King, The (1994)", "Babe (1995)"],
    ["Heat (1995)", "Seven (Se7en) (1995)", "Usual Suspects, The (1995)", "Fargo (1996)"],
    ["Star Wars (1977)", "Contact (1997)", "Alien (1979)", "Twelve Monkeys (1995)"],
]


def _calls() -> list[dict]:
    """Preference (JSON grammar), per-aspect (free text) and explanation prompts."""
    calls = [
        {"messages": preference_messages(h, 3), "schema": Schema.of(preference_schema(3)),
         "max_tokens": 48}
        for h in HISTORIES[:2]
    ]  # fmt: skip
    calls += [
        {"messages": aspect_preference_messages(h, PREFERENCE_ASPECTS[j]), "schema": None,
         "max_tokens": 24}
        for j, h in enumerate(HISTORIES)
    ]  # fmt: skip
    # two more aspects of the first history: their shared prefix is evaluated once
    calls += [
        {"messages": aspect_preference_messages(HISTORIES[0], PREFERENCE_ASPECTS[j]),
         "schema": None, "max_tokens": 24}
        for j in (3, 4)
    ]  # fmt: skip
    calls.append(
        {
            "messages": explanation_messages(
                history=HISTORIES[0],
                preferences=["Enjoys animated films", "Likes musicals", "Loves fairy tales"],
                preference_effects=["without it, rank 1 becomes 4"] * 3,
                item_title="Beauty and the Beast (1991)",
                item_facts=["Animation", "Musical"],
            ),
            "schema": Schema.of(explanation_schema(3)),
            "max_tokens": 64,
        }
    )
    return calls


def _greedy(call: dict) -> Decoding:
    """The decoding of one of :func:`_calls`' calls at temperature 0, seed 0."""
    return Decoding(schema=call["schema"], max_tokens=call["max_tokens"], temperature=0.0, seed=0)


@pytest.fixture(scope="module")
def backends():
    settings = LLMSettings(backend="local", n_threads=1, n_ctx=1024, cache=False)
    local = LocalBackend(settings)
    local.fast_greedy = False  # the reference is llama-cpp-python's own sampler chain
    batched = BatchedLocalBackend(settings, n_parallel=4, local=local)
    yield local, batched
    batched.close()
    local.close()


def test_batched_replies_are_identical_to_sequential_ones(backends):
    local, batched = backends
    calls = _calls()
    seq = [local.generate(c["messages"], _greedy(c)) for c in calls]
    engine = batched.engine
    before = (engine.prompt_tokens, engine.generated_tokens)
    with ThreadPoolExecutor(len(calls)) as pool:  # more calls than slots: queueing too
        par = list(pool.map(lambda c: batched.generate(c["messages"], _greedy(c)), calls))
    for a, b in zip(seq, par, strict=True):
        assert (b.text, b.finish_reason, b.completion_tokens, b.prompt_tokens) == (
            a.text, a.finish_reason, a.completion_tokens, a.prompt_tokens,
        )  # fmt: skip
    assert any(r.finish_reason == "length" for r in seq) and any(r.text for r in seq)
    assert engine.max_active == 4  # sequences really shared decode calls
    assert engine.steps < sum(r.completion_tokens for r in par)
    assert engine.prefix_copies >= 1  # a history prefix was copied, not evaluated again
    assert batched.sequential_fallbacks == 0
    # the counters: each completion token is fed back once, except a reply's last one when
    # it ends on a stop string or the length limit; reused prefixes are not evaluated again
    n_completion = sum(r.completion_tokens for r in par)
    generated = engine.generated_tokens - before[1]
    assert n_completion - len(calls) <= generated <= n_completion
    evaluated = engine.prompt_tokens - before[0]
    assert 0 < evaluated < sum(r.prompt_tokens for r in par)
    info = batched.describe()
    assert info["batched_prompt_tokens"] == engine.prompt_tokens
    assert info["batched_generate_seconds"] > 0 and info["batched_prompt_seconds"] > 0


def test_client_complete_many_batches_and_keeps_order(backends):
    local, batched = backends
    client = LLMClient(LLMSettings(backend="local", n_parallel=4, cache=False), backend=batched)
    reqs = [
        LLMRequest(messages=c["messages"], schema=c["schema"], max_tokens=c["max_tokens"], tag=i)
        for i, c in enumerate(_calls()[2:5])
    ]
    out = client.complete_many(reqs)
    ref = [
        local.generate(r.messages, Decoding(max_tokens=24, temperature=0.0, seed=0)) for r in reqs
    ]
    assert [o.tag for o in out] == [0, 1, 2]
    # Greedy outputs match the sequential backend as a rule (8/8 in bench/batched_decoding.py),
    # but not always: which sequences share a decode call changes the float summation order,
    # and a near-tie between two tokens can flip (seen once in CI after 20 equal tokens:
    # '"The Empire Strikes' vs '"The Force Awak'). So: equal, or equal over a long prefix.
    for o, r in zip(out, ref, strict=True):
        common = len(os.path.commonprefix([o.text, r.text]))
        assert o.text == r.text or common >= len(r.text) // 2, (o.text, r.text)
    assert sum(o.text == r.text for o, r in zip(out, ref, strict=True)) >= 2


def test_too_long_prompts_fail_like_the_sequential_backend(backends):
    local, batched = backends
    long = [{"role": "user", "content": "film " * 1500}]
    with pytest.raises(LLMRequestError, match="exceed context window"):
        local.generate(long, Decoding(max_tokens=8, temperature=0.0, seed=0))
    with pytest.raises(LLMRequestError, match="exceed context window"):
        batched.generate(long, Decoding(max_tokens=8, temperature=0.0, seed=0))


def test_settings_choose_batched_decoding():
    from whyrec.llm.backends import make_backend

    backend = make_backend(LLMSettings(backend="local", n_parallel=3))
    assert isinstance(backend, BatchedLocalBackend) and backend.n_parallel == 3
    assert backend.describe()["decoding"] == "batched (3 sequences)"
    seq = LocalBackend(LLMSettings(backend="local"))
    assert backend.identity() == seq.identity() and backend.model_path == seq.model_path
