"""Explanations with whole-reply re-asks versus partial re-asks (only the fields that
failed validation are asked for again), same model, same prompts.

The workload is ``bench/batched_decoding.py``'s explanation stage (MovieLens-100k users:
real history, extracted preferences, seeded weights, the held-out item, the four-step
explanation schema, the explainer's token budget, two re-asks). Two sequential
``LocalBackend`` instances loaded from the packaged SmolLM2 answer each user in turn, in
alternating order: *whole* (``partial_reasks = False``, the behaviour before 2026-12-02)
and *partial* (the default). Reported: users/minute, attempts and completion tokens,
how many users got a validated LLM explanation (the rest fall back to the template
reason), and how many replies are identical (those that needed no re-ask must be).

Usage: .venv/bin/python bench/partial_reasks.py [--users 16] [--threads 2]
"""

from __future__ import annotations

from _ab import arm_row, base_settings, interleave, parse_args, prepare, reply_text, speedup
from _report import write_result
from whyrec.llm.backends.local import LocalBackend


def main() -> None:
    args = parse_args(__doc__, users=16)
    base = base_settings(args)
    settings = {
        "whole": base.model_copy(update={"partial_reasks": False}),
        "partial": base,
    }
    backends = {k: LocalBackend(s) for k, s in settings.items()}
    users, reqs, clients = prepare(args, {k: (settings[k], backends[k]) for k in settings})
    times, outs = interleave(clients, reqs)
    texts = {k: [reply_text(o) for o in v] for k, v in outs.items()}
    rows = [
        {"reasks": name, **arm_row(client, times[name]), "validated": sum(o.ok for o in outs[name])}
        for name, client in clients.items()
    ]
    one_shot = [i for i, o in enumerate(outs["whole"]) if o.ok and o.attempts == 1]
    summary = {
        **speedup(times, "whole", "partial"),
        "identical": f"{sum(a == b for a, b in zip(*texts.values(), strict=True))}/{len(users)}",
        "no_reask_users": len(one_shot),
        "no_reask_identical": sum(texts["whole"][i] == texts["partial"][i] for i in one_shot),
    }
    print(rows, summary, flush=True)
    for b in backends.values():
        b.close()
    if args.no_write:
        return
    lines = [
        "## Partial re-asks: explanations",
        "",
        f"LANE explanations (four-step JSON schema, {len(users)} MovieLens-100k users, the "
        "explainer's token budget, two re-asks) with the packaged SmolLM2-135M (Q4_1), one "
        f"sequence at a time, llama.cpp threads {args.threads}, temperature 0, reply cache "
        "off. *whole*: a reply that fails validation is asked for again in full; *partial*: "
        "when its problems all lie in some top-level fields (with this schema: almost always "
        "the `explanation` text, whose no-loop and no-label checks the grammar cannot "
        "express), only those fields are asked for again and merged into the reply. Two "
        "backends answer each user in turn, in alternating order. *validated*: users whose "
        "reply passed validation within the re-asks (the others get the template reason).",
        "",
        "| re-asks | users/min | wall s | median s/user | attempts | completion tokens "
        "| prompt tokens | validated |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {r['reasks']} | {r['users_per_min']} | {r['wall_s']} | {r['median_user_s']} "
            f"| {r['attempts']} | {r['completion_tokens']:,} | {r['prompt_tokens']:,} "
            f"| {r['validated']}/{r['users']} |"
            for r in rows
        ),
        "",
        f"Partial vs whole: {summary['speedup_total']}x in total wall time, "
        f"{summary['speedup_median_user']}x per user (median). Replies identical for "
        f"{summary['identical']} users; of the {summary['no_reask_users']} users whose first "
        f"reply validated, {summary['no_reask_identical']} identical (they must all be).",
    ]
    write_result("partial_reasks", {"rows": rows, "summary": summary}, "\n".join(lines))


if __name__ == "__main__":
    main()
