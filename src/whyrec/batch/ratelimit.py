"""A queries-per-second limit for any LLM backend (every attempt counts, retries too)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # whyrec.batch imports no LLM code until a job runs
    from whyrec.llm.backends import Decoding, Message, RawReply


class RateLimiter:
    """Spaces calls at least ``1/qps`` seconds apart, across threads (a smooth token bucket
    with a burst of ``burst`` calls)."""

    def __init__(
        self,
        qps: float,
        *,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if qps <= 0:
            raise ValueError(f"qps must be positive, got {qps}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        self.interval = 1.0 / qps
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next = clock() - (burst - 1) * self.interval  # earliest start of the next call

    def acquire(self) -> float:
        """Block until a call may start; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            floor = now - (self.burst - 1) * self.interval
            start = max(self._next, floor)
            self._next = start + self.interval
        wait = start - now
        if wait > 0:
            self._sleep(wait)
        return max(wait, 0.0)


class RateLimitedBackend:
    """Wraps a backend so that its ``generate`` calls respect a :class:`RateLimiter`.

    The wrapper keeps the inner backend's name, model and cache identity, so cached
    replies and accounting are unchanged.
    """

    def __init__(self, inner: Any, qps: float, *, burst: int = 1) -> None:
        self.inner = inner
        self.limiter = RateLimiter(qps, burst=burst)
        self.name = inner.name
        self.model = inner.model
        self.waited_s = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def generate(self, messages: list[Message], decoding: Decoding) -> RawReply:
        """Wait for a slot, then run one attempt on the inner backend."""
        self.waited_s += self.limiter.acquire()
        return self.inner.generate(messages, decoding)

    def identity(self) -> dict[str, Any]:
        return self.inner.identity()

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "qps_limit": round(1.0 / self.limiter.interval, 3)}

    def close(self) -> None:
        self.inner.close()
