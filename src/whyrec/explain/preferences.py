"""Multi-preference extraction (LANE step 3): once per user, m preferences from the LLM.

The LLM reads the user's most recent training titles (never the validation or test
items), and must return ``m`` distinct sentences that validate against
:func:`whyrec.explain.schemas.preference_schema`. Invalid replies are re-asked by the
LLM layer; a user whose replies never validate gets grounded fallback preferences
(:mod:`whyrec.explain.fallback`), flagged ``source="fallback"``.

Results go to a SQLite store with the raw reply, the model, the prompt version and a
hash of the history, so a re-run only asks about users whose history, model or prompt
changed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from whyrec.explain.fallback import fallback_preferences
from whyrec.explain.prompts import PREFERENCES_VERSION, preference_messages
from whyrec.explain.schemas import preference_schema, salvage_preferences

#: ``llm``: all m sentences from the model; ``partial``: the model's usable sentences
#: completed by grounded fallback ones; ``fallback``: none usable, all grounded.
Source = Literal["llm", "partial", "fallback"]


@dataclass
class UserPreferences:
    """One user's preferences and where they came from."""

    user: str
    preferences: list[str]
    source: Source
    model: str
    prompt_version: str
    history_hash: str
    raw_reply: str | None = None
    problems: list[str] = field(default_factory=list)
    created: str = ""

    @property
    def is_fallback(self) -> bool:
        return self.source == "fallback"

    @property
    def llm_count(self) -> int:
        """How many of the sentences the LLM wrote (the rest are grounded fallback)."""
        return len(self.preferences) - self.fallback_count

    fallback_count: int = 0


def history_hash(titles: Sequence[str], m: int) -> str:
    """Identifies the exact prompt input: the titles in order and m."""
    blob = json.dumps({"titles": list(titles), "m": m}, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:20]


