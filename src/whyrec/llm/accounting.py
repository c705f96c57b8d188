"""Token, latency and cost accounting per pipeline stage.

Tokens count what was actually spent: every attempt (retries and re-asks included) of
every call that reached the model; cache hits spend nothing and are counted apart
(``cached``), and so are negative cache hits (``cached_failures``: calls answered with a
remembered "never validated" failure, also counted in ``cached`` and ``failures``).
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, replace
from typing import Any

from whyrec.llm.settings import Price


@dataclass(frozen=True)
class StageUsage:
    """Totals for one stage (``"preferences"``, ``"explanations"``, ...)."""

    stage: str
    calls: int = 0
    cached: int = 0
    failures: int = 0
    cached_failures: int = 0
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cost_usd: float | None = 0.0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens spent."""
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for reports and run manifests)."""
        return {**asdict(self), "total_tokens": self.total_tokens}


def cost_of(price: Price | None, prompt_tokens: int, completion_tokens: int) -> float | None:
    """US dollars for the given tokens, or ``None`` when the price is unknown."""
    if price is None:
        return None
    return (prompt_tokens * price.input + completion_tokens * price.output) / 1_000_000


class Accounting:
    """Thread-safe running totals by stage. ``price=None`` with ``free=False`` means the
    cost is unknown (an API model missing from the price table)."""

    def __init__(self, *, price: Price | None, free: bool) -> None:
        self.price = Price(input=0, output=0) if free else price
        self._stages: dict[str, StageUsage] = {}
        self._lock = threading.Lock()

    def record(
        self,
        stage: str,
        *,
        cached: bool,
        failed: bool,
        attempts: int,
        prompt_tokens: int,
        completion_tokens: int,
        latency_s: float,
    ) -> None:
        """Add one finished call (successful or not) to its stage."""
        with self._lock:
            cur = self._stages.get(stage) or StageUsage(stage=stage)
            p = cur.prompt_tokens + prompt_tokens
            c = cur.completion_tokens + completion_tokens
            self._stages[stage] = replace(
                cur,
                calls=cur.calls + 1,
                cached=cur.cached + int(cached),
                failures=cur.failures + int(failed),
                cached_failures=cur.cached_failures + int(cached and failed),
                attempts=cur.attempts + attempts,
                prompt_tokens=p,
                completion_tokens=c,
                latency_s=cur.latency_s + latency_s,
                cost_usd=cost_of(self.price, p, c),
            )

    def by_stage(self) -> dict[str, StageUsage]:
        """A snapshot of every stage's totals."""
        with self._lock:
            return dict(self._stages)

    def total(self) -> StageUsage:
        """All stages added together."""
        stages = self.by_stage().values()
        p = sum(s.prompt_tokens for s in stages)
        c = sum(s.completion_tokens for s in stages)
        return StageUsage(
            stage="total",
            calls=sum(s.calls for s in stages),
            cached=sum(s.cached for s in stages),
            failures=sum(s.failures for s in stages),
            cached_failures=sum(s.cached_failures for s in stages),
            attempts=sum(s.attempts for s in stages),
            prompt_tokens=p,
            completion_tokens=c,
            latency_s=sum(s.latency_s for s in stages),
            cost_usd=cost_of(self.price, p, c),
        )

    def reset(self) -> None:
        """Forget all totals."""
        with self._lock:
            self._stages.clear()
