"""The data currency every stage shares: interactions + item catalogue + id maps.

On disk a dataset is a directory::

    manifest.json          source, checksums, filters, counts, split definition, version,
                           and ``files``: the sha256 and size of each Parquet file below
    interactions.parquet   user_idx, item_idx, timestamp, rating, split
    items.parquet          item_idx, item_id, title, <text fields...>
    users.parquet          user_idx, user_id

Internal ids are dense, 0-based ``int32`` integers; ``item_id``/``user_id`` keep the
source ids as strings. Interactions are stored in chronological order per user with a
deterministic tie-break, so ``user_sequences`` is a plain group-by.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from whyrec import __version__
from whyrec.errors import DataError
from whyrec.io import atomic_path, write_json

INTERACTION_COLUMNS = ["user_idx", "item_idx", "timestamp", "rating", "split"]
TABLES = ("interactions", "items", "users")
SPLITS = ("train", "valid", "test")
FORMAT_VERSION = 1


@dataclass
class Dataset:
    """Interactions and items with stable internal ids; the input of every model."""

    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    # ----------------------------------------------------------------- sizes
    @property
    def name(self) -> str:
        return str(self.manifest.get("name", "dataset"))

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_interactions(self) -> int:
        return len(self.interactions)

    @property
    def text_fields(self) -> list[str]:
        """Optional item text columns besides the title (genres, categories, ...)."""
        return [c for c in self.items.columns if c not in ("item_idx", "item_id", "title")]

    @property
    def titles(self) -> list[str]:
        """Item titles indexed by ``item_idx``."""
        return self.items["title"].astype(str).tolist()

    def item_texts(self, fields: Sequence[str] = ()) -> list[str]:
        """Title plus the given text fields, as one string per item (``item_idx`` order)."""
        texts = self.items["title"].astype(str)
        for f in fields:
            if f not in self.items.columns:
                raise DataError(f"unknown item text field; available: {self.text_fields}", field=f)
            col = self.items[f].fillna("").astype(str)
            texts = texts.where(col == "", texts + " | " + f + ": " + col)
        return texts.tolist()

    # ------------------------------------------------------------ id mapping
    def user_index(self, user_id: str | int) -> int:
        """Internal index of a source user id (strings and ints both accepted)."""
        return self._index("user", user_id)

    def item_index(self, item_id: str | int) -> int:
        """Internal index of a source item id."""
        return self._index("item", item_id)

    def _index(self, kind: str, source_id: str | int) -> int:
        """The index of a source ``user`` or ``item`` id; an unknown one is a DataError."""
        lookup = self._lookup(f"{kind}s", f"{kind}_id")
        key = str(source_id)
        if key not in lookup:
            raise DataError(f"unknown {kind} id {source_id!r} (dataset {self.name!r})", field=kind)
        return lookup[key]

    def _lookup(self, table: str, column: str) -> dict[str, int]:
        cache = self.__dict__.setdefault("_lookups", {})
        if table not in cache:
            df = getattr(self, table)
            idx_col = "user_idx" if table == "users" else "item_idx"
            cache[table] = dict(zip(df[column].astype(str), df[idx_col].astype(int), strict=True))
        return cache[table]

    # ------------------------------------------------------------- sequences
    def user_sequences(self, splits: Sequence[str] = SPLITS) -> list[np.ndarray]:
        """Chronological item indices per user (index = ``user_idx``) over ``splits``."""
        df = self.interactions
        if tuple(splits) != SPLITS:
            df = df[df["split"].isin(list(splits))]
        out = [np.empty(0, dtype=np.int64) for _ in range(self.n_users)]
        if len(df):
            users = df["user_idx"].to_numpy()
            items = df["item_idx"].to_numpy().astype(np.int64)
            bounds = np.flatnonzero(np.diff(users)) + 1
            starts = np.concatenate([[0], bounds])
            for start, chunk in zip(starts, np.split(items, bounds), strict=True):
                out[int(users[start])] = chunk
        return out

    def split_targets(self, split: str) -> pd.DataFrame:
        """``user_idx, item_idx`` rows of the given evaluation split (``valid``/``test``)."""
        if split not in ("valid", "test"):
            raise DataError(f"expected 'valid' or 'test', got {split!r}", field="split")
        df = self.interactions
        return df.loc[df["split"] == split, ["user_idx", "item_idx"]].reset_index(drop=True)

    def histories_for(self, split: str) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        """For each user with a ``split`` target: (users, history before it, target item).

        With leave-one-out the validation history is the training sequence and the test
        history is training + validation. With a temporal split the history is every
        interaction of the earlier splits.
        """
        earlier = {"valid": ("train",), "test": ("train", "valid")}[split]
        seqs = self.user_sequences(earlier)
        targets = self.interactions[self.interactions["split"] == split]
        # one target per user: the first interaction of that user in the split
        first = targets.groupby("user_idx", sort=True).head(1)
        users = first["user_idx"].to_numpy().astype(np.int64)
        items = first["item_idx"].to_numpy().astype(np.int64)
        keep = np.array([len(seqs[u]) > 0 for u in users], dtype=bool)
        return users[keep], [seqs[u] for u in users[keep]], items[keep]

    def seen_items(self, splits: Sequence[str] = SPLITS) -> list[np.ndarray]:
        """Unique items per user over ``splits`` (for excluding seen items)."""
        return [np.unique(s) for s in self.user_sequences(splits)]

    # ------------------------------------------------------------------- io
    def fingerprint(self) -> str:
        """A short hash identifying the exact data (used to match model directories).

        Computed on first use for a dataset that was never saved, then kept in the manifest.
        """
        if not self.manifest.get("fingerprint"):
            self.manifest["fingerprint"] = _fingerprint(self)
        return str(self.manifest["fingerprint"])

    def save(self, path: str | Path) -> Path:
        """Write the dataset directory atomically (a crash leaves no half-written dir)."""
        path = Path(path)
        manifest = dict(self.manifest)
        manifest.setdefault("format_version", FORMAT_VERSION)
        manifest["whyrec_version"] = __version__
        manifest["counts"] = describe_counts(self)
        manifest["fingerprint"] = _fingerprint(self)
        with atomic_path(path, is_dir=True) as tmp:
            self.interactions.to_parquet(tmp / "interactions.parquet", index=False)
            self.items.to_parquet(tmp / "items.parquet", index=False)
            self.users.to_parquet(tmp / "users.parquet", index=False)
            manifest["files"] = {
                f"{name}.parquet": _file_record(tmp / f"{name}.parquet") for name in TABLES
            }
            write_json(tmp / "manifest.json", manifest)
        self.manifest = manifest
        self.path = path
        return path

    @classmethod
    def load(cls, path: str | Path) -> Dataset:
        """Read a dataset directory written by :meth:`save`.

        Each Parquet file must match the size and sha256 the manifest records for it (a
        truncated or replaced file is a DataError naming it); directories written before
        whyrec recorded them are read without that check.
        """
        path = Path(path)
        if not path.exists():
            raise DataError("dataset directory does not exist", path=path)
        mpath = path / "manifest.json"
        if not mpath.is_file():
            raise DataError("not a whyrec dataset directory: manifest.json missing", path=path)
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(
                f"manifest is not valid JSON ({exc.msg})", path=mpath, line=exc.lineno
            ) from None
        if manifest.get("format_version", 0) > FORMAT_VERSION:
            raise DataError(
                f"dataset format {manifest.get('format_version')} is newer than this whyrec "
                f"({FORMAT_VERSION}); upgrade whyrec",
                path=mpath,
            )
        recorded = manifest.get("files") or {}
        tables = {}
        for name in TABLES:
            f = path / f"{name}.parquet"
            if not f.is_file():
                raise DataError(f"{name}.parquet missing from dataset directory", path=path)
            expected = recorded.get(f.name)
            if expected is not None:
                actual = _file_record(f)
                if actual != expected:
                    raise DataError(
                        f"does not match the manifest (size {actual['bytes']} bytes, sha256 "
                        f"{actual['sha256'][:12]}…; the manifest records {expected.get('bytes')} "
                        f"bytes, sha256 {str(expected.get('sha256'))[:12]}…): the file was "
                        "truncated or replaced; prepare the dataset again",
                        path=f,
                    )
            try:
                tables[name] = pd.read_parquet(f)
            except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError
                raise DataError(f"not a readable Parquet file ({exc})", path=f) from None
        missing = [c for c in INTERACTION_COLUMNS if c not in tables["interactions"].columns]
        if missing:
            raise DataError(
                f"interactions.parquet lacks columns {missing}", path=path / "interactions.parquet"
            )
        return cls(manifest=manifest, path=path, **tables)


def describe_counts(ds: Dataset) -> dict[str, Any]:
    """LANE's dataset-table columns plus split sizes."""
    n_u, n_i, n_a = ds.n_users, ds.n_items, ds.n_interactions
    split_counts = ds.interactions["split"].value_counts().to_dict() if n_a else {}
    return {
        "users": n_u,
        "items": n_i,
        "actions": n_a,
        "avg_actions_per_user": round(n_a / n_u, 2) if n_u else 0.0,
        "avg_actions_per_item": round(n_a / n_i, 2) if n_i else 0.0,
        "sparsity": round(1.0 - n_a / (n_u * n_i), 6) if n_u and n_i else 1.0,
        "splits": {s: int(split_counts.get(s, 0)) for s in SPLITS},
    }


def _file_record(path: Path) -> dict[str, Any]:
    from whyrec.data.raw import sha256_file

    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _fingerprint(ds: Dataset) -> str:
    import hashlib

    h = hashlib.sha256()
    for df in (
        ds.interactions[["user_idx", "item_idx", "timestamp", "split"]],
        ds.items[["item_id", "title"]],
    ):
        h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]