class PreferenceStore:
    """Durable per-user preferences (SQLite, WAL; safe for several threads/processes)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._conn() as con:
            con.execute(
                "CREATE TABLE IF NOT EXISTS preferences ("
                " user TEXT PRIMARY KEY, record TEXT NOT NULL, history_hash TEXT NOT NULL,"
                " model TEXT NOT NULL, prompt_version TEXT NOT NULL)"
            )

    def _conn(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            self._local.con = con
        return con

    def get(self, user: str) -> UserPreferences | None:
        row = (
            self._conn()
            .execute("SELECT record FROM preferences WHERE user = ?", (str(user),))
            .fetchone()
        )
        return UserPreferences(**json.loads(row[0])) if row else None

    def put(self, prefs: UserPreferences) -> None:
        self._conn().execute(
            "INSERT OR REPLACE INTO preferences VALUES (?, ?, ?, ?, ?)",
            (
                prefs.user,
                json.dumps(asdict(prefs), ensure_ascii=False),
                prefs.history_hash,
                prefs.model,
                prefs.prompt_version,
            ),
        )

    def all(self) -> dict[str, UserPreferences]:
        rows = self._conn().execute("SELECT user, record FROM preferences").fetchall()
        return {u: UserPreferences(**json.loads(r)) for u, r in rows}

    def __len__(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM preferences").fetchone()[0])

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None


@dataclass
class ExtractionReport:
    """What a run did: how many users were asked, reused, fell back."""

    users: int = 0
    asked: int = 0
    reused: int = 0
    fallback: int = 0
    partial: int = 0
    seconds: float = 0.0
    model: str = ""

    @property
    def fallback_rate(self) -> float:
        return self.fallback / self.users if self.users else 0.0


class PreferenceExtractor:
    """Extract, validate, fall back, store and embed user preferences.

    >>> ex = PreferenceExtractor(LLMClient.from_settings(), m=5)          # doctest: +SKIP
    >>> prefs = ex.extract_dataset(dataset)                               # doctest: +SKIP
    """

    def __init__(
        self,
        client: Any,
        *,
        m: int = 5,
        window: int = 200,
        store: PreferenceStore | str | Path | None = None,
        max_tokens: int = 200,
        temperature: float = 0.0,
        concurrency: int | None = None,
        text_field: str | None = "genres",
    ) -> None:
        if m < 1:
            raise ValueError(f"m must be >= 1, got {m}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.client = client
        self.m = m
        self.window = window
        self.store = PreferenceStore(store) if isinstance(store, str | Path) else store
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.concurrency = concurrency
        self.text_field = text_field
        self.last_report = ExtractionReport()

    @property
    def model_name(self) -> str:
        return str(getattr(self.client, "model", "unknown"))

    # ------------------------------------------------------------- one history
    def request(self, titles: Sequence[str], tag: Any = None) -> dict[str, Any]:
        """The LLM request for one history (for batch runners)."""
        return {
            "messages": preference_messages(list(titles)[-self.window :], self.m),
            "schema": preference_schema(self.m),
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "seed": 0,
            "stage": "preferences",
            "prompt_version": PREFERENCES_VERSION,
            "tag": tag,
        }

    def extract_history(
        self,
        titles: Sequence[str],
        fields: Sequence[str] | None = None,
        *,
        user: str = "anonymous",
        title_vectors: np.ndarray | None = None,
    ) -> UserPreferences:
        """Preferences for one explicit history (e.g. a user the model has not seen)."""
        return self._run([(user, list(titles), list(fields or [""] * len(titles)), title_vectors)])[
            0
        ]

    # ----------------------------------------------------------------- dataset
    def extract_dataset(
        self,
        dataset: Any,
        users: Sequence[int] | None = None,
        *,
        title_vectors: np.ndarray | None = None,
        progress: bool = True,
    ) -> dict[int, UserPreferences]:
        """Preferences for ``users`` (internal indices; default all) from training items.

        ``title_vectors`` (n_items × d) lets the fallback cluster history titles.
        """
        seqs = dataset.user_sequences(("train",))
        titles = dataset.titles
        field_values = (
            dataset.items[self.text_field].fillna("").astype(str).tolist()
            if self.text_field and self.text_field in dataset.items.columns
            else [""] * dataset.n_items
        )
        ids = dataset.users["user_id"].astype(str).tolist()
        todo = list(range(dataset.n_users)) if users is None else [int(u) for u in users]
        jobs = []
        for u in todo:
            seq = seqs[u][-self.window :]
            jobs.append(
                (
                    ids[u],
                    [titles[i] for i in seq],
                    [field_values[i] for i in seq],
                    title_vectors[seq] if title_vectors is not None else None,
                )
            )
        results = self._run(jobs, progress=progress)
        return dict(zip(todo, results, strict=True))

    # ---------------------------------------------------------------- internals
    def _settle(
        self,
        user: str,
        titles: list[str],
        fields: list[str],
        vectors: np.ndarray | None,
        outcome: Any,
        now: str,
    ) -> UserPreferences:
        """Keep the LLM's usable sentences; complete them with grounded ones if needed."""
        candidates, raw, problems = _candidates(outcome)
        usable = salvage_preferences(candidates, titles, self.m)
        if len(usable) < len(candidates[: self.m]) and not problems:
            problems = ["some sentences copied a title or repeated another"]
        filler: list[str] = []
        if len(usable) < self.m:
            grounded = fallback_preferences(
                titles, fields, self.m, vectors, field_name=self.text_field or "tag"
            )
            filler = [g for g in grounded if g not in usable][: self.m - len(usable)]
        source: Source = "llm" if not filler else ("partial" if usable else "fallback")
        return UserPreferences(
            user=user,
            preferences=usable + filler,
            source=source,
            model=(outcome.model if outcome.ok else None) or self.model_name,
            prompt_version=PREFERENCES_VERSION,
            history_hash=history_hash(titles, self.m),
            raw_reply=raw,
            problems=problems,
            created=now,
            fallback_count=len(filler),
        )

    def _run(
        self,
        jobs: list[tuple[str, list[str], list[str], np.ndarray | None]],
        progress: bool = False,
    ) -> list[UserPreferences]:
        import time

        start = time.perf_counter()
        report = ExtractionReport(users=len(jobs), model=self.model_name)
        out: list[UserPreferences | None] = [None] * len(jobs)
        pending: list[int] = []
        for k, (user, titles, _, _) in enumerate(jobs):
            h = history_hash(titles, self.m)
            cached = self.store.get(user) if self.store is not None else None
            if (
                cached is not None
                and cached.history_hash == h
                and cached.model == self.model_name
                and cached.prompt_version == PREFERENCES_VERSION
            ):
                out[k] = cached
                report.reused += 1
            else:
                pending.append(k)
        if pending:
            requests = [self.request(jobs[k][1], tag=k) for k in pending]
            outcomes = self.client.complete_many(
                requests, concurrency=self.concurrency, progress=progress
            )
            report.asked = len(pending)
            now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            for k, outcome in zip(pending, outcomes, strict=True):
                user, titles, fields, vectors = jobs[k]
                prefs = self._settle(user, titles, fields, vectors, outcome, now)
                if prefs.source == "fallback":
                    report.fallback += 1
                elif prefs.source == "partial":
                    report.partial += 1
                if self.store is not None:
                    self.store.put(prefs)
                out[k] = prefs
        for k, p in enumerate(out):
            if k not in pending and p is not None:
                report.fallback += p.source == "fallback"
                report.partial += p.source == "partial"
        report.seconds = time.perf_counter() - start
        self.last_report = report
        return [p for p in out if p is not None]


def _candidates(outcome: Any) -> tuple[list[str], str | None, list[str]]:
    """(candidate sentences, raw reply, problems) from a success or a failure."""
    if outcome.ok:
        return list(outcome.parsed.preferences), outcome.text, []
    err = outcome.error
    problems = list(getattr(err, "problems", []) or [f"{type(err).__name__}: {err}"])
    raw = getattr(err, "raw", None)
    cands = raw.get("preferences", []) if isinstance(raw, dict) else []
    return (cands if isinstance(cands, list) else []), getattr(err, "text", None), problems


def embed_preferences(
    prefs: dict[int, UserPreferences], encoder: Any, n_users: int, m: int
) -> np.ndarray:
    """An (n_users, m, d) float32 array; users without preferences get zero rows."""
    dim = int(encoder.dim)
    out = np.zeros((n_users, m, dim), dtype=np.float32)
    users = sorted(prefs)
    texts = [t for u in users for t in prefs[u].preferences[:m]]
    if texts:
        vecs = encoder.encode(texts)
        k = 0
        for u in users:
            n = min(m, len(prefs[u].preferences))
            out[u, :n] = vecs[k : k + n]
            k += n
    return out
