"""What a loader returns: source-id tables before filtering, id mapping and splitting."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from whyrec.errors import DataError


@dataclass
class RawData:
    """Interactions keyed by source ids plus the item catalogue.

    ``interactions``: ``user_id`` (str), ``item_id`` (str), ``timestamp`` (int64, seconds),
    ``rating`` (float, NaN when absent). ``items``: ``item_id`` (str), ``title`` (str) and
    any text fields. ``source`` describes the input files (paths, sha256) for the manifest;
    ``notes`` collects counts of what loading dropped and why.
    """

    interactions: pd.DataFrame
    items: pd.DataFrame
    source: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for col in ("user_id", "item_id", "timestamp"):
            if col not in self.interactions.columns:
                raise DataError(f"loader produced no '{col}' column", field=col)
        for col in ("item_id", "title"):
            if col not in self.items.columns:
                raise DataError(f"loader produced no '{col}' column in items", field=col)
        if "rating" not in self.interactions.columns:
            self.interactions["rating"] = float("nan")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def describe_source(kind: str, files: dict[str, str | Path], **extra: Any) -> dict[str, Any]:
    """Manifest ``source`` entry: loader kind and each file's path and checksum."""
    return {
        "kind": kind,
        "files": {
            role: {"path": str(Path(p).resolve()), "sha256": sha256_file(p)}
            for role, p in files.items()
        },
        **extra,
    }
