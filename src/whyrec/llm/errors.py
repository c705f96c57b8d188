"""Typed errors of the LLM layer.

Callers decide what to do by type: a transport problem (server down, rate limited)
is worth waiting for, an invalid reply is worth a fallback, a bad request is a bug.
"""

from __future__ import annotations

from typing import Any

from whyrec.errors import ConfigError, WhyrecError


class LLMError(WhyrecError):
    """Base class of every error the LLM layer raises on purpose."""


class LLMConfigError(LLMError, ConfigError):
    """The LLM settings are missing, contradictory or point at something unusable."""


class LLMTransientError(LLMError):
    """One attempt failed in a way that may succeed later (timeout, 429, 5xx, connection).

    Backends raise it; the client retries it with backoff. ``retry_after`` carries a
    server's ``Retry-After`` hint in seconds when it sent one.
    """

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class LLMUnavailableError(LLMError):
    """Every attempt failed with a transient error; ``attempts`` tries were made."""

    def __init__(self, message: str, *, attempts: int, last_error: LLMTransientError) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.last_error = last_error


class LLMRequestError(LLMError):
    """The backend refused the request itself (4xx other than 408/429, bad parameters).

    Retrying the same request cannot help, so it is never retried.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class LLMOutputError(LLMError):
    """The model never produced a reply that parses and matches the schema.

    ``text`` is the last reply, ``problems`` the validation messages for it, and
    ``attempts`` how many replies were tried (first ask plus re-asks).
    """

    def __init__(
        self, message: str, *, text: str, problems: list[str], attempts: int, raw: Any = None
    ) -> None:
        super().__init__(message)
        self.text = text
        self.problems = problems
        self.attempts = attempts
        self.raw = raw
