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

from _ab import arm_row, base_settings, interleave, parse_args, prepare, reply_text, speedup
from _report import write_result
from batched_decoding import perf_reset, perf_split
from whyrec.llm.backends.local import LocalBackend


def main() -> None:
    args = parse_args(__doc__, users=12)
    settings = base_settings(args)
    native, fast = LocalBackend(settings), LocalBackend(settings)
    native.fast_greedy = False
    users, reqs, clients = prepare(
        args, {"native": (settings, native), "shortcut": (settings, fast)}
    )
    perf_reset(native)
    perf_reset(fast)
    times, outs = interleave(clients, reqs)
    texts = {k: [reply_text(o) for o in v] for k, v in outs.items()}
    split = {"native": perf_split(native), "shortcut": perf_split(fast)}
    counts = fast.describe()["greedy_grammar_tokens"]
    same = sum(a == b for a, b in zip(texts["native"], texts["shortcut"], strict=True))
    rows = []
    for name in clients:
        row = arm_row(clients[name], times[name])
        decode = split[name]["prompt_eval_s"] + split[name]["generate_s"]
        rows.append(
            {
                "sampling": name,
                **row,
                "decode_s": round(decode, 2),
                "outside_decode_share": round(1 - decode / row["wall_s"], 3),
                **split[name],
            }
        )
    summary = {
        "identical": f"{same}/{len(users)}",
        **speedup(times, "native", "shortcut"),
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
