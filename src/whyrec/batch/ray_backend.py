"""The LLM stage on Ray Data: a pool of actors, each holding one LLM client.

The driver prepares the items and writes the shards exactly as with the local backend;
only the LLM calls move: ``ray.data.from_items(requests).map_batches(LLMStage, ...)``
runs them on ``actors`` actors, each with its own client — the embedded GGUF model
(loaded once per actor; batched decoding with ``n_parallel`` > 1) or an OpenAI-compatible
endpoint such as vLLM, with a per-actor share of the ``qps`` limit and the client's
retries. Results stream back as batches finish, so shards are written while the job runs.

Ray is optional (``pip install 'whyrec[ray]'``). Without an address the job starts a
local Ray instance (and stops it afterwards); with ``ray_address`` / ``$RAY_ADDRESS`` it
joins an existing cluster; if Ray is already initialised in this process it is used as is.

On a cluster (docs/batch.md, "Running on a Ray cluster"): the actors get the driver's
settings *complete* — every field, ``None`` included, relative paths made absolute on the
driver — so nothing on a worker node (its ``WHYREC_LLM_*`` variables, its working
directory) changes a reply; an actor whose whyrec differs from the driver's refuses to
start; the job waits for all its actors before handing out work (when the cluster can
hold them), so every actor gets a share, and blocks are cut so that there are at least
as many as actors.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from whyrec.batch.jobs import WorkItem, as_llm_request, outcome_record
from whyrec.errors import ConfigError, WhyrecError
from whyrec.safety import printable_text

#: How long the job waits for all its actors to start before handing out work (a cluster
#: that autoscales may need minutes to add a node); only when the cluster's nodes can
#: hold them all, otherwise work starts on the actors that fit, as they come up.
ACTOR_START_TIMEOUT_S = 600.0


class RayStageError(WhyrecError):
    """The LLM stage could not run on Ray (cluster unreachable, actors failed to start)."""


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ConfigError(
            "--backend ray needs Ray Data: pip install 'whyrec[ray]' (ray[data]); "
            f"import failed: {exc}"
        ) from None
    return ray


class LLMStage:
    """A Ray Data actor: builds one LLM client, answers batches of requests.

    Input columns ``key`` and ``requests`` (a JSON list of requests); output ``key`` and
    ``outcomes`` (a JSON list of :func:`whyrec.batch.jobs.outcome_record` dicts). All
    requests of a batch are in flight together, so a batched local model fills its batch.
    """

    def __init__(
        self,
        settings: dict[str, Any],
        qps: float | None = None,
        concurrency: int | None = None,
        driver_version: str | None = None,
    ) -> None:
        from whyrec.llm import LLMClient

        check_same_whyrec(driver_version)
        self.client = LLMClient(settings_from_values(settings))
        if qps:
            from whyrec.batch.ratelimit import RateLimitedBackend

            self.client.backend = RateLimitedBackend(self.client.backend, qps)
        self.concurrency = concurrency

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        keys = [str(k) for k in batch["key"]]
        flat, owner = [], []
        for i, text in enumerate(batch["requests"]):
            for j, request in enumerate(json.loads(str(text))):
                flat.append(as_llm_request(request, tag=(keys[i], j)))
                owner.append(i)
        outcomes = self.client.complete_many(flat, concurrency=self.concurrency)
        grouped: list[list[dict[str, Any]]] = [[] for _ in keys]
        for i, outcome in zip(owner, outcomes, strict=True):
            grouped[i].append(outcome_record(outcome))
        return {"key": keys, "outcomes": [json.dumps(g) for g in grouped]}


def check_same_whyrec(driver_version: str | None) -> None:
    """Refuse to run an actor whose whyrec is not the driver's (its replies could differ)."""
    import whyrec

    if driver_version is not None and whyrec.__version__ != driver_version:
        import socket

        raise ConfigError(
            f"Ray node {printable_text(socket.gethostname(), 80)}: whyrec "
            f"{whyrec.__version__} is installed, the driver runs "
            f"{printable_text(driver_version, 40)}; "
            "install the same whyrec on every node of the cluster"
        )


def _absolute(path: str | Path, cwd: Path) -> str:
    """``path`` made absolute against the driver's ``cwd``; ``~/...`` is kept, so each
    node expands it to its own home."""
    text = str(path)
    if text.startswith("~") or Path(text).is_absolute():
        return text
    return str(cwd / text)


