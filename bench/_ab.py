"""Shared by the A/B explanation benchmarks (``greedy_sampling.py``, ``partial_reasks.py``):
two or more sequential backends on the packaged model answer the same LANE explanation
requests, one call at a time, alternating which goes first, so machine drift hits all
arms alike."""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from batched_decoding import explanation_requests, preference_stage
from whyrec.data import load_dataset
from whyrec.llm import LLMClient, LLMSettings
from whyrec.llm.backends.local import LocalBackend


def parse_args(doc: str, users: int) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=users)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--window", type=int, default=50)
    ap.add_argument("--n-ctx", type=int, default=4096)
    ap.add_argument("--no-write", action="store_true", help="print only (smoke runs)")
    return ap.parse_args()


def base_settings(args: argparse.Namespace) -> LLMSettings:
    return LLMSettings(backend="local", n_threads=args.threads, n_ctx=args.n_ctx, cache=False)


def prepare(
    args: argparse.Namespace, arms: dict[str, tuple[LLMSettings, LocalBackend]]
) -> tuple[list[int], list[Any], dict[str, LLMClient]]:
    """Load every arm's model, extract the users' preferences (last arm, untimed) and build
    the explanation requests: (users, requests, a client per arm)."""
    assert all(b.llama is not None for _, b in arms.values())  # load outside the timings
    ds = load_dataset("movielens-100k")
    users = list(range(args.users))
    settings, backend = list(arms.values())[-1]
    _, _, prefs = preference_stage(
        LLMClient(settings, backend=backend, cache=False), ds, users, args.window, 1
    )
    clients = {k: LLMClient(s, backend=b, cache=False) for k, (s, b) in arms.items()}
    return users, explanation_requests(ds, users, prefs), clients


def interleave(
    clients: dict[str, LLMClient], reqs: list[Any]
) -> tuple[dict[str, list[float]], dict[str, list[Any]]]:
    """Each request to every client in turn (alternating the order from one request to
    the next), one call at a time: seconds and outcomes per client, in request order."""
    names = list(clients)
    times: dict[str, list[float]] = {k: [] for k in names}
    outs: dict[str, list[Any]] = {k: [] for k in names}
    for i, req in enumerate(reqs):
        for name in names if i % 2 == 0 else names[::-1]:
            t = time.perf_counter()
            outs[name].append(clients[name].complete_many([req], concurrency=1)[0])
            times[name].append(time.perf_counter() - t)
        print(i, {k: round(v[-1], 1) for k, v in times.items()}, flush=True)
    return times, outs


def reply_text(out: Any) -> str:
    return out.text if out.ok else f"FAILED {out.message}"


def arm_row(client: LLMClient, seconds: list[float]) -> dict[str, Any]:
    """Throughput and the explanation stage's usage for one arm."""
    usage = client.usage.by_stage()["explanations"]
    wall = sum(seconds)
    return {
        "users": len(seconds),
        "wall_s": round(wall, 2),
        "users_per_min": round(len(seconds) / wall * 60, 3),
        "median_user_s": round(statistics.median(seconds), 2),
        "calls": usage.calls,
        "attempts": usage.attempts,
        "completion_tokens": usage.completion_tokens,
        "prompt_tokens": usage.prompt_tokens,
    }


def speedup(times: dict[str, list[float]], slow: str, fast: str) -> dict[str, float]:
    """Total and median per-request time ratios of arm ``slow`` over arm ``fast``."""
    return {
        "speedup_total": round(sum(times[slow]) / sum(times[fast]), 2),
        "speedup_median_user": round(
            statistics.median(a / b for a, b in zip(times[slow], times[fast], strict=True)), 2
        ),
    }
