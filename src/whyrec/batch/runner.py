"""Run a batch job: pick the items still to do, run the LLM stage, write shards as they fill.

The driver prepares items (prompts, evidence), hands their requests to an executor —
a bounded pool of threads over one :class:`~whyrec.llm.LLMClient` (``backend="local"``),
or Ray Data actors (``backend="ray"``, :mod:`whyrec.batch.ray_backend`) — and finishes
the outcomes into rows as they come back. Every ``shard_size`` finished items (or every
``flush_seconds``) become one durable shard; see :mod:`whyrec.batch.store` for why a
kill at any moment loses nothing and repeats nothing.

``retry_failed`` runs again the items that failed (endpoint down, key refused, ...) and
the items that completed with the grounded fallback because no reply validated (rows
with ``status="fallback"``, whatever the job kind); the LLM calls then bypass the reply
cache's remembered failures, so the model is really asked again. A new row for a
fallback item supersedes the old one.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from whyrec.batch.jobs import Failure, WorkItem, as_llm_request, outcome_record
from whyrec.batch.store import JobStore, now_iso
from whyrec.errors import ConfigError

BACKENDS = ("local", "ray")


@dataclass
class BatchOptions:
    """How to run a job (none of these change its results)."""

    backend: str = "local"
    retry_failed: bool = False
    concurrency: int | None = None  # LLM calls in flight (local) / per actor (ray)
    shard_size: int = 64
    flush_seconds: float = 60.0
    progress: bool = True
    qps: float | None = None  # total request rate limit (OpenAI-compatible endpoints)
    ray_address: str | None = None
    actors: int = 1
    cpus_per_actor: float | None = None
    ray_batch_size: int = 8

    @property
    def on_ray(self) -> bool:
        """The LLM stage runs on Ray actors, each with its own client (else: on threads
        over the caller's client in this process)."""
        return self.backend == "ray"

    def check(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(
                f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}"
            )
        if self.shard_size < 1:
            raise ConfigError(f"--shard-size must be at least 1, got {self.shard_size}")
        if self.concurrency is not None and self.concurrency < 1:
            raise ConfigError(f"--concurrency must be at least 1, got {self.concurrency}")
        if self.qps is not None and self.qps <= 0:
            raise ConfigError(f"--qps must be positive, got {self.qps}")
        if self.actors < 1:
            raise ConfigError(f"--actors must be at least 1, got {self.actors}")


@dataclass
class BatchReport:
    """What a run did and where the job stands."""

    kind: str
    out: str
    backend: str
    status: str
    selected: int  # items the user selection covers
    done: int  # of those, completed (now or before)
    failed: int  # of those, failed and not completed since
    pending: int  # of those, not attempted yet
    computed_now: int  # items sent to the LLM stage in this run
    completed_now: int
    failed_now: int
    skipped: int  # selected items this run did not touch (done, or failed without --retry-failed)
    shards_written: int
    seconds: float
    items_per_minute: float
    notes: list[str] = field(default_factory=list)
    fallback: int = 0  # of the done items, those whose row is the grounded fallback

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_batch(
    job: Any,
    out: str | Path,
    users: str = "all",
    *,
    client: Any = None,
    settings: Any = None,
    options: BatchOptions | None = None,
) -> BatchReport:
    """Run (or resume) ``job`` for ``users`` ("all" or a user file) into directory ``out``.

    ``client`` runs the LLM stage for ``backend="local"``; ``settings`` (an
    :class:`~whyrec.llm.LLMSettings`) builds the actors' clients for ``backend="ray"``.
    """
    opts = options or BatchOptions()
    opts.check()
    start = time.perf_counter()
    store = JobStore.open(out, job.identity(), job.schema)
    try:
        return _run(job, store, users, client, settings, opts, start)
    finally:
        store.close()


def _run(
    job: Any,
    store: JobStore,
    users: str,
    client: Any,
    settings: Any,
    opts: BatchOptions,
    start: float,
) -> BatchReport:
    notes = store.reconciled.notes()
    all_keys, todo, todo_users = _todo(job, store, users, opts.retry_failed)
    manifest = store.manifest
    manifest["columns"] = list(job.schema.names)
    manifest["status"] = "running"
    run_entry: dict[str, Any] = {
        "started": now_iso(),
        "backend": opts.backend,
        "users": users if users == "all" else str(Path(users).resolve()),
        "retry_failed": opts.retry_failed,
        "to_compute": len(todo),
    }
    manifest["runs"].append(run_entry)
    store.save()

    sink = _Sink(store, opts, total=len(todo), kind=job.kind)
    items = _prepare(job, todo_users, todo, sink)
    try:
        if todo:
            _compute(job, items, client, settings, opts, sink)
        sink.flush()
    except BaseException:
        sink.flush()  # keep everything finished so far
        run_entry.update(finished=now_iso(), interrupted=True, **sink.counts())
        manifest["status"] = "interrupted"
        store.save()
        sink.close()
        raise
    sink.close()
    return _finish(job, store, opts, sink, run_entry, all_keys, len(todo), notes, start)


def _todo(
    job: Any, store: JobStore, users: str, retry_failed: bool
) -> tuple[list[str], set[str], list[int]]:
    """The keys of the selected users, the keys to compute now (the missing ones, or with
    ``retry_failed`` the failed and fallback ones) and the users who have any of them."""
    selected_users = job.users(users)
    keys_by_user = {u: job.keys_of(u) for u in selected_users}
    all_keys = [k for u in selected_users for k in keys_by_user[u]]
    done = store.done_keys()
    failed = store.failures()
    if retry_failed:
        fallback = store.fallback_keys()
        todo = {k for k in all_keys if k in failed or k in fallback}
    else:
        todo = {k for k in all_keys if k not in done and k not in failed}
    todo_users = [u for u in selected_users if any(k in todo for k in keys_by_user[u])]
    return all_keys, todo, todo_users


def _compute(
    job: Any,
    items: Iterable[WorkItem],
    client: Any,
    settings: Any,
    opts: BatchOptions,
    sink: _Sink,
) -> None:
    """Run ``items`` on Ray actors or on this machine's client, each record to ``sink``."""
    if opts.on_ray:
        from whyrec.batch.ray_backend import run_ray

        if settings is None:
            raise ConfigError("backend 'ray' needs LLM settings to build its actors")
        run_ray(list(items), settings, opts, lambda it, rec: sink.add(job, it, rec))
    else:
        if client is None:
            raise ConfigError("backend 'local' needs an LLM client")
        run_local(
            client,
            items,
            opts,
            lambda it, rec: sink.add(job, it, rec),
            retry_failed=opts.retry_failed,
        )


def _finish(
    job: Any,
    store: JobStore,
    opts: BatchOptions,
    sink: _Sink,
    run_entry: dict[str, Any],
    all_keys: list[str],
    n_todo: int,
    notes: list[str],
    start: float,
) -> BatchReport:
    """Count what the store holds now, record the run's end in the manifest, report."""
    manifest = store.manifest
    done = store.done_keys()
    failed = store.failures()
    fallback = store.fallback_keys()
    n_done = sum(k in done for k in all_keys)
    n_failed = sum(k in failed for k in all_keys)
    n_fallback = sum(k in fallback for k in all_keys)
    pending = len(all_keys) - n_done - n_failed
    status = (
        "complete"
        if pending == 0 and n_failed == 0
        else ("complete_with_failures" if pending == 0 else "incomplete")
    )
    seconds = time.perf_counter() - start
    counts = sink.counts()
    run_entry.update(finished=now_iso(), seconds=round(seconds, 2), **counts)
    manifest["status"] = status
    manifest["counts"] = {
        "selected": len(all_keys),
        "done": n_done,
        "failed": n_failed,
        "pending": pending,
        "fallback": n_fallback,
        "rows_total": len(done),
    }
    store.save()
    if n_failed:
        notes.append(f"{n_failed} item(s) failed; rerun with --retry-failed to retry them alone")
    if n_fallback:
        notes.append(
            f"{n_fallback} item(s) completed with the grounded fallback (no reply validated); "
            "--retry-failed asks the model again for them too"
        )
    return BatchReport(
        kind=job.kind,
        out=str(store.root),
        backend=opts.backend,
        status=status,
        selected=len(all_keys),
        done=n_done,
        failed=n_failed,
        pending=pending,
        computed_now=counts["computed"],
        completed_now=counts["completed"],
        failed_now=counts["failed"],
        skipped=len(all_keys) - n_todo,
        shards_written=sink.shards_written,
        seconds=round(seconds, 2),
        items_per_minute=round(counts["computed"] / seconds * 60, 2) if seconds > 0 else 0.0,
        notes=notes,
        fallback=n_fallback,
    )


def _prepare(job: Any, users: list[int], todo: set[str], sink: _Sink) -> Iterator[WorkItem]:
    """Items for ``users``; a user whose preparation fails gets failure records instead."""
    for u in users:
        try:
            yield from job.prepare([u], todo)
        except Exception as exc:  # one broken user must not stop the job
            for key in job.keys_of(u):
                if key in todo:
                    sink.fail(
                        Failure(key, job.user_ids[u], "prepare", type(exc).__name__, str(exc))
                    )


class _Sink:
    """Collects finished rows and failures and writes them as shards."""

    def __init__(self, store: JobStore, opts: BatchOptions, *, total: int, kind: str) -> None:
        self.store = store
        self.opts = opts
        self.rows: list[dict[str, Any]] = []
        self.failures: list[dict[str, Any]] = []
        self.last_flush = time.monotonic()
        self.shards_written = 0
        self.computed = 0
        self.completed = 0
        self.failed = 0
        self.bar = None
        if opts.progress and total:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total, desc=f"batch {kind}", unit="item", file=sys.stderr, dynamic_ncols=True
            )

    def add(self, job: Any, item: WorkItem, recs: list[dict[str, Any]]) -> None:
        self.computed += 1
        try:
            result = job.finish(item, recs)
        except Exception as exc:  # a finishing bug becomes a recorded, retryable failure
            result = Failure(item.key, item.user_id, "finish", type(exc).__name__, str(exc))
        if isinstance(result, Failure):
            self.fail(result, counted=True)
        else:
            self.rows.append(result)
            self.completed += 1
            self._tick()
        self.maybe_flush()

    def fail(self, failure: Failure, *, counted: bool = False) -> None:
        if not counted:
            self.computed += 1
        self.failures.append(failure.to_row())
        self.failed += 1
        self._tick()
        self.maybe_flush()

    def _tick(self) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(ok=self.completed, failed=self.failed, refresh=False)

    def maybe_flush(self) -> None:
        pending = len(self.rows) + len(self.failures)
        stale = time.monotonic() - self.last_flush >= self.opts.flush_seconds
        if pending >= self.opts.shard_size or (pending and stale):
            self.flush()

    def flush(self) -> None:
        if self.failures:
            self.store.write_shard(self.failures, failures=True)
            self.failures = []
            self.shards_written += 1
        if self.rows:
            self.store.write_shard(self.rows)
            self.rows = []
            self.shards_written += 1
        self.last_flush = time.monotonic()

    def counts(self) -> dict[str, int]:
        return {"computed": self.computed, "completed": self.completed, "failed": self.failed}

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def call_llm(client: Any, item: WorkItem, *, retry_failed: bool = False) -> list[dict[str, Any]]:
    """An item's LLM calls, in order, as outcome records (errors become failure records).

    ``retry_failed`` asks the model again where the reply cache remembers a failure.
    """
    from whyrec.llm import LLMFailure

    records = []
    for j, request in enumerate(item.requests):
        req = as_llm_request(request, tag=(item.key, j))
        if retry_failed:
            req = replace(req, retry_failed=True)
        try:
            res = req.send(client)
        except Exception as exc:  # recorded per item, never fatal to the job
            records.append(outcome_record(LLMFailure(error=exc, stage=req.stage, tag=req.tag)))
        else:
            records.append(outcome_record(res))
    return records


