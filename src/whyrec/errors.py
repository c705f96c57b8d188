"""Typed errors. Every message says where the problem is and what was expected."""

from __future__ import annotations

from pathlib import Path


class WhyrecError(Exception):
    """Base class of all errors whyrec raises on purpose."""


class DataError(WhyrecError):
    """Input data is missing, malformed or inconsistent.

    ``path``, ``line`` and ``field`` locate the problem when known; the message then
    reads ``<path>:<line>: field '<field>': <what was wrong / expected>``.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        self.detail = message
        where = ""
        if self.path is not None:
            where = self.path + (f":{line}" if line is not None else "")
        elif line is not None:
            where = f"line {line}"
        prefix = f"{where}: " if where else ""
        if field is not None:
            prefix += f"field '{field}': "
        super().__init__(prefix + message)


class ModelError(WhyrecError):
    """A model directory or model input is unusable (wrong version, dataset, ids)."""


class ConfigError(WhyrecError):
    """Configuration is missing or contradictory."""
