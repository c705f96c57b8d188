"""Data-parallel local decoding: several model processes, each on its own cores.

On a small CPU machine one llama.cpp context does not use the cores well: with the
packaged SmolLM2-135M, two threads decode only about 1.3x faster than one for JSON
explanations, because sampling and the JSON grammar run on one thread between the
matrix work. :class:`WorkerPoolBackend` starts ``workers`` processes instead, each
loading the model with its share of ``n_threads`` (pinned to its own cores when the
machine has enough) and running the sequential or — with ``n_parallel`` > 1 — the
batched backend. Calls go to the worker with the fewest in flight.

Replies: a request is computed in one process exactly as the in-process backend of the
same settings computes it (the same weights, chat handler, grammar and sampler; llama.cpp
gives the same result for any thread count), so the pool shares the sequential backend's
cache identity. The caveats of batching on re-encoded weights (docs/batch.md) apply
inside each worker as they do in one process.

Workers are plain subprocesses (``python -m whyrec.llm.backends.pool``) talking over
pipes, so no ``if __name__ == "__main__"`` guard is needed in the caller's script; a
worker exits when its pipe closes, including when the parent is killed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from whyrec.llm import errors as _errors
from whyrec.llm.backends.base import Decoding, Message, RawReply
from whyrec.llm.backends.local import LocalBackend, converted_model_path
from whyrec.llm.errors import LLMConfigError, LLMRequestError

if TYPE_CHECKING:
    from whyrec.llm.settings import LLMSettings

_START_TIMEOUT = 300.0  # seconds for a worker to load its model
_AFFINITY_CHARS = 200  # prefer the worker holding a prompt prefix longer by this much
_RECENT = 32  # prompts remembered per worker for prefix affinity


def _flat(messages: list[Message]) -> str:
    return "\x00".join(f"{m.get('role', '')}\x01{m.get('content', '')}" for m in messages)


def _lcp(a: str, b: str) -> int:
    """Length of the common prefix (binary search over C-level slice comparisons)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def worker_threads(n_threads: int, workers: int) -> int:
    """Threads each worker gets: its share of ``n_threads``, at least one."""
    return max(1, n_threads // workers)


def worker_cpus(workers: int, per_worker: int) -> list[list[int] | None]:
    """Disjoint CPU sets, one per worker, when this process may use enough CPUs."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return [None] * workers
    if len(cpus) < workers * per_worker:
        return [None] * workers
    return [cpus[i * per_worker : (i + 1) * per_worker] for i in range(workers)]


@dataclass(eq=False)
class _Worker:
    index: int
    proc: subprocess.Popen
    conn: Connection
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    pending: dict[int, Future] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=_RECENT))
    reader: threading.Thread | None = None
    dead: str | None = None  # why the worker stopped serving
    served: int = 0  # replies received (errors included)


class WorkerPoolBackend:
    """The embedded GGUF model in ``workers`` processes, calls spread over them."""

    name = "local"
    is_local = True
    costs_money = False

    def __init__(self, settings: LLMSettings) -> None:
        self.workers = int(settings.workers)
        if self.workers < 1:
            raise LLMConfigError(f"workers must be at least 1, got {self.workers}")
        # the in-process backend of the same settings: model path checks, name, identity
        self._local = LocalBackend(settings)
        self.model = self._local.model
        self.n_parallel = int(settings.n_parallel)
        self.threads_per_worker = worker_threads(settings.n_threads, self.workers)
        self._settings = settings
        self._pool: list[_Worker] = []
        self._lock = threading.Lock()
        self._next_id = 0
        self._closed = False

    @property
    def model_path(self) -> Any:
        """The GGUF file (callers size the model by it)."""
        return self._local.model_path

    @property
    def n_threads(self) -> int:
        return self.threads_per_worker

    @property
    def capacity(self) -> int:
        """Calls one worker takes before it counts as overloaded: each sequence slot busy
        and one call waiting for each."""
        return 2 * self.n_parallel

    @property
    def max_concurrency(self) -> int:
        """Calls worth having in flight (more would only queue)."""
        return self.workers * self.capacity

    # ------------------------------------------------------------------ workers

    def _worker_settings(self) -> dict[str, Any]:
        s = self._settings
        path = self._local.model_path
        if s.weights != "file":  # convert once here, not once per worker
            path = converted_model_path(path, s.weights)
        values = s.model_dump(mode="json", exclude_none=True)
        values.pop("config_file", None)
        values.update(
            model=self.model,
            model_path=str(path),
            weights="file",
            workers=1,
            n_threads=self.threads_per_worker,
            cache=False,  # the parent's client caches; workers only generate
        )
        return values

    def _start(self) -> None:
        if self._pool:
            return
        with self._lock:
            if self._pool:
                return
            if self._closed:
                raise LLMConfigError("the worker pool is closed")
            values = self._worker_settings()
            cpus = worker_cpus(self.workers, self.threads_per_worker)
            pool = [self._spawn(i, values, cpus[i]) for i in range(self.workers)]
            try:
                for w in pool:
                    self._await_ready(w)
            except BaseException:
                for w in pool:
                    _stop(w)
                raise
            for w in pool:
                w.reader = threading.Thread(
                    target=self._read, args=(w,), name=f"whyrec-pool-{w.index}", daemon=True
                )
                w.reader.start()
            self._pool = pool

    def _spawn(self, index: int, values: dict[str, Any], cpus: list[int] | None) -> _Worker:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(self.threads_per_worker))
        try:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "whyrec.llm.backends.pool",
                    str(to_child_r),
                    str(from_child_w),
                ],
                pass_fds=(to_child_r, from_child_w),
                stdin=subprocess.DEVNULL,
                env=env,
            )
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        w = _Worker(index, proc, _Duplex(from_child_r, to_child_w))  # type: ignore[arg-type]
        w.conn.send({"settings": values, "cpus": cpus, "index": index})
        return w

    def _await_ready(self, w: _Worker) -> None:
        if not w.conn.poll(_START_TIMEOUT):
            raise LLMConfigError(
                f"local worker {w.index} did not load the model in {_START_TIMEOUT:.0f} s"
            )
        try:
            msg = w.conn.recv()
        except (EOFError, OSError):
            code = w.proc.wait()
            raise LLMConfigError(
                f"{self._local.model_path}: local worker {w.index} exited with code {code} "
                "while loading the model; expected a valid GGUF file"
            ) from None
        if msg[0] == "error":
            raise _rebuild(msg[1], msg[2])
        w.info = msg[1]

    def _read(self, w: _Worker) -> None:
        """Resolve this worker's futures as its replies arrive; fail them if it dies."""
        while True:
            try:
                rid, ok, payload = w.conn.recv()
            except (EOFError, OSError):
                break
            with self._lock:
                fut = w.pending.pop(rid, None)
                w.served += 1
            if fut is None:
                continue
            if ok:
                fut.set_result(payload)
            else:
                fut.set_exception(_rebuild(*payload))
        code = w.proc.wait()
        with self._lock:
            w.dead = w.dead or f"exited with code {code}"
            stranded = list(w.pending.values())
            w.pending.clear()
        for fut in stranded:
            fut.set_exception(LLMRequestError(f"local worker {w.index} {w.dead} before replying"))

    # ------------------------------------------------------------------ backend

    def generate(self, messages: list[Message], decoding: Decoding) -> RawReply:
        """One chat completion on the least busy worker."""
        self._start()
        fut: Future = Future()
        with self._lock:
            alive = [w for w in self._pool if w.dead is None]
            if not alive:
                reasons = "; ".join(f"worker {w.index} {w.dead}" for w in self._pool)
                raise LLMRequestError(f"no local worker is running ({reasons})")
            w = self._choose(alive, flat := _flat(messages))
            w.recent.append(flat)
            rid = self._next_id
            self._next_id += 1
            w.pending[rid] = fut
        request = (rid, messages, decoding.portable())
        try:
            with w.send_lock:
                w.conn.send(request)
        except OSError as exc:
            with self._lock:
                w.pending.pop(rid, None)
            raise LLMRequestError(f"local worker {w.index} is gone: {exc}") from exc
        reply: RawReply = fut.result()
        return reply

    def _choose(self, alive: list[_Worker], flat: str) -> _Worker:
        """The least busy worker — unless another one holds most of this prompt in its KV
        cache (a re-ask extends its first attempt; the m preference prompts of a user
        share the history). Evaluating a long prompt again costs more than waiting behind
        a few calls, so the holder keeps the call until it has a whole worker's capacity
        more calls waiting than the least busy one; then the call moves, and from there
        on both hold the prefix and share its calls. A shared system prompt alone is not
        worth it.

        (Measured on 32 users: with the limit on the holder's own queue instead, a full
        pool split a user's aspect calls over both workers, each evaluated the same
        history, and preferences ran at 0.81x sequential; with the calls kept together,
        1.17x — docs/batch.md.)
        """
        least = min(alive, key=lambda x: (len(x.pending), x.index))
        held = {id(x): max((_lcp(flat, r) for r in x.recent), default=0) for x in alive}
        best = max(alive, key=lambda x: (held[id(x)], -len(x.pending), -x.index))
        gain = held[id(best)] - held[id(least)]
        if (
            gain >= max(_AFFINITY_CHARS, len(flat) // 2)
            and len(best.pending) - len(least.pending) < self.capacity
        ):
            return best
        return least

    def identity(self) -> dict[str, Any]:
        """The in-process backend's identity: the replies are the same."""
        return self._local.identity()

    def describe(self) -> dict[str, Any]:
        """Facts for ``whyrec llm info``."""
        out = self._local.describe()
        mode = f"batched ({self.n_parallel} sequences)" if self.n_parallel > 1 else "sequential"
        out.update(
            workers=self.workers,
            n_threads=self.threads_per_worker,
            n_threads_note="per worker",
            n_parallel=self.n_parallel,
            decoding=f"{self.workers} worker processes, {mode} in each",
            loaded=bool(self._pool),
        )
        if self._pool:
            out["worker_cpus"] = [w.info.get("cpus") for w in self._pool]
            out["calls_per_worker"] = [w.served for w in self._pool]
        return out

    def close(self) -> None:
        """Stop the workers (calls still in flight fail)."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, []
        for w in pool:
            w.dead = w.dead or "was closed"
            _stop(w)
            if w.reader is not None:
                w.reader.join(timeout=10)
        self._local.close()


class _Duplex:
    """A pickle channel over two pipe file descriptors (read end, write end)."""

    def __init__(self, rfd: int, wfd: int) -> None:
        self._r = Connection(rfd, writable=False)
        self._w = Connection(wfd, readable=False)

    def send(self, obj: Any) -> None:
        self._w.send(obj)

    def recv(self) -> Any:
        return self._r.recv()

    def poll(self, timeout: float) -> bool:
        return self._r.poll(timeout)

    def close_write(self) -> None:
        """End of input for the other side (a worker then exits)."""
        _quiet_close(self._w)

    def close(self) -> None:
        _quiet_close(self._w)
        _quiet_close(self._r)


def _quiet_close(c: Connection) -> None:
    try:
        c.close()
    except OSError:
        pass


def _stop(w: _Worker) -> None:
    w.conn.close_write()  # EOF: the worker exits
    try:
        w.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        w.proc.kill()
        w.proc.wait()
    w.conn.close()


def _rebuild(kind: str, message: str) -> Exception:
    """The worker's exception as the same whyrec error class (LLMRequestError otherwise)."""
    cls = getattr(_errors, kind, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except TypeError:
            pass
    return LLMRequestError(f"{kind}: {message}")


# ---------------------------------------------------------------------- worker side


def _serve(rfd: int, wfd: int) -> None:
    conn = _Duplex(rfd, wfd)
    init = conn.recv()
    send_lock = threading.Lock()
    try:
        cpus = init.get("cpus")
        if cpus:
            os.sched_setaffinity(0, cpus)
        from whyrec.llm.backends.batched import in_process_backend
        from whyrec.llm.settings import LLMSettings

        settings = LLMSettings(**init["settings"])
        backend = in_process_backend(settings)
        local = getattr(backend, "_local", backend)
        _ = local.llama  # load now: a broken model fails at start, not on the first call
        if hasattr(backend, "engine"):
            _ = backend.engine
    except Exception as exc:
        conn.send(("error", type(exc).__name__, str(exc)))
        return
    conn.send(("ready", {"pid": os.getpid(), "cpus": cpus, "model": backend.model}))
    threads = max(1, int(settings.n_parallel))

    def run(rid: int, messages: list[Message], decoding: Decoding) -> None:
        try:
            reply = backend.generate(messages, decoding)
            out = (rid, True, reply)
        except Exception as exc:
            out = (rid, False, (type(exc).__name__, str(exc)))
        with send_lock:
            conn.send(out)

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="whyrec-worker") as pool:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break
            pool.submit(run, *msg)
        os._exit(0)  # the parent is gone or closed the pool: do not finish its calls


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]))
