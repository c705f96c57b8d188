"""Readers for public interaction formats; each returns :class:`whyrec.data.RawData`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from whyrec.data.raw import RawData


def _lazy(module: str, func: str) -> Callable[..., RawData]:
    def call(*args: Any, **kwargs: Any) -> RawData:
        import importlib

        return getattr(importlib.import_module(f"whyrec.data.loaders.{module}"), func)(
            *args, **kwargs
        )

    call.__name__ = func
    call.__doc__ = f"See :func:`whyrec.data.loaders.{module}.{func}`."
    return call


load_movielens_100k = _lazy("movielens", "load_movielens_100k")
load_movielens_1m = _lazy("movielens", "load_movielens_1m")
load_table = _lazy("generic", "load_table")
load_amazon = _lazy("amazon", "load_amazon")
load_steam = _lazy("steam", "load_steam")

__all__ = ["load_amazon", "load_movielens_100k", "load_movielens_1m", "load_steam", "load_table"]