def actor_settings(
    settings: Any, *, local_ray: bool, cwd: str | Path | None = None
) -> dict[str, Any]:
    """The driver's resolved LLM settings as plain values for the actors.

    Every field is given, ``None`` included, so an actor never fills a gap from its own
    node (a worker's ``WHYREC_LLM_*`` variables or config file; ``seed=None`` staying
    ``None`` rather than becoming the default 0). Relative ``model_path`` / ``cache_path``
    are made absolute against the driver's working directory (``cwd``, default the
    current one): an actor's working directory is its Ray worker's, not the driver's.

    A Ray instance this job started on this machine shares the driver's reply cache;
    otherwise workers use their own under their node's ``$WHYREC_HOME`` (or the
    ``cache_path`` given, which then must exist on every node).
    """
    base = Path(cwd) if cwd is not None else Path.cwd()
    values = settings.model_dump(mode="json")
    values.pop("config_file", None)
    values["workers"] = 1  # the actors are the workers: one model process each
    for name in ("model_path", "cache_path"):
        if values.get(name):
            values[name] = _absolute(values[name], base)
    if local_ray and settings.cache:
        values["cache_path"] = _absolute(settings.resolved_cache_path(), base)
    return values


def settings_from_values(values: dict[str, Any]) -> Any:
    """:class:`~whyrec.llm.LLMSettings` from :func:`actor_settings` values, exactly: given
    values (``None`` included) win over the node's environment and config file."""
    from pydantic import ValidationError

    from whyrec.llm import LLMSettings
    from whyrec.llm.errors import LLMConfigError

    try:
        return LLMSettings(**values)
    except ValidationError as exc:
        raise LLMConfigError(f"LLM settings sent to a Ray actor are invalid: {exc}") from None


def batch_plan(n_rows: int, batch_size: int, actors: int) -> tuple[int, int]:
    """(rows per Ray batch, number of blocks) for ``n_rows`` requests on ``actors``.

    Ray Data joins blocks smaller than ``batch_size`` into one batch, so twelve rows cut
    into two blocks of six with a batch size of 8 become a single task on a single actor.
    The batch is therefore at most an even share per actor, and every block holds one
    batch.
    """
    batch = max(1, min(int(batch_size), math.ceil(n_rows / max(1, actors))))
    return batch, max(1, math.ceil(n_rows / batch))


def actors_that_fit(node_cpus: list[float], cpus_per_actor: float) -> int:
    """How many actors reserving ``cpus_per_actor`` CPUs the nodes can hold at once."""
    if cpus_per_actor <= 0:
        return 10**9
    # a small tolerance: 3 x 0.333... CPUs fit a 1-CPU node
    return sum(int(c / cpus_per_actor + 1e-9) for c in node_cpus)


def _node_cpus(ray: Any) -> list[float]:
    return [float(n.get("Resources", {}).get("CPU", 0.0)) for n in ray.nodes() if n.get("Alive")]


def run_ray(
    items: list[WorkItem],
    settings: Any,
    opts: Any,
    on_result: Callable[[WorkItem, list[dict[str, Any]]], None],
) -> None:
    """Send ``items`` through :class:`LLMStage` actors; call ``on_result`` as results arrive."""
    if not items:
        return
    ray = _import_ray()
    address = opts.ray_address or os.environ.get("RAY_ADDRESS") or None
    started_here = not ray.is_initialized()
    if started_here:
        _init_ray(ray, settings, address)
    local_ray = started_here and not address  # a Ray found running may be a cluster
    ctx = ray.data.DataContext.get_current()
    saved = {
        name: getattr(ctx, name)
        for name in (
            "enable_progress_bars",
            "print_on_execution_start",
            "wait_for_min_actors_s",
            "max_tasks_in_flight_per_actor",
        )
        if hasattr(ctx, name)
    }
    try:
        by_key = {it.key: it for it in items}
        rows = [{"key": it.key, "requests": json.dumps(it.requests)} for it in items]
        cpus = opts.cpus_per_actor
        if cpus is None:
            cpus = float(settings.n_threads) if settings.is_local else 1.0
        _configure_data_context(ctx, ray, float(cpus), opts.actors)
        per_actor_qps = opts.qps / opts.actors if opts.qps else None
        batch, blocks = batch_plan(len(rows), opts.ray_batch_size, opts.actors)
        ds = ray.data.from_items(rows, override_num_blocks=blocks)
        import whyrec

        ds = ds.map_batches(
            LLMStage,
            fn_constructor_kwargs={
                "settings": {
                    **actor_settings(settings, local_ray=local_ray),
                    # --retry-failed: ask again where the cache remembers a failure
                    **({"retry_failed": True} if getattr(opts, "retry_failed", False) else {}),
                },
                "qps": per_actor_qps,
                "concurrency": opts.concurrency,
                "driver_version": whyrec.__version__,
            },
            batch_size=batch,
            batch_format="numpy",
            concurrency=opts.actors,
            num_cpus=cpus,
        )
        try:
            for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for key, outcomes in zip(out["key"], out["outcomes"], strict=True):
                    on_result(by_key[str(key)], json.loads(str(outcomes)))
        except WhyrecError:
            raise
        except Exception as exc:
            module = type(exc).__module__
            if not isinstance(exc, ray.exceptions.RayError) and module.split(".")[0] != "ray":
                raise
            raise _stage_failed(exc, address) from None
    finally:
        for name, value in saved.items():
            setattr(ctx, name, value)
        if started_here:
            ray.shutdown()


