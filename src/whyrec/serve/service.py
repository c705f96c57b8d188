"""The service core, without HTTP: one trained run, a durable store and an optional LLM.

Recommendations never touch the LLM. Known users' top lists are precomputed in the
background at start and kept per history version; new interactions bump the version.

Explanations are cached by (history hash, item, model, prompt version, LLM) in an LRU in
front of SQLite. On a miss the grounded evidence and template reason are computed with
:class:`whyrec.explain.explainer.LaneExplainer` (or, for non-LANE runs, a leave-one-out
history attribution and :func:`whyrec.explain.templates.template_reason`), stored, and
an LLM job is queued. The caller waits for that job at most its time budget; otherwise
it gets the template, flagged, and the LLM reason replaces it in the cache when ready.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from whyrec import __version__
from whyrec.errors import ModelError, WhyrecError
from whyrec.explain.explainer import Explanation, LaneExplainer
from whyrec.explain.fallback import fallback_preferences
from whyrec.explain.preferences import PreferenceExtractor, history_hash
from whyrec.explain.prompts import BASELINE_VERSION, EXPLANATION_VERSION
from whyrec.explain.templates import template_reason
from whyrec.serve.settings import ServeSettings
from whyrec.serve.store import LRU, ServeStore

log = logging.getLogger("whyrec.serve")

#: How many recent history items the non-LANE attribution removes one at a time.
GENERIC_ATTRIBUTION_WINDOW = 20
_INTERNAL_KEYS = ("retry_at", "key", "history_hash", "item")


class NotFound(WhyrecError):
    """A user or item the service does not know (HTTP 404)."""


class InvalidInput(WhyrecError):
    """A request field is unusable (HTTP 422); ``loc`` names the field."""

    def __init__(self, loc: Sequence[str | int], message: str) -> None:
        super().__init__(message)
        self.loc = list(loc)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


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


@dataclass
class Preferences:
    """The preferences a LANE model is served with for one history."""

    texts: list[str]
    source: str  # llm | partial | fallback (as in whyrec.explain)
    vectors: np.ndarray | None
    pending: bool = False  # an LLM extraction for this history is running
    retry_at: float = 0.0  # after a failed extraction: not before this time

    @property
    def tag(self) -> str:
        return hashlib.sha256("\n".join(self.texts).encode("utf-8")).hexdigest()[:16]


@dataclass
class ExplainResult:
    """One item's explanation record, where it came from, and a running LLM job if any."""

    record: dict[str, Any]
    cache: str  # memory | store | miss
    job: Future[dict[str, Any]] | None = None
    key: str = ""


def is_outage(exc: BaseException | None) -> bool:
    """An error that means "the LLM cannot be reached now" rather than "it answered badly"."""
    if exc is None:
        return False
    from whyrec.llm.errors import LLMOutputError, LLMRequestError

    return not isinstance(exc, LLMOutputError | LLMRequestError)


