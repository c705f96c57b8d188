"""Where whyrec keeps caches and downloaded artefacts."""

from __future__ import annotations

import os
from pathlib import Path


def whyrec_home() -> Path:
    """The cache root: ``$WHYREC_HOME`` or ``~/.cache/whyrec``. Created on demand."""
    home = Path(os.environ.get("WHYREC_HOME") or Path.home() / ".cache" / "whyrec").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def cache_dir(*parts: str) -> Path:
    """A sub-directory of the cache root, created on demand."""
    path = whyrec_home().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