def _init_ray(ray: Any, settings: Any, address: str | None) -> None:
    """Start a local Ray, or join the cluster at ``address``; an endpoint's API key goes
    along to the workers. A failure is a :class:`RayStageError` saying what to check."""
    env = {}
    key_env = getattr(settings, "api_key_env", None)
    if not settings.is_local and key_env and os.environ.get(key_env):
        env[key_env] = os.environ[key_env]  # the endpoint's key, for remote workers
    runtime_env = {"env_vars": env} if env else None
    try:
        if address:
            ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
        else:
            ray.init(include_dashboard=False, runtime_env=runtime_env, log_to_driver=False)
    except Exception as exc:
        where = f"the Ray cluster at {printable_text(address, 200)}" if address else "Ray"
        hint = (
            "; a cluster started with Ray's token authentication (the default of "
            "'ray start --head' since Ray 2.5x) also needs RAY_AUTH_MODE=token and the "
            "cluster's token (RAY_AUTH_TOKEN or ~/.ray/auth_token) in the driver's "
            "environment (docs/batch.md, 'Running on a Ray cluster')"
            if address
            else ""
        )
        raise RayStageError(
            f"--backend ray: could not start or join {where}: "
            f"{type(exc).__name__}: {printable_text(exc, 600)}{hint}"
        ) from None


def _configure_data_context(ctx: Any, ray: Any, cpus: float, actors: int) -> None:
    """Ray Data settings for the LLM stage (the caller saved the old values): quiet, all
    actors up before work is handed out (when they fit), one batch per actor at a time."""
    ctx.enable_progress_bars = False
    if hasattr(ctx, "print_on_execution_start"):
        ctx.print_on_execution_start = False
    if hasattr(ctx, "wait_for_min_actors_s"):
        # all actors up before work is handed out, so the first one to start does not
        # take every batch; only when the cluster can hold them all
        fits = actors_that_fit(_node_cpus(ray), cpus) >= actors
        ctx.wait_for_min_actors_s = int(ACTOR_START_TIMEOUT_S) if fits else -1
    if hasattr(ctx, "max_tasks_in_flight_per_actor"):
        # one batch per actor at a time: otherwise Ray Data queues batches on the actor
        # next to the data (the driver's node) and the other nodes' actors stay idle
        ctx.max_tasks_in_flight_per_actor = 1


def _stage_failed(exc: BaseException, address: str | None) -> RayStageError:
    """The error for a Ray failure while the LLM stage ran, with its root cause."""
    cause = _root_cause(exc)
    return RayStageError(
        f"--backend ray: the LLM stage failed on Ray"
        f"{' at ' + printable_text(address, 200) if address else ''}: "
        f"{printable_text(cause, 800)}. Every node needs the same whyrec installed "
        "(and the model file, for local models); see docs/batch.md, "
        "'Running on a Ray cluster'. Finished items are kept; rerun to resume."
    )


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Exit)\b[^:]*: ")


def _root_cause(exc: BaseException) -> str:
    """The original error behind a Ray error: Ray wraps an actor's exception several
    times and keeps the original only as the last line of a traceback in its text."""
    chain, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        inner = getattr(current, "cause", None)
        current = (
            inner if isinstance(inner, BaseException) else current.__cause__ or current.__context__
        )
    for err in chain:
        lines = [line.strip() for line in _ANSI.sub("", str(err)).splitlines() if line.strip()]
        for line in reversed(lines):
            if _ERROR_LINE.match(line):
                return line
    text = _ANSI.sub("", str(exc)).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