class RecordingClient:
    """Wraps an LLM client and remembers the last error of ``complete``/``complete_many``,
    so callers that swallow exceptions (``LaneExplainer``) can still be told apart:
    outage (cool down) or invalid reply (keep the template)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.last_error: BaseException | None = None

    def complete(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._client.complete(*args, **kwargs)
        except Exception as exc:
            self.last_error = exc
            raise

    def complete_many(self, *args: Any, **kwargs: Any) -> Any:
        outcomes = self._client.complete_many(*args, **kwargs)
        for o in outcomes:
            if not getattr(o, "ok", True):
                self.last_error = o.error
        return outcomes

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class LLMGate:
    """The optional LLM: created once, its state tracked, its jobs run in background threads.

    An outage puts the gate in cooldown (no new jobs) for ``llm_outage_cooldown_s``.
    """

    def __init__(self, settings: ServeSettings, client: Any = None) -> None:
        self.settings = settings
        self.enabled = settings.llm
        self.client: Any = None
        self.error: str | None = None
        self.down_until = 0.0
        self.last_ok: str | None = None
        self.last_failure: str | None = None
        self.completed = 0
        self.failed = 0
        self._inflight: dict[str, Future[Any]] = {}
        self._lock = threading.Lock()
        if self.enabled:
            if client is not None:
                self.client = client
            else:
                try:
                    from whyrec.llm import LLMClient

                    self.client = LLMClient.from_settings(settings.llm_config)
                except Exception as exc:  # a broken LLM setup must not stop the service
                    self.error = f"{type(exc).__name__}: {exc}"
                    log.warning("LLM unavailable, serving template reasons: %s", self.error)
        backend = getattr(getattr(self.client, "backend", None), "name", "")
        llm_settings = getattr(self.client, "settings", None)
        if backend in ("local", ""):  # what the local model decodes at once (workers x n_parallel)
            default = int(getattr(llm_settings, "calls_to_fill", 1))
        else:
            default = int(getattr(llm_settings, "concurrency", 4))
        workers = settings.llm_workers or default
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="whyrec-llm")
        self.workers = workers

    @property
    def author(self) -> str:
        """Who writes reasons: part of the explanation cache key."""
        if self.client is None:
            return "template"
        return f"{getattr(self.client.backend, 'name', '?')}:{self.client.model}"

    @property
    def model(self) -> str:
        return str(getattr(self.client, "model", "")) if self.client is not None else ""

    def usable(self) -> bool:
        return self.client is not None and time.monotonic() >= self.down_until

    def state(self) -> str:
        if not self.enabled:
            return "disabled"
        if self.client is None:
            return "unavailable"
        if time.monotonic() < self.down_until:
            return "down"
        return "up" if self.last_ok else "unknown"

    def running(self, key: str) -> Future[Any] | None:
        with self._lock:
            return self._inflight.get(key)

    def submit(self, key: str, fn: Callable[[], Any]) -> Future[Any] | None:
        """Run ``fn`` in the background unless a job for ``key`` runs or the queue is full."""
        with self._lock:
            if key in self._inflight:
                return self._inflight[key]
            if len(self._inflight) >= self.settings.max_pending_llm:
                return None
            fut = self.pool.submit(fn)
            self._inflight[key] = fut
        fut.add_done_callback(lambda _f, k=key: self._done(k))
        return fut

    def _done(self, key: str) -> None:
        with self._lock:
            self._inflight.pop(key, None)

    def record(self, ok: bool, error: str | None = None, outage: bool = False) -> None:
        if ok:
            self.completed += 1
            self.last_ok = _now()
            self.down_until = 0.0
        else:
            self.failed += 1
            self.last_failure = _now()
            self.error = error
            if outage:
                self.down_until = time.monotonic() + self.settings.llm_outage_cooldown_s

    def status(self) -> dict[str, Any]:
        with self._lock:
            pending = len(self._inflight)
        return {
            "enabled": self.enabled,
            "state": self.state(),
            "model": self.model,
            "backend": getattr(getattr(self.client, "backend", None), "name", None),
            "workers": self.workers,
            "pending_jobs": pending,
            "completed": self.completed,
            "failed": self.failed,
            "last_ok": self.last_ok,
            "last_failure": self.last_failure,
            "last_error": self.error,
        }

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            busy = bool(self._inflight)
        if self.client is not None and not busy:
            try:
                self.client.close()
            except Exception:  # closing is best effort
                pass


class ServeExplainer(LaneExplainer):
    """LaneExplainer for an explicit (history, preferences) — e.g. a known user whose
    history grew through the API, or a history the model has never seen."""

    def explain_with(
        self, item: int, history: History, prefs: Preferences, *, use_llm: bool
    ) -> Explanation:
        return self._explain(
            int(item),
            None,
            np.asarray(history.items, dtype=np.int64),
            list(prefs.texts),
            prefs.source,
            prefs.vectors,
            history.user,
            use_llm,
        )


class RecService:
    """Everything the HTTP layer calls. Thread-safe; blocking work is done in ``pool``."""

    def __init__(self, settings: ServeSettings, *, llm_client: Any = None) -> None:
        from whyrec.models import load_model
        from whyrec.models.base import read_manifest

        self.settings = settings
        run = Path(settings.run).expanduser()
        self.manifest = read_manifest(run)
        self.model = load_model(run)
        self.is_lane = self.model.name == "lane"
        self.started = time.time()
        ident = f"{self.model.name}|{self.manifest.get('created')}|{self.model.dataset_info}"
        self.model_id = hashlib.sha256(ident.encode()).hexdigest()[:16]
        self.prompt_version = EXPLANATION_VERSION if self.is_lane else BASELINE_VERSION
        self.k_max = settings.k_max
        self.n_items = int(self.model.n_items)
        self.item_ids = [str(x) for x in self.model.item_ids]
        self.item_titles = [str(x) for x in self.model.item_titles]
        self._item_lookup = {iid: i for i, iid in enumerate(self.item_ids)}
        self._title_lookup: dict[str, int] = {}
        self._title_noyear: dict[str, int] = {}
        for i, t in enumerate(self.item_titles):
            self._title_lookup.setdefault(_norm_title(t), i)
            self._title_noyear.setdefault(_strip_year(t), i)
        self._titles_lower = [t.lower() for t in self.item_titles]
        self._user_lookup = {str(u): i for i, u in enumerate(self.model.user_ids)}
        self.field_name, self.item_fields, self.dataset_note = self._item_text_field()
        self.m = int(getattr(self.model.config, "n_preferences", 0)) if self.is_lane else 0
        self._encoder: Any = None
        self._encoder_lock = threading.Lock()

        self.store = ServeStore(settings.store_path(), synchronous=settings.sqlite_synchronous)
        self._write_lock = threading.Lock()
        self._extra: dict[str, list[int]] = {}
        self._load_interactions()

        self.explanations = LRU(settings.explanation_cache_size)
        self.responses = LRU(settings.response_cache_size)
        self._tops = LRU(max(1024, settings.response_cache_size))
        self._hist_prefs = LRU(4096)
        n = int(self.model.n_users)
        self._pre_items = np.full((n, self.k_max), -1, dtype=np.int32)
        self._pre_scores = np.zeros((n, self.k_max), dtype=np.float32)
        self._pre_len = np.zeros(n, dtype=np.int32)
        self._pre_done = np.zeros(n, dtype=bool)
        self.precomputed = 0
        self.pool = ThreadPoolExecutor(settings.model_threads, thread_name_prefix="whyrec-model")
        self.llm = LLMGate(settings, llm_client)
        self._precompute_thread: threading.Thread | None = None
        self._closing = threading.Event()

    # ------------------------------------------------------------------ set-up
    def _item_text_field(self) -> tuple[str | None, list[str] | None, str]:
        """Genres (or another text field) per item from the dataset, when it can be read."""
        spec = self.settings.dataset
        info = self.model.dataset_info or {}
        try:
            from whyrec.data import load_dataset

            if spec is None:
                path = info.get("path")
                if path and Path(path).is_dir():
                    spec = path
                elif info.get("name"):
                    spec = str(info["name"])
            if not spec:
                return None, None, "no dataset recorded in the run"
            ds = load_dataset(Path(spec) if Path(spec).is_dir() else spec)
            self.model.check_dataset(ds)
        except Exception as exc:
            note = f"dataset not loaded ({type(exc).__name__}: {exc}); reasons use titles only"
            log.warning(note)
            return None, None, note
        fields = [c for c in ds.text_fields if c not in ("item_idx",)]
        name = "genres" if "genres" in fields else (fields[0] if fields else None)
        if name is None:
            return None, None, f"dataset {ds.name}: no text field besides titles"
        values = ds.items[name].fillna("").astype(str).tolist()
        return name, values, f"dataset {ds.name}: item field '{name}'"

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

    def start(self) -> None:
        """Start background work (precomputing known users' top lists)."""
        if self.settings.precompute and self._precompute_thread is None:
            self._precompute_thread = threading.Thread(
                target=self._precompute_all, name="whyrec-precompute", daemon=True
            )
            self._precompute_thread.start()

    def close(self) -> None:
        self._closing.set()
        if self._precompute_thread is not None:
            self._precompute_thread.join(timeout=30)
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.llm.close()
        self.store.close()

    # --------------------------------------------------------------- lookups
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

    def new_history(self, items: Sequence[int]) -> History:
        """A history given in a request (no user)."""
        return History(None, None, np.asarray(items, dtype=np.int64))

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

    def item_records(self, items: Sequence[int]) -> list[dict[str, Any]]:
        out = []
        for i in items:
            rec = {"item_id": self.item_ids[i], "title": self.item_titles[i]}
            if self.item_fields is not None:
                rec[self.field_name or "text"] = self.item_fields[i]
            out.append(rec)
        return out

    # ------------------------------------------------------------ interactions
    def add_interactions(self, user: str, items: Sequence[int]) -> dict[str, Any]:
        """Persist, then apply, new interactions; returns when they are durable."""
        user = str(user)
        ids = [self.item_ids[i] for i in items]
        with self._write_lock:
            seqs = self.store.add_interactions(user, ids)
            self._extra.setdefault(user, []).extend(int(i) for i in items)
            extra = len(self._extra[user])
        idx = self._user_lookup.get(user)
        base = len(self.model.histories[idx]) if idx is not None else 0
        return {
            "user": user,
            "added": len(ids),
            "item_ids": ids,
            "sequence": seqs,
            "history_length": base + extra,
            "new_interactions": extra,
            "known_to_model": idx is not None,
        }

    # ---------------------------------------------------------- preferences
    def encoder(self) -> Any:
        """The encoder the LANE model's preferences were embedded with (loaded lazily)."""
        with self._encoder_lock:
            if self._encoder is None:
                from whyrec.embed import encoder_from_config

                enc = encoder_from_config(getattr(self.model.config, "encoder", None))
                want = int(self.model.module.user_prefs.shape[-1])
                if int(enc.dim) != want:
                    raise ModelError(
                        f"the run's encoder ({enc.id}) gives {enc.dim}-d vectors but the LANE "
                        f"model's preferences are {want}-d; new histories cannot be served"
                    )
                self._encoder = enc
            return self._encoder

    def preferences_for(self, history: History) -> Preferences:
        """A LANE model's preferences for ``history``.

        Known users keep the preferences they were trained with. Other histories get the
        stored LLM preferences for the same titles, or grounded fallback preferences now
        while the LLM extracts them in the background (never blocking the request).
        """
        model = self.model
        if history.index is not None:
            u = history.index
            texts = list(model.preference_texts[u]) if model.preference_texts else []
            source = model.preference_sources[u] if model.preference_sources else "unknown"
            if not texts:
                texts = [f"preference {j + 1}" for j in range(self.m)]
            return Preferences(texts, source, model.user_preference_vectors(u))
        titles = [self.item_titles[i] for i in history.items[-self.settings.pref_window :]]
        seq = history.items[-self.settings.pref_window :]
        fields = [self.item_fields[i] for i in seq] if self.item_fields else [""] * len(seq)
        key = "h:" + history_hash(titles, self.m)
        hit = self._hist_prefs.get(key)
        if hit is None:
            rec = self.store.get_history_preferences(key)
            if rec is not None:
                texts, source = list(rec["preferences"]), str(rec["source"])
                hit = Preferences(texts, source, self.encoder().encode(texts))
            else:
                vecs = None if self.item_fields else self.encoder().encode(titles)
                texts = fallback_preferences(titles, fields, self.m, vecs, self.field_name or "tag")
                hit = Preferences(texts, "fallback", self.encoder().encode(texts))
            self._hist_prefs.put(key, hit)
        if (
            hit.source == "fallback"
            and not hit.pending
            and time.time() >= hit.retry_at
            and self.llm.usable()
        ):
            job = self.llm.submit(key, lambda: self._extract_job(key, titles, fields, hit))
            hit.pending = job is not None
        return hit

    def _extract_job(
        self, key: str, titles: list[str], fields: list[str], current: Preferences
    ) -> None:
        """Background: the LLM's preferences for a new history. Kept when some sentences
        validate; otherwise the fallback stays and the LLM is asked again after
        ``llm_retry_s``."""
        client = RecordingClient(self.llm.client)
        prefs = None
        try:
            extractor = PreferenceExtractor(
                client, m=self.m, window=self.settings.pref_window, store=None
            )
            prefs = extractor.extract_history(titles, fields, user=key)
            outage = is_outage(client.last_error)
            problems = "; ".join(prefs.problems)[:500] or None
        except Exception as exc:
            outage, problems = True, f"{type(exc).__name__}: {exc}"
        self.llm.record(not outage, problems, outage)
        if prefs is not None and prefs.source in ("llm", "partial"):
            self.store.put_history_preferences(key, asdict(prefs))
            vectors = self.encoder().encode(prefs.preferences)
            self._hist_prefs.put(key, Preferences(list(prefs.preferences), prefs.source, vectors))
        else:
            current.retry_at = time.time() + self.settings.llm_retry_s
        current.pending = False

    def user_preferences(self, history: History) -> dict[str, Any]:
        """Preferences with LANE's weights for the history's last position."""
        if not self.is_lane:
            return {
                "user": history.user,
                "model": self.model.name,
                "model_has_preferences": False,
                "preferences": [],
                "note": f"a {self.model.name} model has no preference alignment; "
                "train with --model lane for preferences and weights",
            }
        prefs = self.preferences_for(history)
        weights = self.model.preference_weights(history=history.items, preferences=prefs.vectors)
        order = np.argsort(-weights, kind="stable")
        return {
            "user": history.user,
            "model": self.model.name,
            "model_has_preferences": True,
            "source": prefs.source,
            "pending": prefs.pending,
            "preferences": [
                {"index": int(j), "text": prefs.texts[j], "weight": float(weights[j])}
                for j in range(len(prefs.texts))
            ],
            "order": [int(j) for j in order],
        }

    # -------------------------------------------------------- recommendations
    def _topk_rows(self, scores: np.ndarray, seen: Sequence[np.ndarray], k: int) -> list:
        """Per row: (items, scores) of the top ``k`` unseen items, as Recommender.recommend
        orders them (by score, ties by index)."""
        out = []
        for row, hist in zip(scores, seen, strict=True):
            s = row.astype(np.float64)
            s[np.asarray(hist, dtype=np.int64)] = -np.inf
            kk = min(k, int(np.isfinite(s).sum()))
            if kk == 0:
                out.append((np.empty(0, np.int64), np.empty(0, np.float32)))
                continue
            top = np.argpartition(-s, kk - 1)[:kk]
            top = top[np.lexsort((top, -s[top]))]
            out.append((top.astype(np.int64), s[top].astype(np.float32)))
        return out

    def _precompute_all(self, batch: int = 64) -> None:
        n = self.n_users
        try:
            for start in range(0, n, batch):
                if self._closing.is_set():
                    return
                users = np.arange(start, min(n, start + batch))
                todo = users[~self._pre_done[users]]
                if len(todo):
                    hists = [self.model.histories[u] for u in todo]
                    scores = self.model.score_batch(hists, todo)
                    for u, (items, sc) in zip(
                        todo, self._topk_rows(scores, hists, self.k_max), strict=True
                    ):
                        self._set_pre(int(u), items, sc)
                self.precomputed = int(self._pre_done.sum())
        except Exception:  # the on-demand path still works; say why precompute stopped
            log.exception("precomputing top lists stopped")

    def _set_pre(self, u: int, items: np.ndarray, scores: np.ndarray) -> None:
        n = len(items)
        self._pre_items[u, :n] = items
        self._pre_scores[u, :n] = scores
        self._pre_len[u] = n
        self._pre_done[u] = True

    def top_items(
        self, history: History, prefs: Preferences | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The top ``k_max`` unseen items and scores for a history (cached)."""
        model = self.model
        if history.index is not None and history.version == 0:
            u = history.index
            if not self._pre_done[u]:
                recs = model.recommend(u, k=self.k_max)
                self._set_pre(u, recs.items, recs.scores)
            n = int(self._pre_len[u])
            return self._pre_items[u, :n].astype(np.int64), self._pre_scores[u, :n]
        if self.is_lane and prefs is None:
            prefs = self.preferences_for(history)
        key = (history.digest, prefs.tag if prefs is not None else "")
        hit = self._tops.get(key)
        if hit is not None:
            return hit
        if len(history.items) == 0:
            raise InvalidInput(["body"], "empty history: nothing to recommend from")
        if self.is_lane:
            assert prefs is not None
            recs = model.recommend(history=history.items, preferences=prefs.vectors, k=self.k_max)
        else:
            recs = model.recommend(history=history.items, k=self.k_max)
        out = (recs.items.astype(np.int64), recs.scores.astype(np.float32))
        self._tops.put(key, out)
        return out

    def recommendation_rows(self, items: np.ndarray, scores: np.ndarray) -> list[dict[str, Any]]:
        return [
            {
                "rank": r + 1,
                "item_id": self.item_ids[int(i)],
                "title": self.item_titles[int(i)],
                "score": round(float(s), 6),
            }
            for r, (i, s) in enumerate(zip(items, scores, strict=True))
        ]

    # ------------------------------------------------------------ explanations
    def explanation_key(self, history: History, item: int, prefs: Preferences | None) -> str:
        parts = [
            history.digest,
            prefs.tag if prefs is not None else "-",
            self.item_ids[item],
            self.model_id,
            self.prompt_version,
            self.llm.author,
        ]
        return hashlib.sha256("|".join(parts).encode("utf-8")).hexdigest()[:32]

    def cached_explanation(self, key: str) -> dict[str, Any] | None:
        """The in-memory explanation (no I/O: safe on the event loop)."""
        return self.explanations.get(key)

    def needs_llm(self, rec: dict[str, Any]) -> bool:
        """Should an LLM job (re)start for this record now?"""
        status = rec.get("llm_status")
        if status in ("done", "disabled") or not self.llm.usable():
            return False
        if status == "failed":
            return time.time() >= float(rec.get("retry_at") or 0)
        return True  # pending (e.g. after a restart) or unavailable earlier

    def explain_items(
        self, history: History, items: Sequence[int], *, with_llm: bool = True
    ) -> list[ExplainResult]:
        """Explanation records for ``items`` (blocking: run it in :attr:`pool`)."""
        prefs = self.preferences_for(history) if self.is_lane else None
        out = []
        for item in items:
            key = self.explanation_key(history, int(item), prefs)
            cache = "memory"
            rec = self.explanations.get(key)
            if rec is None:
                cache = "store"
                rec = self.store.get_explanation(key)
            if rec is None:
                cache = "miss"
                rec = self._template_record(history, int(item), prefs, key)
                self.store.put_explanation(key, rec)
            self.explanations.put(key, rec)
            job = self.llm.running(key)
            if job is None and with_llm and self.needs_llm(rec):
                job = self.llm.submit(
                    key, lambda k=key, i=int(item): self._llm_job(k, history, i, prefs)
                )
            out.append(ExplainResult(rec, cache, job, key))
        return out

    def _template_record(
        self, history: History, item: int, prefs: Preferences | None, key: str
    ) -> dict[str, Any]:
        """Grounded evidence and the template reason for one item."""
        if self.is_lane:
            assert prefs is not None
            exp = ServeExplainer(
                self.model,
                None,
                item_texts=self.item_fields,
                history_window=self.settings.history_window,
            ).explain_with(item, history, prefs, use_llm=False)
        else:
            exp = self._generic_explanation(history, item)
        rec = self._record(exp, key, history)
        if not self.llm.enabled:
            rec["llm_status"] = "disabled"
        elif self.llm.client is None:
            rec["llm_status"] = "unavailable"
            rec["problems"] = [self.llm.error or "LLM unavailable"]
        else:
            rec["llm_status"] = "pending"
        return rec

    def _generic_explanation(self, history: History, item: int) -> Explanation:
        """Non-LANE runs: score, rank and a leave-one-out attribution over recent history."""
        hist = np.asarray(history.items, dtype=np.int64)
        if len(hist) == 0:
            raise InvalidInput(["body"], "empty history: nothing to explain from")
        win = GENERIC_ATTRIBUTION_WINDOW
        offset = max(0, len(hist) - win)
        variants = [np.delete(hist, p) for p in range(offset, len(hist))] if len(hist) > 1 else []
        scores = self.model.score_batch([hist, *variants], None).astype(np.float64)
        seen = np.unique(hist)
        scores[:, seen] = -np.inf
        finite = np.isfinite(scores[:, item])
        base = float(scores[0, item]) if finite[0] else float("nan")
        rank = int((scores[0] > scores[0, item]).sum()) + 1 if finite[0] else 0
        effects = []
        for v, p in enumerate(range(offset, len(hist)), start=1):
            if not finite[v]:
                continue
            effects.append(
                {
                    "item": int(hist[p]),
                    "position": int(p),
                    "score_drop": base - float(scores[v, item]),
                    "rank_without": int((scores[v] > scores[v, item]).sum()) + 1,
                    "title": self.item_titles[int(hist[p])],
                }
            )
        effects.sort(key=lambda e: -e["score_drop"])
        effects = effects[:5]
        influential = [e["title"] for e in effects if e["score_drop"] > 0][:3]
        title = self.item_titles[item]
        return Explanation(
            item=item,
            item_id=self.item_ids[item],
            title=title,
            rank=rank,
            score=base,
            preferences=[],
            preference_source="none",
            weights=[],
            preference_effects=[],
            history_effects=effects,
            reason=template_reason(title, [], [], influential),
            reason_source="template",
            user=history.user,
        )

    def _record(self, exp: Explanation, key: str, history: History) -> dict[str, Any]:
        d = exp.to_dict()
        pref_effects = [
            {
                "index": int(p["index"]),
                "preference": p["preference"],
                "weight": float(p["weight"]),
                "score_drop": float(p["score_drop"]),
                "rank_without": int(p["rank_without"]),
            }
            for p in d["preference_effects"]
        ]
        hist_effects = [
            {
                "item_id": self.item_ids[int(h["item"])],
                "title": h.get("title") or self.item_titles[int(h["item"])],
                "position": int(h["position"]),
                "score_drop": float(h["score_drop"]),
                "rank_without": int(h["rank_without"]),
            }
            for h in d["history_effects"]
        ]
        score = d["score"]
        return {
            "key": key,
            "item": int(d["item"]),
            "item_id": d["item_id"],
            "title": d["title"],
            "user": history.user,
            "rank": int(d["rank"]),
            "score": None if score is None or not np.isfinite(score) else float(score),
            "reason": d["reason"],
            "reason_source": d["reason_source"],
            "llm_status": "done" if d["reason_source"] != "template" else "pending",
            "preferences": list(d["preferences"]),
            "preference_source": d["preference_source"],
            "weights": [float(w) for w in d["weights"]],
            "attribution": {"preferences": pref_effects, "history": hist_effects},
            "steps": d.get("steps"),
            "llm_model": d.get("model") or "",
            "prompt_version": d.get("prompt_version") or "",
            "problems": list(d.get("problems") or []),
            "history_length": int(len(history.items)),
            "history_hash": history.digest,
            "model": self.model.name,
            "created": _now(),
            "retry_at": None,
        }

    def _llm_job(
        self, key: str, history: History, item: int, prefs: Preferences | None
    ) -> dict[str, Any]:
        """Background: the LLM's reason for one item; the record in cache and store is
        replaced by the LLM's version, or marked failed (template kept, retried later)."""
        base = self.explanations.get(key) or self.store.get_explanation(key)
        client = RecordingClient(self.llm.client)
        try:
            if self.is_lane:
                assert prefs is not None
                exp = ServeExplainer(
                    self.model,
                    client,
                    item_texts=self.item_fields,
                    history_window=self.settings.history_window,
                ).explain_with(item, history, prefs, use_llm=True)
                ok = exp.reason_source == "llm"
                problems = list(exp.problems)
                rec = self._record(exp, key, history)
            else:
                explainer = LaneExplainer(
                    self.model, client, history_window=self.settings.history_window
                )
                reason = explainer.baseline(item, history=history.items)
                ok = reason is not None
                err = client.last_error
                problems = [] if ok else [f"{type(err).__name__}: {err}" if err else "no reply"]
                if base is None:
                    base = self._record(self._generic_explanation(history, item), key, history)
                rec = dict(base)
                if ok:
                    rec.update(
                        reason=reason,
                        reason_source="baseline-llm",
                        llm_model=str(getattr(client, "model", "")),
                        prompt_version=BASELINE_VERSION,
                        problems=[],
                    )
        except Exception as exc:  # anything unexpected: keep the template, say why
            ok, problems = False, [f"{type(exc).__name__}: {exc}"]
            client.last_error = client.last_error or exc
            rec = dict(base) if base is not None else {}
        outage = not ok and is_outage(client.last_error)
        if not rec:
            return {}
        if ok:
            rec["llm_status"] = "done"
            rec["retry_at"] = None
        else:
            if base is not None:  # keep the original template text and evidence
                rec = {**base, "problems": problems}
            rec["llm_status"] = "failed"
            wait = self.settings.llm_outage_cooldown_s if outage else self.settings.llm_retry_s
            rec["retry_at"] = time.time() + wait
        rec["created"] = _now()
        self.llm.record(ok, None if ok else "; ".join(problems)[:500], outage)
        self.store.put_explanation(key, rec)
        self.explanations.put(key, rec)
        return rec

    # -------------------------------------------------------------- output
    def public(self, result: ExplainResult | dict[str, Any], cache: str | None = None) -> dict:
        """The API view of a record: internal fields dropped, ``pending`` and ``cache`` set."""
        if isinstance(result, ExplainResult):
            rec, cache, job = result.record, result.cache, result.job
            pending = job is not None and not job.done()
        else:
            rec, pending = result, False
        out = {k: v for k, v in rec.items() if k not in _INTERNAL_KEYS}
        out["pending"] = bool(pending)
        out["cache"] = cache or "memory"
        if out["reason_source"] == "template":
            out["reason_note"] = (
                "grounded template reason (built only from the model's evidence)"
                + (
                    "; the LLM's reason is being written"
                    if pending
                    else {
                        "disabled": "; the LLM is disabled",
                        "failed": "; the LLM's attempt failed",
                        "unavailable": "; the LLM is unavailable",
                    }.get(str(rec.get("llm_status")), "")
                )
            )
        return out

    def is_final(self, rec: dict[str, Any]) -> bool:
        """A record that will not change any more (safe to cache whole responses)."""
        return rec.get("llm_status") in ("done", "disabled")

    async def wait_jobs(self, results: list[ExplainResult], budget: float) -> None:
        """Wait up to ``budget`` seconds for the results' LLM jobs; take finished ones."""
        pending = {
            asyncio.wrap_future(r.job): r for r in results if r.job is not None and budget > 0
        }
        if not pending:
            return
        done, _ = await asyncio.wait(set(pending), timeout=budget)
        for fut in done:
            r = pending[fut]
            try:
                rec = fut.result()
            except Exception:  # the job recorded its own failure
                rec = None
            if rec:
                r.record = rec
            r.job = None

    # ------------------------------------------------------------- async API
    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run blocking work (model, SQLite) in the model thread pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, functools.partial(fn, *args))

    def version_of(self, user: str) -> int:
        """How many interactions were posted for ``user`` (404 for unknown users)."""
        extra = self._extra.get(user)
        if extra is None and user not in self._user_lookup:
            self.history_of(user)  # raises NotFound with the full message
        return len(extra) if extra else 0

    async def user_recommendations(self, user: str, k: int, explain: bool) -> bytes:
        """JSON body of a known (or API-created) user's top-k; whole responses are cached
        once nothing in them can change any more."""
        rkey = (user, self.version_of(user), k, explain)
        hit = self.responses.get(rkey)
        if hit is not None:
            return hit
        body, final = await self._recommend(
            self.history_of(user), k, explain, self.settings.explain_budget_s
        )
        if final:
            self.responses.put(rkey, body)
        return body

    async def history_recommendations(
        self, items: Sequence[int], k: int, explain: bool, budget: float
    ) -> bytes:
        body, _ = await self._recommend(self.new_history(items), k, explain, budget)
        return body

    async def _recommend(
        self, history: History, k: int, explain: bool, budget: float
    ) -> tuple[bytes, bool]:
        if history.index is not None and history.version == 0 and self._pre_done[history.index]:
            items, scores = self.top_items(history)  # precomputed: memory only
        else:
            items, scores = await self.call(self.top_items, history)
        items, scores = items[:k], scores[:k]
        rows = self.recommendation_rows(items, scores)
        final = True
        if explain and len(items):
            results = await self.call(self.explain_items, history, [int(i) for i in items])
            await self.wait_jobs(results, budget)
            for row, r in zip(rows, results, strict=True):
                row["explanation"] = self.public(r)
                final = final and r.cache == "memory" and r.job is None
                final = final and self.is_final(r.record)
        payload = {
            "user": history.user,
            "model": self.model.name,
            "k": k,
            "explained": explain,
            "history_length": int(len(history.items)),
            "new_interactions": history.version,
            "items": rows,
        }
        return dumps(payload), final

    async def explain_one(self, history: History, item: int, wait_s: float) -> dict[str, Any]:
        results = await self.call(self.explain_items, history, [int(item)])
        await self.wait_jobs(results, wait_s)
        return self.public(results[0])

    # ----------------------------------------------------------------- health
    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "version": __version__,
            "model": {
                "name": self.model.name,
                "run": str(Path(self.settings.run)),
                "id": self.model_id,
                "users": self.n_users,
                "items": self.n_items,
                "dataset": (self.model.dataset_info or {}).get("name"),
                "item_text": self.dataset_note,
                "explanations": "lane" if self.is_lane else "baseline",
            },
            "precomputed_users": int(self.precomputed),
            "store": {"path": str(self.store.path), "journal_mode": self.store.journal_mode},
            "auth": self.settings.auth_enabled,
            "llm": self.llm.status(),
            "explain_budget_s": self.settings.explain_budget_s,
            "k_max": self.k_max,
            "uptime_s": round(time.time() - self.started, 1),
        }


def dumps(payload: Any) -> bytes:
    """Compact JSON bytes (responses are built once and may be cached as bytes)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def check_k(k: int | None, settings: ServeSettings, loc: list[str | int]) -> int:
    """``k`` within 1..k_max, else :class:`InvalidInput`."""
    if k is None:
        return settings.k_default
    if k < 1 or k > settings.k_max:
        raise InvalidInput(loc, f"k must be between 1 and {settings.k_max}, got {k}")
    return int(k)
