"""Sequential explanations with llama-cpp-python's own sampler chain versus the greedy
grammar shortcut (``whyrec.llm.backends.sampling``), same model, same prompts.

Each MovieLens-100k user's LANE explanation request (the workload of
``bench/batched_decoding.py``: real history, extracted preferences, seeded weights, the
held-out item, the explanation JSON schema and the explainer's token budget, the
client's re-asks) is answered by two sequential ``LocalBackend`` instances loaded from
the same file: *native* (``fast_greedy = False``, every token goes through the grammar
sampler over the whole vocabulary) and *shortcut* (the default). Calls alternate between
the two, user by user and in alternating order, so machine drift hits both alike.
Reported: users/minute, the per-user median time ratio, identical replies, and
llama.cpp's own decode-time counters (the rest of the wall time is sampling and Python).

Usage: .venv/bin/python bench/greedy_sampling.py [--users 12] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from _report import write_result
from batched_decoding import explanation_requests, perf_reset, perf_split, preference_stage
from whyrec.data import load_dataset
from whyrec.llm import LLMClient, LLMSettings
from whyrec.llm.backends.local import LocalBackend


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--window", type=int, default=50)
    ap.add_argument("--n-ctx", type=int, default=4096)
    ap.add_argument("--no-write", action="store_true", help="print only (smoke runs)")
    args = ap.parse_args()

    ds = load_dataset("movielens-100k")
    users = list(range(args.users))
    settings = LLMSettings(backend="local", n_threads=args.threads, n_ctx=args.n_ctx, cache=False)
    native, fast = LocalBackend(settings), LocalBackend(settings)
    native.fast_greedy = False
    assert native.llama is not None and fast.llama is not None  # load outside the timings
    _, _, prefs = preference_stage(
        LLMClient(settings, backend=fast, cache=False), ds, users, args.window, 1
    )
    reqs = explanation_requests(ds, users, prefs)
    clients = {
        "native": LLMClient(settings, backend=native, cache=False),
        "shortcut": LLMClient(settings, backend=fast, cache=False),
    }
    perf_reset(native)
    perf_reset(fast)
    times, outs = interleave(clients, reqs)
    texts = {k: [reply_text(o) for o in v] for k, v in outs.items()}
    split = {"native": perf_split(native), "shortcut": perf_split(fast)}
    counts = fast.describe()["greedy_grammar_tokens"]
    same = sum(a == b for a, b in zip(texts["native"], texts["shortcut"], strict=True))
    ratios = [a / b for a, b in zip(times["native"], times["shortcut"], strict=True)]
    rows = []
    for name in clients:
        wall = sum(times[name])
        decode = split[name]["prompt_eval_s"] + split[name]["generate_s"]
        usage = clients[name].usage.by_stage()["explanations"]
        rows.append(
            {
                "sampling": name,
                "users": len(users),
                "wall_s": round(wall, 2),
                "users_per_min": round(len(users) / wall * 60, 3),
                "median_user_s": round(statistics.median(times[name]), 2),
                "calls": usage.calls,
                "attempts": usage.attempts,
                "completion_tokens": usage.completion_tokens,
                "decode_s": round(decode, 2),
                "outside_decode_share": round(1 - decode / wall, 3),
                **split[name],
            }
        )
    summary = {
        "identical": f"{same}/{len(users)}",
        "speedup_total": round(rows[0]["wall_s"] / rows[1]["wall_s"], 2),
        "speedup_median_user": round(statistics.median(ratios), 2),
        "shortcut_tokens": counts,
    }
    print(rows, summary, flush=True)
    native.close()
    fast.close()
    if args.no_write:
        return
    lines = [
        "## Greedy grammar shortcut: sequential explanations",
        "",
        f"LANE explanations (four-step JSON schema, {rows[0]['users']} MovieLens-100k users, "
        f"the explainer's token budget and re-asks) with the packaged SmolLM2-135M (Q4_1), "
        f"one sequence at a time, llama.cpp threads {args.threads}, temperature 0, reply "
        "cache off. *native*: llama-cpp-python's sampler chain (the grammar checks every "
        "vocabulary token at every step); *shortcut*: the top tokens are checked first "
        "(`whyrec.llm.backends.sampling`, the default now). The two backends answer each "
        "user in turn, in alternating order. *decode s*: llama.cpp's own counters "
        "(prompt + generation); *outside decode*: the rest of the wall time (sampling, "
        "Python).",
        "",
        "| sampling | users/min | wall s | median s/user | calls | attempts | completion tokens "
        "| decode s | outside decode |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {r['sampling']} | {r['users_per_min']} | {r['wall_s']} | {r['median_user_s']} "
            f"| {r['calls']} | {r['attempts']} | {r['completion_tokens']:,} | {r['decode_s']} "
            f"| {r['outside_decode_share']:.0%} |"
            for r in rows
        ),
        "",
        f"Shortcut vs native: {summary['speedup_total']}x in total wall time, "
        f"{summary['speedup_median_user']}x per user (median); replies identical for "
        f"{summary['identical']} users. Tokens decided by the first check: "
        f"{counts['top']:,}; by the short walk: {counts['walked']:,}; by the full chain: "
        f"{counts['full_vocabulary']:,}.",
    ]
    write_result("greedy_sampling", {"rows": rows, "summary": summary}, "\n".join(lines))


if __name__ == "__main__":
    main()
