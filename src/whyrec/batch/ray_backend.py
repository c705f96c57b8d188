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
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from typing import Any

from whyrec.batch.jobs import WorkItem, as_llm_request, outcome_record
from whyrec.errors import ConfigError


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
        self, settings: dict[str, Any], qps: float | None = None, concurrency: int | None = None
    ) -> None:
        from whyrec.llm import LLMClient, LLMSettings

        self.client = LLMClient(LLMSettings.load(**settings))
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


def actor_settings(settings: Any, *, local_ray: bool) -> dict[str, Any]:
    """The driver's resolved LLM settings as plain values for the actors.

    A Ray instance this job started on this machine shares the driver's reply cache;
    otherwise workers use their own (paths of this machine mean nothing on a cluster).
    """
    values = settings.model_dump(mode="json", exclude_none=True)
    values.pop("config_file", None)
    values["workers"] = 1  # the actors are the workers: one model process each
    if local_ray and settings.cache:
        values["cache_path"] = str(settings.resolved_cache_path())
    return values


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
    started_here = False
    address = opts.ray_address or os.environ.get("RAY_ADDRESS") or None
    if not ray.is_initialized():
        env = {}
        key_env = getattr(settings, "api_key_env", None)
        if settings.backend == "openai" and key_env and os.environ.get(key_env):
            env[key_env] = os.environ[key_env]  # the endpoint's key, for remote workers
        runtime_env = {"env_vars": env} if env else None
        if address:
            ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
        else:
            ray.init(include_dashboard=False, runtime_env=runtime_env, log_to_driver=False)
        started_here = True
    local_ray = started_here and not address  # a Ray found running may be a cluster
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        if hasattr(ctx, "print_on_execution_start"):
            ctx.print_on_execution_start = False
        by_key = {it.key: it for it in items}
        batch = max(1, int(opts.ray_batch_size))
        rows = [{"key": it.key, "requests": json.dumps(it.requests)} for it in items]
        cpus = opts.cpus_per_actor
        if cpus is None:
            cpus = float(settings.n_threads) if settings.backend == "local" else 1.0
        per_actor_qps = opts.qps / opts.actors if opts.qps else None
        ds = ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / batch)))
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
            },
            batch_size=batch,
            batch_format="numpy",
            concurrency=opts.actors,
            num_cpus=cpus,
        )
        for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for key, outcomes in zip(out["key"], out["outcomes"], strict=True):
                on_result(by_key[str(key)], json.loads(str(outcomes)))
    finally:
        if started_here:
            ray.shutdown()
