"""The online service: recommendations with on-demand, cached explanations over HTTP.

``whyrec serve RUN`` runs it; ``create_app(settings)`` builds the FastAPI app for tests
or for another ASGI server. See docs/serve.md.
"""

from __future__ import annotations

from typing import Any

from whyrec.serve.settings import ServeSettings, is_loopback
from whyrec.serve.store import LRU, ServeStore


def create_app(settings: ServeSettings | None = None, *, llm_client: Any = None) -> Any:
    """See :func:`whyrec.serve.app.create_app` (imported here lazily: FastAPI, torch)."""
    from whyrec.serve.app import create_app as _create

    return _create(settings, llm_client=llm_client)


__all__ = ["LRU", "ServeSettings", "ServeStore", "create_app", "is_loopback"]
