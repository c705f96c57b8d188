"""Multi-preference extraction (LANE step 3): once per user, m preferences from the LLM.

The LLM reads the user's most recent training titles (never the validation or test
items), and must return ``m`` distinct sentences that validate against
:func:`whyrec.explain.schemas.preference_schema`. Invalid replies are re-asked by the
LLM layer; a user whose replies never validate gets grounded fallback preferences
(:mod:`whyrec.explain.fallback`), flagged ``source="fallback"``.

Results go to a SQLite store with the raw reply, the model, the prompt version and a
hash of the history, so a re-run only asks about users whose history, model or prompt
changed, or whose record was made during an outage (``outage=True``: the endpoint was
down, refused the key or kept failing, so the fallback says nothing about the model).
With the client's ``retry_failed`` setting, records whose replies never validated
(``source`` ``"fallback"``/``"partial"``) are asked again too.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from whyrec.errors import ConfigError
from whyrec.explain.fallback import fallback_preferences, split_field
from whyrec.explain.prompts import (
    ASPECT_VERSION,
    PREFERENCE_ASPECTS,
    PREFERENCES_VERSION,
    aspect_preference_messages,
    preference_messages,
)
from whyrec.explain.schemas import first_sentence, preference_schema, salvage_preferences
from whyrec.llm.errors import is_outage, redact
from whyrec.sqlite import connect_wal

#: ``json``: one call per user for all m sentences (schema-constrained); ``aspects``: m
#: short free-text calls per user, one aspect each (for small local models); ``auto``:
#: ``aspects`` for a local GGUF model under :data:`SMALL_MODEL_BYTES`, else ``json``.
Mode = Literal["auto", "json", "aspects"]
SMALL_MODEL_BYTES = 2_000_000_000

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
    #: some of this user's calls never reached a usable model (endpoint down, key
    #: refused, timeouts, 5xx after the retries): the record is asked again next run
    outage: bool = False

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
    """Durable preferences per (user, history) (SQLite, WAL; safe for several threads and
    processes): preferences extracted at different cut points of a user's history are
    kept side by side, so a re-run reuses each one whose history is unchanged."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._conn() as con:
            con.execute(
                "CREATE TABLE IF NOT EXISTS user_preferences ("
                " user TEXT NOT NULL, history_hash TEXT NOT NULL, record TEXT NOT NULL,"
                " model TEXT NOT NULL, prompt_version TEXT NOT NULL, updated REAL NOT NULL,"
                " PRIMARY KEY (user, history_hash))"
            )
            old = con.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'preferences'"
            ).fetchone()
            if old:  # stores written before cut points: one record per user, kept as is
                con.execute(
                    "INSERT OR IGNORE INTO user_preferences SELECT user, history_hash, record,"
                    " model, prompt_version, 0 FROM preferences"
                )
                con.execute("DROP TABLE preferences")

    def _conn(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = connect_wal(self.path, timeout=30)
            self._local.con = con
        return con

    def get(self, user: str, history_hash: str | None = None) -> UserPreferences | None:
        """The record for ``user`` and that exact history (default: the latest written)."""
        if history_hash is None:
            sql = "SELECT record FROM user_preferences WHERE user = ? ORDER BY updated DESC"
            args: tuple[str, ...] = (str(user),)
        else:
            sql = "SELECT record FROM user_preferences WHERE user = ? AND history_hash = ?"
            args = (str(user), history_hash)
        row = self._conn().execute(sql, args).fetchone()
        return _record(row[0]) if row else None

    def put(self, prefs: UserPreferences) -> None:
        import time

        self._conn().execute(
            "INSERT OR REPLACE INTO user_preferences VALUES (?, ?, ?, ?, ?, ?)",
            (
                prefs.user,
                prefs.history_hash,
                json.dumps(asdict(prefs), ensure_ascii=False),
                prefs.model,
                prefs.prompt_version,
                time.time(),
            ),
        )

    def all(self) -> dict[str, UserPreferences]:
        """The latest record of each user."""
        rows = (
            self._conn()
            .execute("SELECT user, record FROM user_preferences ORDER BY updated")
            .fetchall()
        )
        return {u: _record(r) for u, r in rows}

    def __len__(self) -> int:
        return int(
            self._conn().execute("SELECT COUNT(DISTINCT user) FROM user_preferences").fetchone()[0]
        )

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None


def _record(text: str) -> UserPreferences:
    """A stored record; keys a newer whyrec added are dropped, older ones get defaults."""
    data = json.loads(text)
    known = UserPreferences.__dataclass_fields__
    return UserPreferences(**{k: v for k, v in data.items() if k in known})


@dataclass
class ExtractionReport:
    """What a run did: how many users were asked, reused, fell back."""

    users: int = 0
    asked: int = 0
    reused: int = 0
    fallback: int = 0
    partial: int = 0
    outage: int = 0  # asked now, and some call hit an outage (asked again next run)
    seconds: float = 0.0
    model: str = ""
    first_outage: str = ""  # the first outage's (redacted) error, for the command's message

    @property
    def fallback_rate(self) -> float:
        return self.fallback / self.users if self.users else 0.0

    @property
    def llm_failed(self) -> bool:
        """Users were asked and every one of them hit an outage: the LLM stage failed."""
        return self.asked > 0 and self.outage == self.asked


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
        mode: Mode = "auto",
        baseline: Mapping[str, float] | None = None,
    ) -> None:
        if m < 1:
            raise ValueError(f"m must be >= 1, got {m}")
        if mode not in ("auto", "json", "aspects"):
            raise ConfigError(f"mode must be 'auto', 'json' or 'aspects', got {mode!r}")
        if mode == "aspects" and m > len(PREFERENCE_ASPECTS):
            raise ConfigError(
                f"aspects mode knows {len(PREFERENCE_ASPECTS)} aspects, so m must be at most "
                f"that; got m={m}"
            )
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
        self.mode: Literal["json", "aspects"] = self._resolve_mode(mode)
        #: fact → share of all users' interactions (whyrec.data.facts.fact_baseline): grounded
        #: tastes then name what a user picks *more than most*, not what everyone picks
        self.baseline = dict(baseline) if baseline else None
        self.last_report = ExtractionReport()

    def _resolve_mode(self, mode: Mode) -> Literal["json", "aspects"]:
        if mode != "auto":
            return mode
        backend = getattr(self.client, "backend", None)
        path = getattr(backend, "model_path", None)
        if backend is not None and backend.is_local and path is not None:
            try:
                small = Path(path).stat().st_size < SMALL_MODEL_BYTES
            except OSError:
                small = False
            if small and self.m <= len(PREFERENCE_ASPECTS):
                return "aspects"
        return "json"

    @property
    def prompt_version(self) -> str:
        """The prompt version of the mode in use (part of every stored record)."""
        return ASPECT_VERSION if self.mode == "aspects" else PREFERENCES_VERSION

    @property
    def model_name(self) -> str:
        return str(getattr(self.client, "model", "unknown"))

    # ------------------------------------------------------------- one history
    def requests(
        self, titles: Sequence[str], fields: Sequence[str] | None = None, tag: Any = None
    ) -> list[dict[str, Any]]:
        """The LLM requests for one history: one in ``json`` mode, m in ``aspects`` mode.

        Each request's tag is ``(tag, j)`` with ``j`` the request's position.
        """
        if self.mode == "json":
            req = self.request(titles, tag=(tag, 0))
            return [req]
        recent = list(titles)[-self.window :]
        extra = list(fields or [])[-self.window :]
        shown = [
            f"{t} [{', '.join(split_field(f))}]" if i < len(extra) and extra[i] else t
            for i, (t, f) in enumerate(zip(recent, extra + [""] * len(recent), strict=False))
        ]
        return [
            {
                "messages": aspect_preference_messages(shown, aspect),
                "schema": None,
                "max_tokens": min(self.max_tokens, 48),
                "temperature": self.temperature,
                "seed": 0,
                "stage": "preferences",
                "prompt_version": ASPECT_VERSION,
                "tag": (tag, j),
            }
            for j, aspect in enumerate(PREFERENCE_ASPECTS[: self.m])
        ]

    def request(self, titles: Sequence[str], tag: Any = None) -> dict[str, Any]:
        """The single ``json``-mode LLM request for one history."""
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
        job = (user, list(titles), list(fields or [""] * len(titles)), title_vectors)
        return self._run([job])[0]

    # ----------------------------------------------------------------- dataset
    def extract_dataset(
        self,
        dataset: Any,
        users: Sequence[int] | None = None,
        *,
        title_vectors: np.ndarray | None = None,
        progress: bool = True,
        ask: Sequence[int] | None = None,
        cuts: Sequence[int] | np.ndarray | None = None,
    ) -> dict[int, UserPreferences]:
        """Preferences for ``users`` (internal indices; default all) from training items.

        ``cuts[u]`` (see :func:`whyrec.models.lane.preference_cut_points`) limits user u's
        history to their first ``cuts[u]`` training interactions (the last ``window`` of
        them are read); default: the whole training sequence.

        ``ask`` limits the LLM to a subset of ``users`` (default: all of them); the
        others get grounded fallback preferences flagged "not in the LLM sample".
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
        asked = set(todo) if ask is None else {int(u) for u in ask} & set(todo)
        jobs: dict[int, Job] = {}
        for u in todo:
            seq = seqs[u] if cuts is None else seqs[u][: int(cuts[u])]
            seq = seq[-self.window :]
            jobs[u] = (
                ids[u],
                [titles[i] for i in seq],
                [field_values[i] for i in seq],
                title_vectors[seq] if title_vectors is not None else None,
            )
        llm_users = [u for u in todo if u in asked]
        results = dict(
            zip(llm_users, self._run([jobs[u] for u in llm_users], progress=progress), strict=True)
        )
        now = _now()
        for u in todo:
            if u not in results:
                results[u] = self._grounded(*jobs[u], now=now, why="not in the LLM sample")
        return {u: results[u] for u in todo}

    # ---------------------------------------------------------------- internals
    def _grounded(
        self,
        user: str,
        titles: list[str],
        fields: list[str],
        vectors: np.ndarray | None,
        *,
        now: str,
        why: str,
    ) -> UserPreferences:
        """All-fallback preferences for a user the LLM was not asked about."""
        return UserPreferences(
            user=user,
            preferences=fallback_preferences(
                titles,
                fields,
                self.m,
                vectors,
                field_name=self.text_field or "tag",
                baseline=self.baseline,
            ),  # fmt: skip
            source="fallback",
            model="none",
            prompt_version=self.prompt_version,
            history_hash=history_hash(titles, self.m),
            problems=[why],
            created=now,
            fallback_count=self.m,
        )

    def _settle(
        self,
        user: str,
        titles: list[str],
        fields: list[str],
        vectors: np.ndarray | None,
        outcomes: list[Any],
        now: str,
    ) -> UserPreferences:
        """Keep the LLM's usable sentences; complete them with grounded ones if needed."""
        candidates, raw, problems = _candidates(outcomes, self.mode)
        rejected: list[str] = []
        usable = salvage_preferences(candidates, titles, self.m, rejected=rejected)
        problems = problems + rejected
        filler: list[str] = []
        if len(usable) < self.m:
            grounded = fallback_preferences(
                titles, fields, self.m, vectors, field_name=self.text_field or "tag",
                baseline=self.baseline,
            )  # fmt: skip
            filler = [g for g in grounded if g not in usable][: self.m - len(usable)]
        source: Source = "llm" if not filler else ("partial" if usable else "fallback")
        model = next((o.model for o in outcomes if o.ok and o.model), None)
        outage = any(not o.ok and is_outage(o.error) for o in outcomes)
        return UserPreferences(
            user=user,
            preferences=usable + filler,
            source=source,
            model=model or self.model_name,
            prompt_version=self.prompt_version,
            history_hash=history_hash(titles, self.m),
            raw_reply=raw,
            problems=problems,
            created=now,
            fallback_count=len(filler),
            outage=outage,
        )

    def _run(self, jobs: list[Job], progress: bool = False) -> list[UserPreferences]:
        import time

        start = time.perf_counter()
        report = ExtractionReport(users=len(jobs), model=self.model_name)
        out: list[UserPreferences | None] = [None] * len(jobs)
        pending: list[int] = []
        retry_failed = bool(getattr(getattr(self.client, "settings", None), "retry_failed", False))
        for k, (user, titles, _, _) in enumerate(jobs):
            h = history_hash(titles, self.m)
            cached = self.store.get(user, h) if self.store is not None else None
            if (
                cached is not None
                and cached.history_hash == h
                and cached.model == self.model_name
                and cached.prompt_version == self.prompt_version
                and not cached.outage
                and not (retry_failed and cached.source != "llm")
            ):
                out[k] = cached
                report.reused += 1
            else:
                pending.append(k)
        if pending:
            requests: list[dict[str, Any]] = []
            owner: list[int] = []
            for k in pending:
                reqs = self.requests(jobs[k][1], jobs[k][2], tag=k)
                requests += reqs
                owner += [k] * len(reqs)
            outcomes = self.client.complete_many(
                requests, concurrency=self.concurrency, progress=progress
            )
            grouped: dict[int, list[Any]] = {k: [] for k in pending}
            for k, outcome in zip(owner, outcomes, strict=True):
                grouped[k].append(outcome)
            report.asked = len(pending)
            now = _now()
            for k in pending:
                prefs = self._settle(*jobs[k], grouped[k], now)
                if self.store is not None:
                    self.store.put(prefs)
                out[k] = prefs
                if prefs.outage:
                    report.outage += 1
                    if not report.first_outage:
                        report.first_outage = next(
                            (
                                f"{type(o.error).__name__}: {o.error}"
                                for o in grouped[k]
                                if not o.ok and is_outage(o.error)
                            ),
                            "",
                        )
        for p in out:
            if p is not None:
                report.fallback += p.source == "fallback"
                report.partial += p.source == "partial"
        report.seconds = time.perf_counter() - start
        self.last_report = report
        return [p for p in out if p is not None]


Job = tuple[str, list[str], list[str], "np.ndarray | None"]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _candidates(outcomes: list[Any], mode: str) -> tuple[list[str], str | None, list[str]]:
    """(candidate sentences, raw reply, problems) from the outcomes of one user's calls."""
    cands: list[str] = []
    raws: list[str | None] = []
    problems: list[str] = []
    for outcome in outcomes:
        if outcome.ok:
            raws.append(outcome.text)
            if mode == "aspects":
                cands.append(first_sentence(outcome.text))
            else:
                cands += list(outcome.parsed.preferences)
            continue
        err = outcome.error
        problems += list(getattr(err, "problems", []) or [redact(f"{type(err).__name__}: {err}")])
        raws.append(getattr(err, "text", None))
        raw = getattr(err, "raw", None)
        got = raw.get("preferences", []) if isinstance(raw, dict) else []
        cands += got if isinstance(got, list) else []
    if mode == "aspects":
        return cands, json.dumps(raws, ensure_ascii=False), problems
    return cands, raws[0] if raws else None, problems


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
