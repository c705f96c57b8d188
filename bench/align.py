"""Tuning-based alignment on MovieLens-100k: a small documented run.

f = SASRec trained on the leave-one-out split. Surrogates = the packaged
SmolLM2-135M-Instruct with LoRA (and connectors for intention/hybrid), each trained for
the same number of steps on samples of a seeded set of training users:

* alignment with f (RecExplainer): untuned vs behaviour vs intention vs hybrid, measured on
  *other* users (history before their test item) against f's predictions;
* recommendation knowledge (Cao et al.): rec tasks only vs rec + auxiliary tasks (the
  same rec samples plus as many MIM/MLM/BPR samples, trained for proportionally more
  steps: one pass over each set), Recall@10 / NDCG@10 over the full catalogue against
  the true test item, beside SASRec and popularity on the same users.

Usage: .venv/bin/python bench/align.py [--steps 60] [--knowledge-steps 30]
       [--train-users 300] [--eval-users 24] [--max-history 6] [--work DIR] [--report-only]
Pin it to one core on a shared machine: WHYREC_THREADS=1 taskset -c 1 ...
Trained surrogates are kept in --work; a re-run reuses finished ones (and resumes
unfinished ones from their checkpoints).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import write_result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=60, help="steps per alignment surrogate")
    ap.add_argument("--knowledge-steps", type=int, default=30, help="steps of the rec-only run")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--train-users", type=int, default=300)
    ap.add_argument("--eval-users", type=int, default=24)
    ap.add_argument("--max-history", type=int, default=6)
    ap.add_argument("--beams", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument(
        "--train-only",
        nargs="+",
        default=None,
        metavar="RUN",
        help="train just these surrogates (behaviour, intention, hybrid, rec-only, rec+aux) "
        "into --work and exit: a second process on another core can train some while the "
        "main run trains the others (a later full run reuses them)",
    )
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="re-render the docs section from bench/results/align.json (no training)",
    )
    args = ap.parse_args()
    if args.report_only:
        rerender()
        return

    import numpy as np
    import torch

    from whyrec.align.builders import (
        REC_ONLY_MIX,
        WITH_AUX_MIX,
        AlignmentConfig,
        KnowledgeConfig,
        build_alignment,
        build_knowledge,
        knowledge_eval_samples,
    )
    from whyrec.align.decoding import TitleTrie
    from whyrec.align.evaluation import (
        evaluate_alignment,
        evaluate_knowledge,
        recommender_knowledge,
    )
    from whyrec.align.explainer import SurrogateExplainer
    from whyrec.align.tuning import Surrogate, TuneConfig, resolve_precision, train_surrogate
    from whyrec.data import load_dataset
    from whyrec.models import create_model, load_model
    from whyrec.paths import cache_dir

    work = args.work or cache_dir("bench", "align")
    work.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    load_before = os.getloadavg()[0]
    timings: dict[str, float] = {}

    ds = load_dataset("movielens-100k")
    t = time.perf_counter()
    f_dir = work / "f-sasrec"
    if (f_dir / "manifest.json").is_file():
        f = load_model(f_dir, ds)
    else:
        f = create_model("sasrec", epochs=40, patience=5, seed=args.seed).fit(ds, progress=False)
        f.save(f_dir)
    timings["train f (SASRec)"] = time.perf_counter() - t

    order = np.random.default_rng([args.seed, 11]).permutation(ds.n_users)
    train_users = order[: args.train_users]
    eval_users = order[args.train_users : args.train_users + args.eval_users]
    bs, mh = args.batch_size, args.max_history
    n_align = args.steps * bs
    n_rec = args.knowledge_steps * bs

    t = time.perf_counter()
    train_sets, eval_sets = {}, {}
    for form in ("behaviour", "intention", "hybrid"):
        train_sets[form] = build_alignment(
            f, ds, train_users,
            AlignmentConfig(form=form, n_samples=n_align, max_history=mh, seed=args.seed),
        )  # fmt: skip
        eval_sets[form] = build_alignment(
            f, ds, eval_users,
            AlignmentConfig(
                form=form, per_state=True, max_history=mh, seed=args.seed + 1,
                tasks={"retrieval": 1, "ranking": 1, "interest": 1, "history": 1},
            ),
            split="test",
        )  # fmt: skip
    knowledge_sets = {
        "rec-only": build_knowledge(
            ds, train_users,
            KnowledgeConfig(REC_ONLY_MIX, n_samples=n_rec, max_history=mh, seed=args.seed),
        ),
        "rec+aux": build_knowledge(
            ds, train_users,
            KnowledgeConfig(WITH_AUX_MIX, n_samples=2 * n_rec, max_history=mh, seed=args.seed),
        ),
    }  # fmt: skip
    k_eval = knowledge_eval_samples(ds, eval_users, max_history=mh, seed=args.seed)
    timings["build samples"] = time.perf_counter() - t

    runs = {
        "behaviour": (train_sets["behaviour"], args.steps),
        "intention": (train_sets["intention"], args.steps),
        "hybrid": (train_sets["hybrid"], args.steps),
        "rec-only": (knowledge_sets["rec-only"], args.knowledge_steps),
        "rec+aux": (knowledge_sets["rec+aux"], 2 * args.knowledge_steps),
    }
    if args.train_only:
        unknown = sorted(set(args.train_only) - set(runs))
        if unknown:
            raise SystemExit(f"--train-only: unknown run(s) {unknown}; expected {list(runs)}")
        runs = {name: runs[name] for name in args.train_only}
    surrogates: dict[str, Surrogate] = {}
    train_info: dict[str, dict] = {}
    for name, (sset, steps) in runs.items():
        t = time.perf_counter()
        run_dir = work / f"sur-{name}-s{steps}-b{bs}-u{args.train_users}"
        if (run_dir / "model" / "manifest.json").is_file():
            sur = Surrogate.load(run_dir)
        else:
            cfg = TuneConfig(steps=steps, batch_size=bs, seed=args.seed, checkpoint_every=20)
            sur = train_surrogate(sset, run_dir, cfg, progress=True, name=name).surrogate
        train_info[name] = {
            **sur.manifest["training"],
            "samples_built": len(sset),
            "counts": sset.counts(),
        }
        surrogates[name] = sur
        timings[f"train {name}"] = time.perf_counter() - t
        print(name, json.dumps(train_info[name]), flush=True)

    if args.train_only:
        return
    surrogates["untuned"] = Surrogate.untuned()
    trie = TitleTrie(surrogates["untuned"], ds.titles)

    alignment = {}
    for name, form in (
        ("untuned", "behaviour"),
        ("behaviour", "behaviour"),
        ("intention", "intention"),
        ("hybrid", "hybrid"),
    ):
        t = time.perf_counter()
        alignment[name] = evaluate_alignment(surrogates[name], eval_sets[form], trie=trie)
        timings[f"evaluate alignment: {name}"] = time.perf_counter() - t
        print(name, json.dumps({k: v for k, v in alignment[name].items() if k != "examples"}))

    knowledge = {}
    for name in ("untuned", "rec-only", "rec+aux"):
        t = time.perf_counter()
        knowledge[name] = evaluate_knowledge(
            surrogates[name], k_eval, trie, ds.titles, beams=args.beams
        )
        timings[f"evaluate knowledge: {name}"] = time.perf_counter() - t
        print(name, json.dumps(knowledge[name]))
    users = [s.meta["user"] for s in k_eval.samples]
    pop = create_model("popularity").fit(ds)
    references = {
        "sasrec (f)": recommender_knowledge(f, ds, users),
        "popularity": recommender_knowledge(pop, ds, users),
    }

    explanations = []
    ex = SurrogateExplainer(surrogates["hybrid"], f, max_history=mh)
    for u in eval_users[:2]:
        for e in ex.recommend_and_explain(int(u), k=1):
            explanations.append(
                {"user": e.user, "title": e.title, "reason": e.reason, "source": e.reason_source}
            )

    total = time.perf_counter() - t_all
    payload = {
        "dataset": "movielens-100k",
        "f": {"model": "sasrec", **{k: f.training.get(k) for k in ("valid_ndcg10", "epochs_run")}},
        "train_users": int(len(train_users)),
        "eval_users": int(len(eval_users)),
        "steps": args.steps,
        "knowledge_steps": args.knowledge_steps,
        "batch_size": bs,
        "max_history": mh,
        "precision": resolve_precision("auto"),
        "threads": torch.get_num_threads(),
        "training": train_info,
        "alignment": alignment,
        "knowledge": knowledge,
        "references": references,
        "explanations": explanations,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "total_s": round(total, 1),
        "load_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    write_result("align", payload, markdown(payload))


def _f(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def markdown(p: dict) -> str:
    al, kn, ref = p["alignment"], p["knowledge"], p["references"]
    lines = [
        "## Tuning-based alignment on MovieLens-100k (RecExplainer, Cao et al.)",
        "",
        f"f = SASRec (validation NDCG@10 {_f(p['f']['valid_ndcg10'], 4)}). Surrogates: "
        "SmolLM2-135M-Instruct (packaged GGUF, de-quantised) + LoRA r=8 on q/k/v/o, "
        f"{p['precision']} compute, batch {p['batch_size']}, {p['threads']} torch thread; "
        f"training samples from {p['train_users']} seeded users, evaluation on "
        f"{p['eval_users']} other users (history before their test item, "
        f"{p['max_history']} titles shown). Alignment surrogates: {p['steps']} steps each "
        f"({p['steps'] * p['batch_size']} samples, one pass).",
        "",
        "**Alignment with f** (labels are f's predictions; retrieval = exact title match "
        "against f's top 5; *trie* = decoding constrained to catalogue titles; ranking = "
        "NDCG@5 of the generated order of 5 shuffled items vs f's order, chance "
        f"{_f(al['untuned'].get('ranking', {}).get('chance_NDCG@5'))}; interest = Yes/No "
        "accuracy from the first answer token's logits, balanced; coverage = share of the 5 "
        "most recent history titles listed):",
        "",
        "| surrogate | form | retrieval HR@5 | NDCG@5 | trie HR@5 | trie NDCG@5 "
        "| ranking NDCG@5 (complete) | interest acc. | history coverage | eval s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in al.items():
        rt, tr, rk = r.get("retrieval", {}), r.get("retrieval_trie", {}), r.get("ranking", {})
        hist = r.get("history", {}).get("coverage")
        lines.append(
            f"| {name} | {r['form']} | {_f(rt.get('HR@5'))} | {_f(rt.get('NDCG@5'))} | "
            f"{_f(tr.get('HR@5'))} | {_f(tr.get('NDCG@5'))} | {_f(rk.get('NDCG@5'))} "
            f"({_f(rk.get('complete_rate'), 2)}) | {_f(r.get('interest', {}).get('accuracy'))} "
            f"| {_f(hist)} | {r['seconds']:.0f} |"
        )
    n = al["untuned"]["retrieval"]["n"]
    lines += [
        "",
        f"n = {n} users per task ({2 * n} interest questions). "
        "**Recommendation knowledge** (truth = the test item; full catalogue, history "
        f"excluded; surrogates rank by beam search over the title trie, {p['knowledge_steps']} "
        f"steps rec-only, {2 * p['knowledge_steps']} steps rec+aux on the same rec samples "
        "plus as many auxiliary ones):",
        "",
        "| model | Recall@10 | NDCG@10 | n | s / user |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in kn.items():
        lines.append(
            f"| LLM {name} | {_f(r['Recall@10'])} | {_f(r['NDCG@10'])} | {r['n']} | "
            f"{_f(r['seconds_per_user'], 1)} |"
        )
    for name, r in ref.items():
        lines.append(f"| {name} | {_f(r['Recall@10'])} | {_f(r['NDCG@10'])} | {r['n']} | — |")
    lines += ["", "Orderings the papers claim, checked on these numbers:", ""]
    lines += [f"- {c}" for c in claims(p)]
    tr = p["training"]
    lines += [
        "",
        "Training (loss = mean answer-token cross-entropy over the first / last 10 steps):",
        "",
        "| run | steps | samples | loss first → last | s / step |",
        "|---|---:|---:|---|---:|",
    ]
    for name, t in tr.items():
        lines.append(
            f"| {name} | {t['steps']}"
            + (f" (resumed at {t['resumed_from_step']})" if t.get("resumed_from_step") else "")
            + f" | {t['samples']} | {_f(t['loss_first10'], 2)} → "
            f"{_f(t['loss_last10'], 2)} | {t['seconds_per_step']:.2f} |"
        )
    lines += [
        "",
        f"Wall time {p['total_s'] / 60:.1f} min in one process pinned to one core "
        f"(`taskset -c 1`, 1 torch thread); 1-minute load average before/after "
        f"{p['load_before_after'][0]} / {p['load_before_after'][1]} on 2 cores shared with "
        "other jobs, so times are upper bounds. A run marked *resumed* was started by a "
        "second process (`--train-only`) on the other core and finished from its checkpoint "
        "here; its s / step mixes both. Stages (s): "
        + ", ".join(f"{k} {v:.0f}" for k, v in p["timings_s"].items())
        + ".",
    ]
    if p["explanations"]:
        e = p["explanations"][0]
        lines += [
            "",
            f"A surrogate explanation (hybrid, user {e['user']}, item «{e['title']}», "
            f"source {e['source']}): “{e['reason']}”",
        ]
    return "\n".join(lines)


def beyond_chance(r: dict) -> list[str]:
    """The alignment metrics on which a surrogate differs from chance by > 2 s.e."""
    import itertools

    import numpy as np

    from whyrec.align.evaluation import ranking_ndcg

    out = []
    if r["retrieval"]["HR@5"] > 0 or r.get("retrieval_trie", {}).get("HR@5", 0) > 0:
        out.append("retrieval")  # chance is 5 / 1,682 per user: any hit is signal
    perms = [ranking_ndcg(q, 5) for q in itertools.permutations(range(5))]
    se = float(np.std(perms)) / np.sqrt(max(r["ranking"]["n"], 1))
    if abs(r["ranking"]["NDCG@5"] - r["ranking"]["chance_NDCG@5"]) > 2 * se:
        out.append("ranking")
    if abs(r["interest"]["accuracy"] - 0.5) > 2 * 0.5 / np.sqrt(max(r["interest"]["n"], 1)):
        out.append("interest")
    if r.get("history", {}).get("coverage", 0) > 0:
        out.append("history")
    return out


def _hits(rate: float, n: int) -> int:
    return int(round(rate * n))


def _fisher_greater(a: int, b: int, n_a: int, n_b: int) -> float:
    """One-sided Fisher exact p-value that a's hit rate exceeds b's."""
    from scipy.stats import fisher_exact

    return float(fisher_exact([[a, n_a - a], [b, n_b - b]], alternative="greater")[1])


def claims(p: dict) -> list[str]:
    """The papers' orderings, checked metric by metric with the noise stated.

    Retrieval is compared by hits (trie decoding where measured): chance is 5 / 1,682 per
    user, so a hit is signal and a difference in hits gets a one-sided Fisher exact test.
    Ranking and interest only count when they leave chance by more than 2 s.e.
    """
    al, kn = p["alignment"], p["knowledge"]
    signal = {n: beyond_chance(r) for n, r in al.items()}

    def retrieval(name: str) -> tuple[int, int]:
        r = al[name].get("retrieval_trie") or al[name]["retrieval"]
        return _hits(r["HR@5"], r["n"]), r["n"]

    out = [
        "Metrics beyond chance (more than 2 standard errors from a random answer; any "
        "retrieval hit counts): "
        + "; ".join(f"{n}: {', '.join(s) or 'none'}" for n, s in signal.items())
        + "."
    ]
    hits = {n: retrieval(n) for n in al}
    hit_text = ", ".join(f"{n} {h}/{m}" for n, (h, m) in hits.items())
    flat = [
        n for n in ("behaviour", "intention", "hybrid")
        if not ({"ranking", "interest"} & set(signal[n]))
    ]  # fmt: skip
    chance_note = (
        "ranking and interest stay at chance for "
        + ("every tuned surrogate" if len(flat) == 3 else ", ".join(flat))
        + " (NDCG@5 "
        + ", ".join(f"{al[n]['ranking']['NDCG@5']:.3f}" for n in al)
        + f" vs chance {al['untuned']['ranking']['chance_NDCG@5']:.3f}; interest accuracy "
        + ", ".join(f"{al[n]['interest']['accuracy']:.3f}" for n in al)
        + " vs 0.5)"
    )
    u_hits, u_n = hits["untuned"]
    better = [
        n for n in ("behaviour", "intention", "hybrid") if hits[n][0] > u_hits
    ]  # fmt: skip
    if not better:
        out.append(
            f"aligned > untuned: not shown — retrieval hits (f's top 5, trie decoding): "
            f"{hit_text}; {chance_note}."
        )
    else:
        pv = {n: _fisher_greater(hits[n][0], u_hits, hits[n][1], u_n) for n in better}
        sig = [n for n in better if pv[n] < 0.05]
        ps = ", ".join(f"{n} p = {pv[n]:.3g}" for n in better)
        verdict = (
            f"holds on retrieval for {', '.join(sig)}" if sig
            else "points that way on retrieval but is within noise"
        )  # fmt: skip
        out.append(
            f"aligned > untuned {verdict}: hits {hit_text} (one-sided Fisher exact vs "
            f"untuned: {ps}); {chance_note}."
        )
    b_hits, b_n = hits["behaviour"]
    for n in ("intention", "hybrid"):
        h, m = hits[n]
        pv = _fisher_greater(h, b_hits, m, b_n)
        if h > b_hits and pv < 0.05:
            verdict = "holds on retrieval"
        elif h > b_hits:
            verdict = "points that way on retrieval but is within noise"
        else:
            verdict = "does not hold"
        out.append(
            f"{n} > behaviour {verdict}: {h}/{m} vs {b_hits}/{b_n} retrieval hits "
            f"(one-sided Fisher exact p = {pv:.3g}); the other metrics cannot separate them."
        )
    r0, r1 = kn["rec-only"], kn["rec+aux"]
    h0, h1 = _hits(r0["Recall@10"], r0["n"]), _hits(r1["Recall@10"], r1["n"])
    if h0 == 0 and h1 == 0:
        out.append(
            "auxiliary tasks > rec tasks only: not testable here — neither surrogate places a "
            f"single test item in its top 10 (n = {r0['n']}; SASRec and popularity do, see "
            "above)."
        )
    else:
        pv = _fisher_greater(h1, h0, r1["n"], r0["n"])
        verdict = (
            "holds" if h1 > h0 and pv < 0.05
            else "points that way but is within noise" if h1 > h0
            else "does not hold"
        )  # fmt: skip
        out.append(
            f"auxiliary tasks > rec tasks only {verdict}: {h1}/{r1['n']} vs {h0}/{r0['n']} test "
            f"items in the top 10 (NDCG@10 {r1['NDCG@10']:.3f} vs {r0['NDCG@10']:.3f}; "
            f"one-sided Fisher exact p = {pv:.3g}); both far below SASRec on the same users."
        )
    return out


def rerender() -> None:
    """Rewrite the docs section from the stored JSON, under the command that produced it."""
    from _report import RESULTS

    data = json.loads((RESULTS / "align.json").read_text())
    payload = {k: v for k, v in data.items() if k not in ("benchmark", "command", "machine")}
    sys.argv = data["command"].split()[1:]
    write_result("align", payload, markdown(payload))


if __name__ == "__main__":
    main()
