"""What a backend does: one chat completion attempt, nothing more.

Retries, re-asks, caching and accounting live in the client, so every backend gets
them the same way. A backend raises :class:`LLMTransientError` for failures worth
retrying and :class:`LLMRequestError` for the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

from whyrec.llm.parse import Schema

Message = dict[str, str]


@dataclass(frozen=True, kw_only=True)
class Decoding:
    """How to decode one reply: the four settings that travel together from the client
    through every backend (and across the worker pool's pipe) and, with the messages,
    decide the reply. ``schema``, when given, is the JSON the reply must match."""

    max_tokens: int
    temperature: float
    seed: int | None = None
    schema: Schema | None = None

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")

    def portable(self) -> Decoding:
        """This decoding with a plain JSON schema (no pydantic class, nothing cached), as
        it crosses a process boundary; the reply it decodes is the same."""
        if self.schema is None:
            return self
        return replace(self, schema=Schema(json_schema=self.schema.json_schema))


@dataclass(frozen=True)
class RawReply:
    """One completion as the backend returned it."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None
    model: str


class Backend(Protocol):
    """A chat-completion engine: the embedded llama.cpp model or an HTTP endpoint."""

    name: str
    model: str

    # What the engine is able to do; callers ask these, never the name.
    @property
    def is_local(self) -> bool:
        """Runs on this machine (no network): limited by its CPU, not by an API."""
        ...

    @property
    def costs_money(self) -> bool:
        """Calls are billed per token, so the client books their price."""
        ...

    @property
    def max_concurrency(self) -> int | None:
        """Calls worth having in flight at once (more would only queue); ``None``: no
        limit of its own (the settings' ``concurrency`` decides)."""
        ...

    def generate(self, messages: list[Message], decoding: Decoding) -> RawReply:
        """Run one attempt; ask for JSON matching ``decoding.schema`` when it is given."""
        ...

    def identity(self) -> dict[str, Any]:
        """What, besides the request, decides the reply (goes into the cache key)."""
        ...

    def describe(self) -> dict[str, Any]:
        """Human-facing facts for ``whyrec llm info`` (never secrets)."""
        ...

    def close(self) -> None:
        """Release the model or the HTTP connections."""
        ...


def with_schema_instruction(messages: list[Message], instruction: str) -> list[Message]:
    """Append ``instruction`` to the system message (adding one if there is none)."""
    out = [dict(m) for m in messages]
    if out and out[0].get("role") == "system":
        out[0]["content"] = f"{out[0]['content'].rstrip()}\n\n{instruction}"
    else:
        out.insert(0, {"role": "system", "content": instruction})
    return out
