"""Items and users: title and id lookups, catalogue search, histories, posted interactions.

:class:`Catalog` is the only part of the service that knows the catalogue's ids and titles
and the interactions posted through the API (kept in memory, stored durably first).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from whyrec.serve.errors import InvalidInput, NotFound
from whyrec.serve.settings import ServeSettings
from whyrec.serve.store import ServeStore

log = logging.getLogger("whyrec.serve")


def _norm_title(title: str) -> str:
    return " ".join(str(title).lower().split())


def _strip_year(title: str) -> str:
    t = _norm_title(title)
    if t.endswith(")") and "(" in t:
        head, _, tail = t.rpartition("(")
        if tail[:-1].strip().isdigit():
            return head.strip()
    return t


@dataclass
class History:
    """Whose history (a user id, or none for a posted history) and its items, oldest first."""

    user: str | None
    index: int | None  # the model's internal index, for users it was trained on
    items: np.ndarray
    version: int = 0  # number of interactions appended through the API

    @functools.cached_property
    def digest(self) -> str:
        return hashlib.sha256(np.asarray(self.items, dtype=np.int64).tobytes()).hexdigest()[:24]


class Catalog:
    """The run's items and users plus the interactions posted to the API. Thread-safe."""

    def __init__(self, model: Any, settings: ServeSettings, store: ServeStore) -> None:
        self.model = model
        self.settings = settings
        self.store = store
        self.n_items = int(model.n_items)
        self.item_ids = [str(x) for x in model.item_ids]
        self.item_titles = [str(x) for x in model.item_titles]
        self._item_lookup = {iid: i for i, iid in enumerate(self.item_ids)}
        self._title_lookup: dict[str, int] = {}
        self._title_noyear: dict[str, int] = {}
        for i, t in enumerate(self.item_titles):
            self._title_lookup.setdefault(_norm_title(t), i)
            self._title_noyear.setdefault(_strip_year(t), i)
        self._titles_lower = [t.lower() for t in self.item_titles]
        self._user_lookup = {str(u): i for i, u in enumerate(model.user_ids)}
        self.field_name, self.item_fields, self.dataset_note = self._item_text_field()
        self._write_lock = threading.Lock()
        self._extra: dict[str, list[int]] = {}
        self._load_interactions()

    # ------------------------------------------------------------------ set-up
    def _item_text_field(self) -> tuple[str | None, list[str] | None, str]:
        """Genres (or another text field) per item from the dataset, when it can be read."""
        from whyrec.explain.gathering import resolve_item_texts

        dataset = None
        if self.settings.dataset is not None:
            from whyrec.data import load_dataset

            spec = self.settings.dataset
            try:
                dataset = load_dataset(Path(spec) if Path(spec).is_dir() else spec)
            except Exception as exc:
                note = f"dataset not loaded ({type(exc).__name__}: {exc}); reasons use titles only"
                log.warning(note)
                return None, None, note
        name, values, note = resolve_item_texts(self.model, dataset)
        if values is None:
            log.warning(note)
        return name, values, note

    def _load_interactions(self) -> None:
        skipped = 0
        for _, user, item_id in self.store.interactions():
            idx = self._item_lookup.get(item_id)
            if idx is None:
                skipped += 1
                continue
            self._extra.setdefault(user, []).append(idx)
        if skipped:
            log.warning(
                "%s: %d stored interactions name items this model does not know; ignored",
                self.store.path,
                skipped,
            )

    # ------------------------------------------------------------------- items
    @property
    def n_users(self) -> int:
        return int(self.model.n_users)

    def resolve_items(
        self, item_ids: Sequence[str] | None, titles: Sequence[str] | None, field: str = "body"
    ) -> list[int]:
        """Internal indices for item ids or titles; :class:`InvalidInput` names the bad entry."""
        if (item_ids is None) == (titles is None):
            raise InvalidInput([field], "give exactly one of 'item_ids' or 'titles'")
        values = list(item_ids if item_ids is not None else titles or [])
        name = "item_ids" if item_ids is not None else "titles"
        if not values:
            raise InvalidInput([field, name], f"'{name}' is empty: give at least one item")
        if len(values) > self.settings.max_history:
            raise InvalidInput(
                [field, name],
                f"{len(values)} items given; at most {self.settings.max_history} per request",
            )
        out = []
        for pos, v in enumerate(values):
            idx = self.item_index(v) if item_ids is not None else self.title_index(v)
            if idx is None:
                what = "item id" if item_ids is not None else "title"
                hint = "" if item_ids is not None else self.title_hint(v)
                raise InvalidInput([field, name, pos], f"unknown {what} {v!r} (entry {pos}){hint}")
            out.append(idx)
        return out

    def resolve_item(self, item_id: str | None, title: str | None, field: str = "body") -> int:
        """The internal index of one item given by id (preferred) or title;
        :class:`InvalidInput` names the field and, for a title, the closest ones."""
        if item_id is not None:
            item = self.item_index(item_id)
            if item is None:
                raise InvalidInput([field, "item_id"], f"unknown item id {item_id!r}")
            return item
        if title is None:
            raise InvalidInput([field], "give one of 'item_id' or 'item_title'")
        item = self.title_index(title)
        if item is None:
            raise InvalidInput(
                [field, "item_title"], f"unknown title {title!r}{self.title_hint(title)}"
            )
        return item

    def item_index(self, item_id: str) -> int | None:
        return self._item_lookup.get(str(item_id))

    def title_index(self, title: str) -> int | None:
        """Exact title (case and spacing ignored), else the title without its '(year)'."""
        hit = self._title_lookup.get(_norm_title(title))
        if hit is None:
            hit = self._title_noyear.get(_strip_year(title))
        return hit

    def title_hint(self, title: str) -> str:
        found = self.search_items(title, limit=3)
        if not found:
            return ""
        return "; closest titles: " + ", ".join(repr(f["title"]) for f in found)

    def search_items(self, query: str, limit: int = 10) -> list[dict[str, Any]]:
        """Catalogue items whose title best matches ``query`` (fuzzy), or an exact id."""
        from rapidfuzz import fuzz, process

        q = str(query).strip()
        if not q:
            return []
        out: list[dict[str, Any]] = []
        if q in self._item_lookup:
            i = self._item_lookup[q]
            out.append({"item_id": self.item_ids[i], "title": self.item_titles[i], "match": 100.0})
        hits = process.extract(
            q.lower(),
            self._titles_lower,
            scorer=fuzz.WRatio,
            limit=limit,
            score_cutoff=50,
        )
        for _, score, i in hits:
            if all(o["item_id"] != self.item_ids[i] for o in out):
                out.append(
                    {
                        "item_id": self.item_ids[i],
                        "title": self.item_titles[i],
                        "match": round(float(score), 1),
                    }
                )
        return out[:limit]

    def item_records(self, items: Sequence[int]) -> list[dict[str, Any]]:
        out = []
        for i in items:
            rec = {"item_id": self.item_ids[i], "title": self.item_titles[i]}
            if self.item_fields is not None:
                rec[self.field_name or "text"] = self.item_fields[i]
            out.append(rec)
        return out

    # ------------------------------------------------------------------- users
    def history_of(self, user: str) -> History:
        """The user's current history (training data + interactions posted to the API)."""
        idx = self._user_lookup.get(str(user))
        with self._write_lock:
            extra = list(self._extra.get(str(user), ()))
        if idx is None and not extra:
            raise NotFound(
                f"unknown user {user!r}: not among the model's {self.n_users} users and no "
                "interactions were posted for it; POST /v1/interactions first, or POST "
                "/v1/recommendations with a history"
            )
        base = self.model.histories[idx] if idx is not None else np.empty(0, dtype=np.int64)
        items = np.concatenate([np.asarray(base, dtype=np.int64), np.asarray(extra, np.int64)])
        return History(str(user), idx, items, version=len(extra))

    def history_rows(self, history: History, limit: int) -> list[dict[str, Any]]:
        """The ``limit`` most recent items of a history, newest first, each with where it
        came from (``training`` data or posted to the ``api``)."""
        n = len(history.items)
        first_api = n - history.version
        rows = []
        for pos in range(n - 1, max(-1, n - 1 - limit), -1):
            i = int(history.items[pos])
            rows.append(
                {
                    "position": pos,
                    "item_id": self.item_ids[i],
                    "title": self.item_titles[i],
                    "source": "api" if pos >= first_api else "training",
                    "text": self.item_fields[i] if self.item_fields else None,
                }
            )
        return rows

    def new_history(self, items: Sequence[int]) -> History:
        """A history given in a request (no user)."""
        return History(None, None, np.asarray(items, dtype=np.int64))

    def version_of(self, user: str) -> int:
        """How many interactions were posted for ``user`` (404 for unknown users)."""
        extra = self._extra.get(user)
        if extra is None and user not in self._user_lookup:
            self.history_of(user)  # raises NotFound with the full message
        return len(extra) if extra else 0

    def user_ids(self, offset: int = 0, limit: int = 50) -> tuple[list[dict[str, Any]], int]:
        with self._write_lock:
            new_users = [u for u in self._extra if u not in self._user_lookup]
            extra_len = {u: len(v) for u, v in self._extra.items()}
        ids = [str(u) for u in self.model.user_ids] + sorted(new_users)
        rows = []
        for u in ids[offset : offset + limit]:
            idx = self._user_lookup.get(u)
            base = len(self.model.histories[idx]) if idx is not None else 0
            rows.append(
                {
                    "user": u,
                    "known_to_model": idx is not None,
                    "history_length": base + extra_len.get(u, 0),
                    "new_interactions": extra_len.get(u, 0),
                }
            )
        return rows, len(ids)

    def add_interactions(self, user: str, items: Sequence[int]) -> dict[str, Any]:
        """Persist, then apply, new interactions; returns when they are durable."""
        user = str(user)
        ids = [self.item_ids[i] for i in items]
        with self._write_lock:
            seqs = self.store.add_interactions(user, ids)
            self._extra.setdefault(user, []).extend(int(i) for i in items)
        return self._write_reply(user, ids, seqs)

    def _write_reply(self, user: str, ids: list[str], seqs: list[int]) -> dict[str, Any]:
        """The reply to a write: the user's history lengths as this process now knows them."""
        with self._write_lock:
            extra = len(self._extra.get(user, ()))
        idx = self._user_lookup.get(user)
        base = len(self.model.histories[idx]) if idx is not None else 0
        return {
            "user": user,
            "added": len(ids),
            "item_ids": ids,
            "sequence": seqs,
            "token": str(max(seqs, default=0)),
            "history_length": base + extra,
            "new_interactions": extra,
            "known_to_model": idx is not None,
        }


__all__ = ["Catalog", "History"]
