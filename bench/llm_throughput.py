"""Tokens per second of the local backend through whyrec versus llama-cpp-python directly,
and the latency of a cache hit.

Both paths drive the *same* loaded ``Llama`` object with the same prompt and sampling
parameters, alternating order each round; the model's KV cache is reset before every
call so each one pays the full prompt. Ratios whyrec/direct are taken per round within
this one run. Three measures: wall-clock tokens/s, CPU tokens/s (process CPU time), and
whyrec's own time per call (complete() minus the time inside llama.cpp).

On a machine shared with other jobs, wall time with 2 llama.cpp threads swings by several
times between calls (threads that lose their core stall the others); ``--threads 1``
keeps CPU time stable, so both thread counts are measured by default.

Usage: .venv/bin/python bench/llm_throughput.py [--rounds 7] [--threads 2 1] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from _report import write_result
from whyrec.llm import LLMClient, LLMSettings, ReplyCache

SYSTEM = "You are a helpful assistant who writes about films."
HISTORY = (
    "Toy Story (1995); GoldenEye (1995); Twelve Monkeys (1995); Babe (1995); "
    "Dead Man Walking (1995); Richard III (1995); Seven (1995); The Usual Suspects (1995); "
    "Mighty Aphrodite (1995); Star Wars (1977); Fargo (1996); Return of the Jedi (1983); "
    "Contact (1997); The English Patient (1996); Scream (1996); Air Force One (1997)"
)
USER = (
    f"A viewer watched these films, oldest first: {HISTORY}. "
    "Write a long, detailed paragraph about what this viewer enjoys in films."
)
MESSAGES = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
SCHEMA = {
    "type": "object",
    "properties": {
        "preferences": {
            "type": "array",
            "items": {"type": "string", "maxLength": 80},
            "minItems": 3,
            "maxItems": 5,
        }
    },
    "required": ["preferences"],
}
JSON_MESSAGES = [
    {"role": "system", "content": SYSTEM + " Reply in JSON."},
    {"role": "user", "content": f"List five preferences of a viewer who watched: {HISTORY}."},
]


def measure(threads: int, args: argparse.Namespace) -> dict:
    """All rows for one thread count, plus the client (for the cache-hit part)."""
    settings = LLMSettings.load(backend="local", n_threads=threads, cache=False)
    client = LLMClient(settings)
    llama = client.backend.llama  # type: ignore[attr-defined]
    sampling = {"max_tokens": args.max_tokens, "temperature": 0.0, "seed": 0}

    # whyrec's own cost per call, immune to machine load: wall time of complete() minus
    # the time spent inside the backend's llama.cpp call.
    inner: list[float] = []
    generate = client.backend.generate

    def timed_generate(*a, **k):
        t0 = time.perf_counter()
        try:
            return generate(*a, **k)
        finally:
            inner.append(time.perf_counter() - t0)

    client.backend.generate = timed_generate  # type: ignore[method-assign]

    def timed(call) -> tuple[float, float, int]:
        llama.reset()  # no prompt prefix reused from the previous call
        w0, c0 = time.perf_counter(), time.process_time()
        n = call()
        return time.perf_counter() - w0, time.process_time() - c0, n

    def params(structured: bool) -> dict:
        return {**sampling, "max_tokens": args.json_max_tokens} if structured else sampling

    def direct(structured: bool) -> tuple[float, float, int]:
        kwargs = params(structured)
        if structured:
            kwargs["response_format"] = {"type": "json_object", "schema": SCHEMA}
        msgs = JSON_MESSAGES if structured else MESSAGES
        return timed(
            lambda: llama.create_chat_completion(messages=msgs, **kwargs)["usage"][
                "completion_tokens"
            ]
        )

    def whyrec(structured: bool) -> tuple[float, float, int]:
        msgs = JSON_MESSAGES if structured else MESSAGES
        schema = SCHEMA if structured else None
        kwargs = params(structured)
        inner.clear()
        return timed(lambda: client.complete(msgs, schema=schema, **kwargs).completion_tokens)

    out: dict = {}
    for structured in (False, True):
        label = "json_schema" if structured else "plain"
        direct(structured)  # warm-up (weights paged in, grammar compiled)
        whyrec(structured)
        keys = ("direct", "whyrec", "ratio", "cpu_direct", "cpu_whyrec", "cpu_ratio", "tokens")
        rows: dict[str, list[float]] = {k: [] for k in (*keys, "own_ms", "own_share")}
        for r in range(args.rounds):
            order = (direct, whyrec) if r % 2 == 0 else (whyrec, direct)
            timings = {}
            for fn in order:
                timings[fn.__name__] = fn(structured)
                if fn is whyrec:
                    own = timings["whyrec"][0] - sum(inner)
            (wd, cd, nd), (ww, cw, nw) = timings["direct"], timings["whyrec"]
            if nd != nw:
                raise SystemExit(f"paths generated {nd} vs {nw} tokens: not comparable")
            rows["direct"].append(nd / wd)
            rows["whyrec"].append(nw / ww)
            rows["ratio"].append(wd / ww)
            rows["cpu_direct"].append(nd / cd)
            rows["cpu_whyrec"].append(nw / cw)
            rows["cpu_ratio"].append(cd / cw)
            rows["tokens"].append(nd)
            rows["own_ms"].append(own * 1000)
            rows["own_share"].append(own / ww)
        out[label] = rows
        med = {k: statistics.median(v) for k, v in rows.items()}
        print(
            f"{threads} thread(s), {label}: wall direct {med['direct']:.1f} tok/s, whyrec "
            f"{med['whyrec']:.1f} tok/s, ratio {med['ratio']:.3f}; CPU ratio "
            f"{med['cpu_ratio']:.3f} ({med['tokens']:.0f} tokens/call); whyrec's own time "
            f"{med['own_ms']:.2f} ms/call",
            flush=True,
        )
    client.backend.generate = generate  # type: ignore[method-assign]
    return {"client": client, "sampling": sampling, "rows": out}


def cache_hits(client: LLMClient, sampling: dict, n: int) -> list[float]:
    """Latency of n lookups of one cached request (one miss fills the entry first)."""
    with tempfile.TemporaryDirectory() as tmp:
        cache = ReplyCache(Path(tmp) / "cache.sqlite")
        cached = LLMClient(client.settings, backend=client.backend, cache=cache)
        cached.complete(MESSAGES, **sampling)
        hits = []
        for _ in range(n):
            t0 = time.perf_counter()
            res = cached.complete(MESSAGES, **sampling)
            hits.append(time.perf_counter() - t0)
            assert res.cached
        cache.close()
    return hits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--max-tokens", type=int, default=128, help="budget of the plain call")
    ap.add_argument(
        "--json-max-tokens", type=int, default=256, help="budget of the JSON call (must fit it)"
    )
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    ap.add_argument("--cache-hits", type=int, default=300)
    args = ap.parse_args()

    load_before = os.getloadavg()
    runs = {}
    for threads in args.threads:
        run = measure(threads, args)
        runs[threads] = run
        last = run
    hits = cache_hits(last["client"], last["sampling"], args.cache_hits)
    hit_ms = statistics.median(hits) * 1000
    p95_ms = sorted(hits)[int(0.95 * len(hits))] * 1000
    plain = last["rows"]["plain"]
    fresh_s = statistics.median(
        [n / r for n, r in zip(plain["tokens"], plain["whyrec"], strict=True)]
    )
    print(f"cache hit: median {hit_ms:.3f} ms, p95 {p95_ms:.3f} ms (fresh call {fresh_s:.2f} s)")
    load_after = os.getloadavg()
    model = last["client"].model
    for run in runs.values():
        run["client"].close()

    def med(rows: dict, key: str) -> float:
        return statistics.median(rows[key])

    summary = {
        str(t): {label: {k: med(rows, k) for k in rows} for label, rows in run["rows"].items()}
        for t, run in runs.items()
    }
    payload = {
        "model": model,
        "threads": args.threads,
        "rounds": args.rounds,
        "max_tokens": args.max_tokens,
        "json_max_tokens": args.json_max_tokens,
        "load_average_1min": [round(load_before[0], 2), round(load_after[0], 2)],
        "medians": summary,
        "cache_hit_ms_median": hit_ms,
        "cache_hit_ms_p95": p95_ms,
        "fresh_call_s_median": fresh_s,
        "raw": {str(t): run["rows"] for t, run in runs.items()},
    }

    def row(threads: int, label: str, name: str) -> str:
        m = summary[str(threads)][label]
        return (
            f"| {name} | {threads} | {m['tokens']:.0f} | {m['direct']:.1f} | {m['whyrec']:.1f} "
            f"| {m['ratio']:.3f} | {m['cpu_direct']:.1f} | {m['cpu_whyrec']:.1f} "
            f"| {m['cpu_ratio']:.3f} | {m['own_ms']:.2f} ms ({m['own_share']:.3%}) |"
        )

    header = (
        "| request | threads | tokens/call | direct, wall tok/s | whyrec, wall tok/s "
        "| wall ratio | direct, CPU tok/s | whyrec, CPU tok/s | CPU ratio "
        "| whyrec's own time per call |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    table = "\n".join(
        row(t, label, name)
        for t in args.threads
        for label, name in (("plain", "plain chat"), ("json_schema", "JSON schema (grammar)"))
    )
    md = f"""## LLM layer: local backend throughput and cache hits

Model {model} (llama-cpp-python), greedy decoding, the same `Llama` object for both paths,
KV cache reset before every call, {args.rounds} alternating rounds per row. Wall tok/s =
completion tokens ÷ wall time of the whole call (prompt included); CPU tok/s = completion
tokens ÷ CPU seconds of the process during the call. Ratios are whyrec ÷ direct per round
(above 1: whyrec faster); medians. "whyrec's own time" is the wall time of
`LLMClient.complete` minus the time inside llama.cpp (message checks, bookkeeping, JSON
parsing and schema validation), with its share of the whole call.

{header}
{table}

Cache hit (SQLite, same request): median {hit_ms:.3f} ms, p95 {p95_ms:.3f} ms over
{args.cache_hits} lookups, against {fresh_s:.2f} s for the same call uncached.

1-minute load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} on
{os.cpu_count()} cores. Other jobs on the machine swing the wall time of 2-thread
llama.cpp calls by several times between calls; the 1-thread rows and whyrec's own
time are the stable measures of overhead. For JSON, whyrec compiles each schema's grammar
once and reuses it, while the direct call converts the schema on every request."""
    write_result("llm_throughput", payload, md)


if __name__ == "__main__":
    main()