def run_local(
    client: Any,
    items: Iterable[WorkItem],
    opts: BatchOptions,
    on_result: Callable[[WorkItem, list[dict[str, Any]]], None],
    *,
    retry_failed: bool = False,
) -> None:
    """At most ``concurrency`` calls in flight on threads; results handled in this thread.

    Items are prepared lazily, so a million-user job never holds all its prompts.
    """
    settings = getattr(client, "settings", None)
    default = max(getattr(settings, "concurrency", 1) or 1, getattr(settings, "calls_to_fill", 1))
    limit = client.backend.max_concurrency
    workers = opts.concurrency or default
    if limit:
        workers = min(workers, limit)
    restore = None
    if opts.qps:
        from whyrec.batch.ratelimit import RateLimitedBackend

        restore = client.backend
        client.backend = RateLimitedBackend(client.backend, opts.qps)
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="whyrec-batch") as pool:
            in_flight: dict[Future, WorkItem] = {}

            def drain(block: bool) -> None:
                if not in_flight:
                    return
                finished, _ = wait(
                    list(in_flight), timeout=None if block else 0, return_when=FIRST_COMPLETED
                )
                for fut in finished:
                    item = in_flight.pop(fut)
                    on_result(item, fut.result())

            for item in items:
                while len(in_flight) >= workers:
                    drain(block=True)
                fut = pool.submit(call_llm, client, item, retry_failed=retry_failed)
                in_flight[fut] = item
                drain(block=False)
            while in_flight:
                drain(block=True)
    finally:
        if restore is not None:
            client.backend = restore
