"""Named datasets and the one entry point later stages use: :func:`load_dataset`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from whyrec import __version__
from whyrec.data.build import build_dataset
from whyrec.data.dataset import FORMAT_VERSION, Dataset
from whyrec.data.raw import RawData
from whyrec.errors import DataError
from whyrec.paths import cache_dir

#: Built-in datasets: name -> (function returning RawData, default build options).
BUILTIN: dict[str, tuple[Callable[[], RawData], dict[str, Any]]] = {}


def _ml100k() -> RawData:
    from whyrec.data.fetch import fetch_movielens_100k
    from whyrec.data.loaders.movielens import load_movielens_100k_parquet

    return load_movielens_100k_parquet(fetch_movielens_100k())


# ML-100k already guarantees >= 20 ratings per user, so no k-core by default; items that
# share a title stay separate unless merge_titles=True (the catalogue has 1,682 ids).
BUILTIN["movielens-100k"] = (_ml100k, {"split": "loo"})


def builtin_names() -> list[str]:
    """Names accepted by :func:`load_dataset` besides directories."""
    return sorted(BUILTIN)


def _options_key(options: dict[str, Any]) -> str:
    blob = json.dumps(options, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def prepare_dataset(
    raw: RawData | str,
    *,
    out: str | Path | None = None,
    name: str | None = None,
    **options: Any,
) -> Dataset:
    """Build a dataset from a loader's output (or a built-in name) and save it to ``out``.

    ``options`` are :func:`whyrec.data.build.build_dataset` keywords (k-core, title
    merging, split). With a built-in name and no ``out`` the result goes to the cache.
    """
    if isinstance(raw, str):
        if raw not in BUILTIN:
            raise DataError(f"unknown dataset {raw!r}; built-in datasets: {builtin_names()}")
        loader, defaults = BUILTIN[raw]
        name = name or raw
        options = {**defaults, **options}
        raw = loader()
    if name is None:
        raise DataError("a dataset name is required", field="name")
    ds = build_dataset(raw, name=name, **options)
    ds.manifest["build_options"] = options
    if out is None:
        out = _cache_path(name, options)
    ds.save(out)
    return ds


def _cache_path(name: str, options: dict[str, Any]) -> Path:
    defaults = BUILTIN.get(name, (None, {}))[1]
    suffix = "" if options == defaults else "-" + _options_key(options)
    return cache_dir("datasets") / f"{name}{suffix}"


def load_dataset(source: str | Path, *, refresh: bool = False, **options: Any) -> Dataset:
    """A prepared dataset directory, or a built-in name (fetched and prepared on first use).

    Built-in datasets are cached under ``$WHYREC_HOME/datasets``; a cache written by
    another whyrec version or with different options is rebuilt, and so is one that
    fails to load.
    """
    path = Path(source)
    if path.exists():
        if options:
            raise DataError("build options apply to built-in names, not directories", path=path)
        return Dataset.load(path)
    name = str(source)
    if name not in BUILTIN:
        raise DataError(
            f"{name!r} is neither an existing dataset directory nor a built-in dataset "
            f"(built-in: {', '.join(builtin_names())})"
        )
    full = {**BUILTIN[name][1], **options}
    target = _cache_path(name, full)
    if not refresh and (target / "manifest.json").is_file():
        try:
            ds = Dataset.load(target)
            m = ds.manifest
            if (
                m.get("whyrec_version") == __version__
                and m.get("format_version") == FORMAT_VERSION
                and m.get("build_options") == full
            ):
                return ds
        except (DataError, OSError, ValueError):
            pass  # damaged cache: rebuild below
    return prepare_dataset(name, out=target, **{k: v for k, v in full.items()})
