"""Dry-run estimates of tokens, money and time for an LLM stage, before anything is spent.

Per-call sizes come from a :class:`StageProfile`. The defaults below are derived, not
guessed: a history line such as ``- Usual Suspects, The (1995)`` averages 12 SmolLM2
tokens over MovieLens titles, a MovieLens-100k user has 106 ratings on average (104
after holding out validation and test items), and a preference sentence is about 20
tokens. Every number can be overridden, and a short calibration run can replace the
speed defaults with measured ones.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from whyrec.llm.accounting import cost_of
from whyrec.llm.settings import LLMSettings, Price

if TYPE_CHECKING:
    from whyrec.llm.client import LLMClient


@dataclass(frozen=True)
class StageProfile:
    """Typical size of one call of a stage, in tokens."""

    stage: str
    instruction_tokens: int
    history_items: int
    tokens_per_item: int
    extra_prompt_tokens: int
    completion_tokens: int
    calls_per_user: float = 1.0

    @property
    def prompt_tokens(self) -> int:
        """Instruction + history lines + anything else in the prompt."""
        return (
            self.instruction_tokens
            + self.history_items * self.tokens_per_item
            + self.extra_prompt_tokens
        )


STAGE_PROFILES: dict[str, StageProfile] = {
    # LANE step 3: the history (most recent <= 200 titles) in, 5 preference sentences out.
    "preferences": StageProfile(
        stage="preferences",
        instruction_tokens=200,
        history_items=104,
        tokens_per_item=12,
        extra_prompt_tokens=0,
        completion_tokens=130,
    ),
    # LANE step 7: recent history (50 lines), 5 weighted preferences (~25 tokens each) and
    # the target item in; four reasoning steps and a final reason out.
    "explanations": StageProfile(
        stage="explanations",
        instruction_tokens=400,
        history_items=50,
        tokens_per_item=12,
        extra_prompt_tokens=5 * 25 + 30,
        completion_tokens=400,
    ),
}


@dataclass(frozen=True)
class Throughput:
    """Tokens per second for reading the prompt (prefill) and writing the reply (decode)."""

    prefill: float
    decode: float
    source: str

    def seconds(self, prompt_tokens: float, completion_tokens: float) -> float:
        """Time for one call of the given size."""
        return prompt_tokens / self.prefill + completion_tokens / self.decode


# Fallbacks when neither settings nor a calibration give speeds. Local: SmolLM2-135M
# Q4_1 on 2 CPU threads (bench/llm_throughput.py). API: a typical hosted model.
DEFAULT_THROUGHPUT = {
    "local": Throughput(prefill=700.0, decode=55.0, source="default for SmolLM2-135M, 2 threads"),
    "openai": Throughput(prefill=3000.0, decode=60.0, source="default for a hosted API model"),
}


@dataclass(frozen=True)
class Estimate:
    """What a stage over N users will cost, with the assumptions that produced it."""

    stage: str
    users: int
    backend: str
    model: str
    calls: int
    prompt_tokens_per_call: int
    completion_tokens_per_call: int
    retry_rate: float
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    price: Price | None
    concurrency: int
    seconds: float
    throughput: Throughput

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        out = asdict(self)
        out["price"] = self.price.model_dump() if self.price is not None else None
        out["total_tokens"] = self.total_tokens
        return out


def default_model_name(settings: LLMSettings) -> str:
    """The model a client built from ``settings`` would use, without loading anything."""
    if settings.model:
        return settings.model
    if settings.is_local:
        from whyrec.llm.backends.local import packaged_model_path

        path = settings.model_path or packaged_model_path()
        return path.stem
    return "unknown"


def estimate_stage(
    stage: str,
    users: int,
    settings: LLMSettings,
    *,
    profile: StageProfile | None = None,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    calls_per_user: float | None = None,
    retry_rate: float = 0.1,
    throughput: Throughput | None = None,
    concurrency: int | None = None,
) -> Estimate:
    """Estimate tokens, cost and wall time of running ``stage`` for ``users`` users.

    ``retry_rate`` is the expected share of calls that need one extra ask (a re-ask
    after an invalid reply, or a retry); those calls are counted twice. The local
    backend runs one call at a time, so its concurrency is 1.
    """
    if users < 0:
        raise ValueError(f"users must be >= 0, got {users}")
    if not 0 <= retry_rate <= 10:
        raise ValueError(f"retry_rate must be between 0 and 10, got {retry_rate}")
    if profile is None:
        if stage not in STAGE_PROFILES:
            raise ValueError(
                f"unknown stage {stage!r}: expected one of {', '.join(STAGE_PROFILES)} "
                "or an explicit profile"
            )
        profile = STAGE_PROFILES[stage]
    if calls_per_user is not None:
        profile = replace(profile, calls_per_user=calls_per_user)
    p_call = prompt_tokens if prompt_tokens is not None else profile.prompt_tokens
    c_call = completion_tokens if completion_tokens is not None else profile.completion_tokens
    calls = math.ceil(users * profile.calls_per_user)
    effective_calls = calls * (1.0 + retry_rate)
    p_total = round(effective_calls * p_call)
    c_total = round(effective_calls * c_call)

    model = default_model_name(settings)
    local = settings.is_local
    price = Price(input=0, output=0) if local else settings.price_for(model)
    if throughput is None:
        if settings.prefill_tokens_per_second or settings.decode_tokens_per_second:
            base = DEFAULT_THROUGHPUT[settings.backend]
            throughput = Throughput(
                prefill=settings.prefill_tokens_per_second or base.prefill,
                decode=settings.decode_tokens_per_second or base.decode,
                source="settings",
            )
        else:
            throughput = DEFAULT_THROUGHPUT[settings.backend]
    workers = 1 if local else max(1, concurrency or settings.concurrency)
    seconds = effective_calls * throughput.seconds(p_call, c_call) / workers
    return Estimate(
        stage=stage,
        users=users,
        backend=settings.backend,
        model=model,
        calls=calls,
        prompt_tokens_per_call=p_call,
        completion_tokens_per_call=c_call,
        retry_rate=retry_rate,
        prompt_tokens=p_total,
        completion_tokens=c_total,
        cost_usd=cost_of(price, p_total, c_total),
        price=price,
        concurrency=workers,
        seconds=seconds,
        throughput=throughput,
    )


_CALIBRATION_TEXT = (
    "Here is a list of films a viewer watched: Toy Story (1995); GoldenEye (1995); "
    "Twelve Monkeys (1995); Babe (1995); Dead Man Walking (1995); Richard III (1995); "
    "Seven (1995); The Usual Suspects (1995); Mighty Aphrodite (1995); Il Postino (1994); "
    "Mr. Holland's Opus (1995); From Dusk Till Dawn (1996); Star Wars (1977); Fargo (1996); "
    "Return of the Jedi (1983); Contact (1997); The English Patient (1996); Scream (1996); "
    "Liar Liar (1997); Air Force One (1997); Independence Day (1996); Titanic (1997). "
)


def calibrate(client: LLMClient, *, decode_tokens: int = 64) -> Throughput:
    """Measure prefill and decode speed with two short uncached calls.

    A first tiny call loads the model (or opens the connection) so that is not timed.
    Each timed call starts with a fresh random marker so no prompt prefix is reused from an
    earlier call. The first asks for one token (mostly prefill), the second for
    ``decode_tokens``; decode speed is what the extra tokens cost on top.
    """

    def ask(n: int) -> tuple[float, int, int]:
        marker = uuid.uuid4().hex
        msgs = [
            {"role": "system", "content": f"Session {marker}."},
            {
                "role": "user",
                "content": _CALIBRATION_TEXT
                + "Write a long, detailed paragraph about what this viewer enjoys.",
            },
        ]
        t0 = time.perf_counter()
        res = client.complete(
            msgs, max_tokens=n, temperature=0.0, use_cache=False, stage="calibration"
        )
        return time.perf_counter() - t0, res.prompt_tokens, res.completion_tokens

    client.complete("Hi", max_tokens=1, use_cache=False, stage="calibration")  # load / connect
    t1, p1, _ = ask(1)
    t2, p2, c2 = ask(decode_tokens)
    prefill = p1 / t1 if t1 > 0 and p1 > 0 else DEFAULT_THROUGHPUT[client.backend.name].prefill
    decode_time = t2 - p2 / prefill
    if c2 > 1 and decode_time > 0:
        decode = (c2 - 1) / decode_time
    else:
        decode = DEFAULT_THROUGHPUT[client.backend.name].decode
    return Throughput(prefill=prefill, decode=decode, source=f"calibrated on {client.model}")
