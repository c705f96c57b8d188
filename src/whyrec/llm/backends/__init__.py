"""Backends run one chat completion; the client adds retries, re-asks, cache, accounting."""

from __future__ import annotations

from typing import TYPE_CHECKING

from whyrec.llm.backends.base import Backend, Decoding, Message, RawReply

if TYPE_CHECKING:
    from whyrec.llm.settings import LLMSettings

__all__ = ["Backend", "Decoding", "Message", "RawReply", "make_backend"]


def make_backend(settings: LLMSettings) -> Backend:
    """The backend named by ``settings.backend`` (nothing heavy is loaded yet)."""
    if settings.is_local and settings.workers > 1:
        from whyrec.llm.backends.pool import WorkerPoolBackend

        return WorkerPoolBackend(settings)
    if settings.is_local:
        from whyrec.llm.backends.batched import in_process_backend

        return in_process_backend(settings)
    from whyrec.llm.backends.openai_compat import OpenAIBackend

    return OpenAIBackend(settings)
