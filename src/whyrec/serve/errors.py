"""The service's request errors: the HTTP layer turns them into 404 and 422 replies."""

from __future__ import annotations

from collections.abc import Sequence

from whyrec.errors import WhyrecError


class NotFound(WhyrecError):
    """A user or item the service does not know (HTTP 404)."""


class InvalidInput(WhyrecError):
    """A request field is unusable (HTTP 422); ``loc`` names the field."""

    def __init__(self, loc: Sequence[str | int], message: str) -> None:
        super().__init__(message)
        self.loc = list(loc)


__all__ = ["InvalidInput", "NotFound"]
