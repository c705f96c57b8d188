"""Users per minute of LANE's two LLM stages with the embedded model: sequential decoding
(today's ``LocalBackend``, one sequence at a time) versus batched decoding
(``BatchedLocalBackend``, several sequences per llama.cpp decode call), and whether the
replies are identical at temperature 0.

Workload, on MovieLens-100k users (the first ``--users`` of the data):

* **preferences** — ``PreferenceExtractor.extract_dataset`` exactly as ``whyrec
  preferences`` runs it with the packaged SmolLM2 (prompt mode chosen by the extractor:
  one call per preference aspect for this small model), history window ``--window``;
* **explanations** — LANE's four-step explanation prompt for each user, built from the
  user's real history (last 15 titles), the preferences just extracted, seeded weights
  and the user's held-out test item, with the explanation JSON schema and the token
  budget ``LaneExplainer`` uses.

Every configuration uses the same loaded model file, the reply cache off, and
``--threads`` llama.cpp threads. Wall time gives users/minute; process CPU time is
reported too. "identical" compares every reply text with the sequential run's.

Usage: .venv/bin/python bench/batched_decoding.py [--users 12] [--parallel 1 4 8]
       [--threads 2] [--window 50] [--stages preferences explanations] [--pref-mode auto]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np

from _report import write_result
from whyrec.data import load_dataset
from whyrec.explain.explainer import LaneExplainer
from whyrec.explain.preferences import PreferenceExtractor
from whyrec.explain.prompts import EXPLANATION_VERSION, explanation_messages
from whyrec.explain.schemas import explanation_schema
from whyrec.llm import LLMClient, LLMRequest, LLMSettings
from whyrec.llm.backends.batched import BatchedLocalBackend
from whyrec.llm.backends.local import LocalBackend

#: the completion budget LaneExplainer gives an explanation
EXPLAIN_TOKENS = LaneExplainer(None, None).max_tokens


def preference_stage(
    client: LLMClient, ds: Any, users: list[int], window: int, conc: int, mode: str = "auto"
):
    ex = PreferenceExtractor(client, m=5, window=window, concurrency=conc, mode=mode)
    prefs = ex.extract_dataset(ds, users, progress=False)
    texts = [(prefs[u].raw_reply or "") + "|" + "|".join(prefs[u].preferences) for u in users]
    return texts, ex.mode, prefs


def explanation_requests(ds: Any, users: list[int], prefs: dict) -> list[LLMRequest]:
    seqs = ds.user_sequences(("train",))
    test = ds.split_targets("test").set_index("user_idx")["item_idx"]
    genres = ds.items["genres"].fillna("").astype(str).tolist() if "genres" in ds.items else None
    rng = np.random.default_rng(0)
    out = []
    for u in users:
        p = prefs[u].preferences
        w = rng.dirichlet(np.ones(len(p))).round(3).tolist()
        item = int(test.loc[u])
        out.append(
            LLMRequest(
                messages=explanation_messages(
                    history=[ds.titles[i] for i in seqs[u][-15:]],
                    preferences=p,
                    weights=w,
                    item_title=ds.titles[item],
                    item_text=genres[item] if genres else "",
                ),
                schema=explanation_schema(len(p)),
                max_tokens=EXPLAIN_TOKENS,
                temperature=0.0,
                seed=0,
                stage="explanations",
                prompt_version=EXPLANATION_VERSION,
                tag=u,
            )
        )
    return out


def timed(fn: Any) -> tuple[Any, float, float]:
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=12)
    ap.add_argument("--parallel", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--window", type=int, default=50)
    ap.add_argument("--n-ctx", type=int, default=4096)
    ap.add_argument("--stages", nargs="+", default=["preferences", "explanations"])
    ap.add_argument(
        "--pref-mode", default="auto", help="preference prompt mode: auto, json or aspects"
    )
    ap.add_argument("--no-write", action="store_true", help="print only (smoke runs)")
    args = ap.parse_args()

    ds = load_dataset("movielens-100k")
    users = list(range(args.users))
    settings = LLMSettings(backend="local", n_threads=args.threads, n_ctx=args.n_ctx, cache=False)
    local = LocalBackend(settings)
    assert local.llama is not None  # load once, outside the timings
    rows: list[dict[str, Any]] = []

    def client_for(p: int | None) -> tuple[LLMClient, Any]:
        if p is None:
            return LLMClient(settings, backend=local, cache=False), None
        backend = BatchedLocalBackend(settings, n_parallel=p, local=local)
        assert backend.engine is not None  # create the context outside the timings
        return LLMClient(settings, backend=backend, cache=False), backend

    configs: list[int | None] = [None, *args.parallel]
    ref: dict[str, list[str]] = {}
    prefs_ref: dict | None = None
    for stage in args.stages:
        for p in configs:
            client, batched = client_for(p)
            conc = 1 if p is None else p
            if stage == "preferences":
                (texts, mode, prefs), wall, cpu = timed(
                    lambda c=client, k=conc: preference_stage(
                        c, ds, users, args.window, k, args.pref_mode
                    )
                )
                if p is None:
                    prefs_ref = prefs
                usage = client.usage.by_stage().get("preferences")
            else:
                if prefs_ref is None:  # explanations need preferences: take them sequentially
                    _, _, prefs_ref = preference_stage(
                        LLMClient(settings, backend=local, cache=False),
                        ds, users, args.window, 1, args.pref_mode,
                    )  # fmt: skip
                reqs = explanation_requests(ds, users, prefs_ref)
                outs, wall, cpu = timed(
                    lambda c=client, r=reqs, k=conc: c.complete_many(r, concurrency=k)
                )
                texts = [o.text if o.ok else f"FAILED {o.message}" for o in outs]
                mode = "json"
                usage = client.usage.by_stage().get("explanations")
            if p is None:
                ref[stage] = texts
            same = sum(a == b for a, b in zip(ref[stage], texts, strict=True))
            row = {
                "stage": stage,
                "decoding": "sequential" if p is None else "batched",
                "n_parallel": 1 if p is None else p,
                "users": len(users),
                "prompt_mode": mode,
                "wall_s": round(wall, 2),
                "cpu_s": round(cpu, 2),
                "users_per_min": round(len(users) / wall * 60, 2),
                "identical": f"{same}/{len(users)}",
                "calls": getattr(usage, "calls", None),
                "completion_tokens": getattr(usage, "completion_tokens", None),
                "steps": batched.engine.steps if batched is not None else None,
            }
            rows.append(row)
            print(row, flush=True)
            if batched is not None:
                batched.close()
    for stage in args.stages:
        base = next(r for r in rows if r["stage"] == stage and r["decoding"] == "sequential")
        for r in rows:
            if r["stage"] == stage:
                r["speedup"] = round(r["users_per_min"] / base["users_per_min"], 2)
    local.close()
    if args.no_write:
        return
    best = {
        s: max((r for r in rows if r["stage"] == s), key=lambda r: r["users_per_min"])
        for s in args.stages
    }
    pref_mode = next((r["prompt_mode"] for r in rows if r["stage"] == "preferences"), "-")
    lines = [
        "## Batched local decoding (issue 8)",
        "",
        f"Users per minute of the two LLM stages with the packaged SmolLM2-135M (Q4_1) on "
        f"{len(users)} MovieLens-100k users, llama.cpp threads {args.threads}, history "
        f"window {args.window}, preference prompt mode {pref_mode}, "
        "temperature 0, reply cache off, the client's default re-asks. *sequential* is "
        "`LocalBackend` (one sequence at a time); *batched* is `BatchedLocalBackend` with "
        "`n_parallel` sequences per decode call. *identical* counts replies equal to the "
        "sequential run's.",
        "",
        "| stage | decoding | n_parallel | users/min | speedup | identical | wall s | CPU s |",
        "|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['stage']} | {r['decoding']} | {r['n_parallel']} | {r['users_per_min']} | "
            f"{r['speedup']}x | {r['identical']} | {r['wall_s']} | {r['cpu_s']} |"
        )
    lines += [
        "",
        "Best: "
        + "; ".join(
            f"{s} {b['users_per_min']} users/min ({b['speedup']}x, n_parallel {b['n_parallel']})"
            for s, b in best.items()
        )
        + ". Median speedup of the batched runs: "
        + f"{statistics.median(r['speedup'] for r in rows if r['decoding'] == 'batched'):.2f}x.",
    ]
    write_result(
        "batched_decoding",
        {"settings": vars(args), "rows": rows},
        "\n".join(lines),
    )


if __name__ == "__main__":
    main()
