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
import time
from typing import Any

import numpy as np

from _report import write_result
from weight_formats import quality as weight_quality
from whyrec.data import load_dataset
from whyrec.explain.explainer import LaneExplainer
from whyrec.explain.preferences import PreferenceExtractor
from whyrec.explain.prompts import EXPLANATION_VERSION, explanation_messages
from whyrec.explain.schemas import explanation_schema
from whyrec.llm import LLMClient, LLMRequest, LLMSettings
from whyrec.llm.backends.batched import BatchedLocalBackend
from whyrec.llm.backends.local import LocalBackend
from whyrec.llm.backends.pool import WorkerPoolBackend

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
        falls = rng.integers(2, 30, size=len(p)).tolist()
        item = int(test.loc[u])
        out.append(
            LLMRequest(
                messages=explanation_messages(
                    history=[ds.titles[i] for i in seqs[u][-15:]],
                    preferences=p,
                    preference_effects=[f"without it, rank 1 becomes {r}" for r in falls],
                    item_title=ds.titles[item],
                    item_facts=genres[item].split("|") if genres else [],
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


def perf_reset(local: LocalBackend) -> None:
    import llama_cpp

    llama_cpp.llama_perf_context_reset(local.llama._ctx.ctx)


def _split(prompt_tokens: int, prompt_s: float, generated: int, generate_s: float) -> dict:
    total = prompt_s + generate_s
    return {
        "prompt_tokens_evaluated": int(prompt_tokens),
        "prompt_eval_s": round(prompt_s, 2),
        "generated_tokens": int(generated),
        "generate_s": round(generate_s, 2),
        "prompt_share": round(prompt_s / total, 3) if total else None,
    }


def perf_split(local: LocalBackend) -> dict[str, Any]:
    """Where the sequential context spent its decode time since :func:`perf_reset`:
    llama.cpp's own counters (calls with several tokens count as prompt evaluation)."""
    import llama_cpp

    d = llama_cpp.llama_perf_context(local.llama._ctx.ctx)
    return _split(d.n_p_eval, d.t_p_eval_ms / 1000, d.n_eval, d.t_eval_ms / 1000)


def engine_split(backend: Any) -> dict[str, Any]:
    """The same split from an in-process batched engine's counters (nothing for a pool)."""
    e = getattr(backend, "_engine", None)
    if e is None:
        return {}
    return _split(e.prompt_tokens, e.prompt_seconds, e.generated_tokens, e.generate_seconds)


def _x(v: float | None) -> str:
    return "—" if v is None else f"{v}x"


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
    ap.add_argument(
        "--weights",
        nargs="+",
        default=["file", "f16"],
        help="weight formats to compare (the first is the baseline): file = the packaged "
        "Q4_1 as stored; f16, q8_0, q4_0, ... = re-encoded once by llama.cpp",
    )
    ap.add_argument(
        "--batched-for",
        nargs="+",
        default=None,
        metavar="W",
        help="weights that get batched runs (default: all)",
    )
    ap.add_argument(
        "--sequential-for",
        nargs="+",
        default=None,
        metavar="W",
        help="weights that get a sequential run (default: all; the first always does)",
    )
    ap.add_argument(
        "--name",
        default="batched_decoding",
        help="result name: bench/results/<name>.json and its docs/benchmarks.md section",
    )
    ap.add_argument("--title", default="", help="added to the section's heading")
    ap.add_argument(
        "--workers",
        type=int,
        default=1,
        help="run the --parallel configurations on this many model processes sharing "
        "--threads (WorkerPoolBackend; n_parallel 1 = sequential in each)",
    )
    ap.add_argument(
        "--sequential-native",
        action="store_true",
        help="sequential rows decode with llama-cpp-python's own sampler chain (no greedy "
        "grammar shortcut): the sequential path as it was when issue 8 was filed",
    )
    ap.add_argument(
        "--whole-reasks",
        action="store_true",
        help="every arm re-asks for the whole reply (partial_reasks off), as before 12-02",
    )
    ap.add_argument("--no-write", action="store_true", help="print only (smoke runs)")
    args = ap.parse_args()

    ds = load_dataset("movielens-100k")
    users = list(range(args.users))
    rows: list[dict[str, Any]] = []
    ref: dict[tuple[str, str], list[str]] = {}  # (stage, weights) -> sequential replies
    prefs_ref: dict | None = None
    loaded: dict[str, LocalBackend] = {}
    for weights in args.weights:
        settings = LLMSettings(
            backend="local", n_threads=args.threads, n_ctx=args.n_ctx, cache=False,
            weights=weights, partial_reasks=not args.whole_reasks,
        )  # fmt: skip
        local = LocalBackend(settings)
        # read when the model loads (next line); the batched engine has its own sampler,
        # so only the sequential rows depend on it
        local.fast_greedy = not args.sequential_native
        assert local.llama is not None  # convert/load once, outside the timings
        assert (local.sampling is None) == args.sequential_native
        loaded[weights] = local

        def client_for(p: int | None, s: LLMSettings = settings, lb: Any = local) -> tuple:
            if p is None:
                return LLMClient(s, backend=lb, cache=False), None
            if args.workers > 1:  # data-parallel processes sharing --threads
                ps = s.model_copy(update={"workers": args.workers, "n_parallel": p})
                pool = WorkerPoolBackend(ps)
                pool._start()  # spawn and load outside the timings
                return LLMClient(ps, backend=pool, cache=False), pool
            backend = BatchedLocalBackend(s, n_parallel=p, local=lb)
            assert backend.engine is not None  # create the context outside the timings
            return LLMClient(s, backend=backend, cache=False), backend

        for stage in args.stages:
            configs: list[int | None] = []
            if weights == args.weights[0] or weights in (args.sequential_for or args.weights):
                configs.append(None)
            if weights in (args.batched_for or args.weights):
                configs += args.parallel
            if stage == "explanations" and prefs_ref is None:
                # explanations need preferences: take them sequentially, before any timing
                _, _, prefs_ref = preference_stage(
                    LLMClient(settings, backend=local, cache=False),
                    ds, users, args.window, 1, args.pref_mode,
                )  # fmt: skip
            for p in configs:
                client, batched = client_for(p)
                if p is None:
                    perf_reset(local)  # the row's counters start here
                conc = 1 if p is None else (p if args.workers == 1 else batched.max_concurrency)
                if stage == "preferences":
                    (texts, mode, prefs), wall, cpu = timed(
                        lambda c=client, k=conc: preference_stage(
                            c, ds, users, args.window, k, args.pref_mode
                        )
                    )
                    if p is None and prefs_ref is None:
                        prefs_ref = prefs  # explanation prompts: the first weights' preferences
                    usage = client.usage.by_stage().get("preferences")
                else:
                    assert prefs_ref is not None
                    reqs = explanation_requests(ds, users, prefs_ref)
                    outs, wall, cpu = timed(
                        lambda c=client, r=reqs, k=conc: c.complete_many(r, concurrency=k)
                    )
                    texts = [o.text if o.ok else f"FAILED {o.message}" for o in outs]
                    mode = "json"
                    usage = client.usage.by_stage().get("explanations")
                if p is None:
                    ref[(stage, weights)] = texts
                same_ref = ref.get((stage, weights))
                same = (
                    f"{sum(a == b for a, b in zip(same_ref, texts, strict=True))}/{len(users)}"
                    if same_ref is not None
                    else "—"
                )
                base = ref[(stage, args.weights[0])]
                same_base = sum(a == b for a, b in zip(base, texts, strict=True))
                row = {
                    "stage": stage,
                    "weights": weights,
                    "decoding": (
                        "sequential"
                        if p is None
                        else ("batched" if p > 1 else "sequential")
                        + (f" x{args.workers} workers" if args.workers > 1 else "")
                    ),  # fmt: skip
                    "n_parallel": 1 if p is None else p,
                    "workers": 1 if p is None else args.workers,
                    "users": len(users),
                    "prompt_mode": mode,
                    "wall_s": round(wall, 2),
                    "cpu_s": round(cpu, 2),
                    "users_per_min": round(len(users) / wall * 60, 2),
                    "identical": same,
                    "identical_to_first_weights": f"{same_base}/{len(users)}",
                    "calls": getattr(usage, "calls", None),
                    "completion_tokens": getattr(usage, "completion_tokens", None),
                    "steps": (
                        batched.engine.steps if isinstance(batched, BatchedLocalBackend) else None
                    ),
                    **(perf_split(local) if p is None else engine_split(batched)),
                }
                rows.append(row)
                print(row, flush=True)
                if batched is not None:
                    batched.close()
        local.close()
    assert prefs_ref is not None
    quality_text = "\n\n".join(
        m["content"] for r in explanation_requests(ds, users, prefs_ref) for m in r.messages
    )
    quality = weight_quality(
        {w: b.loaded_path for w, b in loaded.items()}, args.threads, quality_text
    )
    print(quality, flush=True)
    for stage in args.stages:
        first = next(
            r for r in rows
            if r["stage"] == stage and r["decoding"] == "sequential"
            and r["weights"] == args.weights[0]
        )  # fmt: skip
        for r in rows:
            if r["stage"] != stage:
                continue
            same_w = next(
                (
                    x for x in rows
                    if x["stage"] == stage and x["decoding"] == "sequential"
                    and x["weights"] == r["weights"]
                ),
                None,
            )  # fmt: skip
            r["speedup"] = round(r["users_per_min"] / first["users_per_min"], 2)
            r["speedup_same_weights"] = (
                round(r["users_per_min"] / same_w["users_per_min"], 2) if same_w else None
            )
    if args.no_write:
        return
    best = {
        s: max((r for r in rows if r["stage"] == s), key=lambda r: r["users_per_min"])
        for s in args.stages
    }
    pref_mode = next((r["prompt_mode"] for r in rows if r["stage"] == "preferences"), "-")
    first = args.weights[0]
    lines = [
        "## Batched local decoding (issue 8)"
        + ("" if args.name == "batched_decoding" else f": {len(users)} users")
        + (f", {args.workers} worker processes" if args.workers > 1 else "")
        + (f", {args.title}" if args.title else ""),
        "",
        f"Users per minute of the two LLM stages with the packaged SmolLM2-135M on "
        f"{len(users)} MovieLens-100k users (one request per user per stage: the m "
        f"preference calls; one explanation of the held-out item), llama.cpp threads "
        f"{args.threads}, history window {args.window}, preference prompt mode {pref_mode}, "
        "temperature 0, reply cache off, the client's default re-asks (partial ones from "
        "2026-12-02 on, see *Partial re-asks*). *weights*: `file` = "
        "the packaged Q4_1 GGUF as stored; `f16` etc. = the same file re-encoded once by "
        "llama.cpp (`WHYREC_LLM_WEIGHTS`). *sequential* is `LocalBackend` (one sequence at a "
        "time; from 2026-12-02 on with the greedy grammar shortcut both paths share, see "
        "*Greedy grammar shortcut*); *batched* is `BatchedLocalBackend` with `n_parallel` "
        "sequences per decode call. *speedup* is against the sequential run on the "
        "packaged weights (today's default); *same w.* against the sequential run on the "
        "same weights. *identical* counts replies equal to the sequential run's on the "
        "same weights; *= file* those equal to the packaged weights' sequential replies."
        + (
            " Here the *sequential* rows use llama-cpp-python's own sampler chain (no "
            "greedy grammar shortcut: the sequential path when issue 8 was filed)."
            if args.sequential_native
            else ""
        )
        + (
            " Every arm re-asks for the whole reply (`partial_reasks` off)."
            if args.whole_reasks
            else ""
        )
        + (
            f" Here the *batched x{args.workers} workers* rows run on `WorkerPoolBackend` "
            f"(`workers = {args.workers}`): {args.workers} model processes sharing the "
            f"{args.threads} threads, each decoding up to `n_parallel` sequences; the "
            f"sequential rows are one in-process model with {args.threads} threads."
            if args.workers > 1
            else ""
        ),
        "",
        "*prompt share*: the part of the model's decode time spent evaluating prompt tokens "
        "(llama.cpp's counters for sequential runs, the engine's for in-process batched "
        "ones; not collected from worker processes) — batching cannot shorten that part, "
        "so 1 / (prompt share) bounds what batching alone can gain.",
        "",
        "| stage | weights | decoding | n_parallel | users/min | speedup | same w. | "
        "identical | = file | wall s | prompt share |",
        "|---|---|---|---:|---:|---:|---:|---|---|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['stage']} | {r['weights']} | {r['decoding']} | {r['n_parallel']} | "
            f"{r['users_per_min']} | {r['speedup']}x | "
            f"{_x(r['speedup_same_weights'])} | "
            f"{r['identical']} | {r['identical_to_first_weights']} | {r['wall_s']} | "
            f"{r.get('prompt_share') or '—'} |"
        )
    lines += [
        "",
        "Best: "
        + "; ".join(
            f"{s} {b['users_per_min']} users/min ({b['speedup']}x, {b['weights']}, "
            f"n_parallel {b['n_parallel']})"
            for s, b in best.items()
        )
        + ".",
        "",
        f"Quality of the weight formats (next-token predictions over the {len(users)} "
        "explanation prompts' text, first "
        f"{next(iter(quality.values()))['tokens']} tokens; agreement and KL against `{first}`):",
        "",
        "| weights | perplexity | top-1 agreement | KL |",
        "|---|---:|---:|---:|",
    ]
    for name, q in quality.items():
        lines.append(
            f"| {name} | {q['perplexity']} | {q.get('top1_agreement', '—')} | "
            f"{q.get('kl_from_file', '—')} |"
        )
    write_result(
        args.name,
        {"settings": vars(args), "rows": rows, "weights_quality": quality},
        "\n".join(lines),
    )


if __name__ == "__main__":
    main()
