"""Typed errors of the LLM layer.

Callers decide what to do by type: a transport problem (server down, rate limited)
is worth waiting for, an invalid reply is worth a fallback, a bad request is a bug.

Every message (and the reply text, problems and parsed ``raw`` value of
:class:`LLMOutputError`) passes through :func:`whyrec.safety.redact` when the error is
made, with every API key value the process holds (:func:`register_secret`), so no store,
report or log line downstream ever holds a credential an error body echoed back.
"""

from __future__ import annotations

from typing import Any

from whyrec.errors import ConfigError, WhyrecError
from whyrec.safety import redact, redact_tree
from whyrec.safety import register_secret as register_secret  # the backends' entry point


class LLMError(WhyrecError):
    """Base class of every error the LLM layer raises on purpose (message redacted)."""

    def __init__(self, message: Any = "", *args: Any) -> None:
        super().__init__(redact(message), *args)


class LLMConfigError(LLMError, ConfigError):
    """The LLM settings are missing, contradictory or point at something unusable."""


class LLMTransientError(LLMError):
    """One attempt failed in a way that may succeed later (timeout, 429, 5xx, connection,
    a reply body that is not a chat completion).

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
    ``attempts`` how many replies were tried (first ask plus re-asks). ``cached`` is
    true when the failure was read from the reply cache (the negative cache) instead of
    being produced now; no model was asked then.
    """

    def __init__(
        self,
        message: str,
        *,
        text: str,
        problems: list[str],
        attempts: int,
        raw: Any = None,
        cached: bool = False,
    ) -> None:
        super().__init__(message)
        self.text = redact(text) if text else text
        self.problems = [redact(p) for p in problems]
        self.attempts = attempts
        self.raw = redact_tree(raw)
        self.cached = cached


def is_outage(error: BaseException) -> bool:
    """Did this call fail because the model could not be reached or refused the call
    (endpoint down, key rejected, timeouts, 5xx after the retries, a broken setup), as
    opposed to the model answering with replies that never validated?

    Outcomes of an outage are worth asking again on the next run; they are never cached.
    """
    return not isinstance(error, LLMOutputError)


def problems_of(error: BaseException) -> list[str]:
    """Why a call failed, as messages: an :class:`LLMOutputError`'s validation problems,
    else the exception's type and message."""
    return list(getattr(error, "problems", []) or [f"{type(error).__name__}: {error}"])
