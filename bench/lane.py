"""LANE vs its backbones on MovieLens-100k, with controls and slices (issue 19).

Preferences are leak-free (``whyrec.models.lane.preference_cut_points``): each user's are
written from their training history before a cut ``--holdout`` interactions from its end,
and LANE's training positions see them only for targets after the cut. The LLM (default:
the packaged SmolLM2-135M-Instruct) writes them for every user, or for a seeded sample
(``--llm-users``); the others get grounded fallback preferences.

Systems, each trained with ``--seeds`` seeds (same epochs cap and early stopping):

* ``sasrec`` (ID item table), ``sasrec-text`` (title item table): the backbones;
* ``sasrec-text-facts``: SASRec-text whose item text is the title plus the genres (the
  item side sees the facts tastes name);
* ``lane``: LANE with the title table and the default taste channel (``additive``: each
  taste raises the items that have the facts it names); ``lane-id``: with an ID table;
* ``lane-attention``: LANE's own alignment block (gated attention over the tastes);
* ``lane-ungated``: the original, always-on attention block (``pref_gate=False``);
* ``lane-shuffled``: LANE given another user's preferences (a seeded permutation of users,
  a different one per seed) — tells whether the preferences carry anything about the user;
* ``lane-grounded``: LANE on grounded (distinctive) preferences only (no LLM words).

For seed 0 of every LANE system the taste checks of
:mod:`whyrec.evaluate.explanations.tastes` run on ``--taste-users`` users' top 5: sign
sanity (removing a taste that names one of the item's facts should not raise it),
materiality (a cited taste's drop against the top history item's) and the share of users
whose top 10 changes without their tastes.

Every model is evaluated on the test targets of all 943 users under full ranking and
sampled 1 + 100, on the whole history and on slices: the visible history cut to its last
3, 5 and 10 items (same targets; seen items still excluded), and the users whose test
item is rare in training (fewer than ``--rare`` training interactions). Paired per user:
per-user NDCG@10 averaged over seeds, differences with a seeded bootstrap 95% interval.

Usage: .venv/bin/python bench/lane.py [--llm-users N] [--seeds 3] [--epochs 200]
Trained results are kept in ``--work`` (one JSON per model and seed), so an interrupted
run resumes where it stopped; ``--fresh`` starts over.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import write_result

SYSTEMS = (
    "sasrec", "sasrec-text", "sasrec-text-facts", "lane-id", "lane", "lane-attention",
    "lane-shuffled", "lane-grounded", "lane-ungated",
)  # fmt: skip
DEFAULT_SYSTEMS = tuple(s for s in SYSTEMS if s != "lane-id")
LANE_SYSTEMS = tuple(s for s in SYSTEMS if s.startswith("lane"))
SLICES = ("all", "last-3", "last-5", "last-10", "rare")


class LastK:
    """Scores from only the last ``k`` history items (the ranking still excludes every
    item the user has seen)."""

    def __init__(self, model: Any, k: int) -> None:
        self.model, self.k = model, k
        self.name = f"{model.name} (last {k})"

    def check_dataset(self, dataset: Any) -> None:
        self.model.check_dataset(dataset)

    def score_batch(self, histories: Any, users: Any = None) -> np.ndarray:
        return self.model.score_batch([np.asarray(h)[-self.k :] for h in histories], users)


def ndcg_hr(ranks: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Per-user NDCG@k and HR@k from 0-based ranks."""
    from whyrec.metrics import ndcg_gains

    return ndcg_gains(ranks, k), (ranks < k).astype(float)


def bootstrap_ci(diff: np.ndarray, seed: int = 0, n: int = 2000) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = rng.choice(diff, size=(n, len(diff)), replace=True).mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--llm-users", type=int, default=None, help="default: all users")
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--holdout", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument(
        "--train-seeds", default=None, help="train only these seeds, in this order (e.g. 2,1)"
    )
    ap.add_argument("--rare", type=int, default=50)
    ap.add_argument("--max-reasks", type=int, default=1)
    ap.add_argument("--mode", default="auto", choices=["auto", "json", "aspects"])
    ap.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS))
    ap.add_argument("--taste-users", type=int, default=100)
    ap.add_argument("--work", type=Path, default=Path("/tmp/whyrec-bench-lane"))
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--no-write", action="store_true", help="print, do not write the docs")
    args = ap.parse_args()

    from whyrec.data import load_dataset
    from whyrec.embed import get_encoder
    from whyrec.evaluate import evaluate
    from whyrec.evaluate.explanations.tastes import model_taste_checks
    from whyrec.explain.explainer import ExplanationPipeline
    from whyrec.explain.pipeline import PreferenceSet, extract_preferences, train_lane
    from whyrec.llm import LLMClient
    from whyrec.models import create_model

    systems = [s for s in args.systems.split(",") if s]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        ap.error(f"unknown systems {sorted(unknown)}; expected some of {SYSTEMS}")
    args.work.mkdir(parents=True, exist_ok=True)
    if args.fresh:
        for f in args.work.glob("*.json"):
            f.unlink()

    ds = load_dataset("movielens-100k")
    encoder = get_encoder()
    client = LLMClient.from_settings(max_reasks=args.max_reasks)
    # the LLM's preferences (several processes may share the work: one without any LANE
    # system that reads them skips the LLM; the store makes a later run reuse them)
    need_llm = bool((set(LANE_SYSTEMS) - {"lane-grounded"}) & set(systems))
    t0 = time.perf_counter()
    pset = extract_preferences(
        ds, client=client, encoder=encoder, window=args.window, llm_users=args.llm_users,
        progress=True, mode=args.mode, holdout=args.holdout, grounded_only=not need_llm,
    )  # fmt: skip
    extraction_s = time.perf_counter() - t0
    psum = pset.summary()
    print(psum, flush=True)
    timing = args.work / "extraction.json"
    if need_llm and pset.report.asked:  # the time of the run that asked the LLM
        timing.write_text(json.dumps({"seconds": extraction_s, "asked": pset.report.asked}))
    if timing.is_file():
        extraction_s = json.loads(timing.read_text())["seconds"]
    gset = extract_preferences(
        ds, client=client, encoder=encoder, window=args.window, progress=False,
        holdout=args.holdout, grounded_only=True,
    )  # fmt: skip

    genres = ds.items["genres"].fillna("").astype(str).tolist()
    users, _, targets = ds.histories_for("test")
    tr = ds.interactions[ds.interactions["split"] == "train"]
    pop = np.bincount(tr["item_idx"].to_numpy(), minlength=ds.n_items)
    rare = pop[targets] < args.rare

    def shuffled(seed: int) -> PreferenceSet:
        perm = np.random.default_rng([seed, 19]).permutation(ds.n_users)
        for i in np.flatnonzero(perm == np.arange(ds.n_users)):  # nobody keeps their own
            j = (i + 1) % ds.n_users
            perm[i], perm[j] = perm[j], perm[i]
        prefs = {u: pset.prefs[int(perm[u])] for u in range(ds.n_users)}
        return PreferenceSet(
            prefs=prefs, vectors=pset.vectors[perm], report=pset.report,
            llm_users=pset.llm_users, model=pset.model, cuts=pset.cuts, holdout=pset.holdout,
        )  # fmt: skip

    def train(name: str, seed: int) -> Any:
        kw = {"epochs": args.epochs, "seed": seed}
        if name in ("sasrec", "sasrec-text"):
            return create_model(name, **kw).fit(ds, progress=False)
        if name == "sasrec-text-facts":
            return create_model("sasrec-text", text_fields=["genres"], **kw).fit(ds, progress=False)
        if name == "lane-attention":
            return train_lane(ds, pset, progress=False, pref_channel="attention", **kw)
        if name == "lane-id":
            return train_lane(ds, pset, progress=False, item_table="id", **kw)
        if name == "lane-shuffled":
            return train_lane(ds, shuffled(seed), progress=False, **kw)
        if name == "lane-grounded":
            return train_lane(ds, gset, progress=False, **kw)
        if name == "lane-ungated":
            return train_lane(
                ds, pset, progress=False, pref_channel="attention", pref_gate=False, **kw
            )
        return train_lane(ds, pset, progress=False, **kw)

    done: dict[tuple[str, int], dict] = {}
    order = [int(x) for x in args.train_seeds.split(",")] if args.train_seeds else range(args.seeds)
    for name in systems:
        for seed in range(args.seeds):  # what other processes trained already
            f = args.work / f"{name}-{seed}.json"
            if f.is_file():
                done[(name, seed)] = json.loads(f.read_text())
        for seed in order:
            f = args.work / f"{name}-{seed}.json"
            if f.is_file():
                done[(name, seed)] = json.loads(f.read_text())
                continue
            t = time.perf_counter()
            model = train(name, seed)
            train_s = time.perf_counter() - t
            per_slice: dict[str, dict[str, list[int]]] = {}
            for sl in ("all", "last-3", "last-5", "last-10"):
                scorer = model if sl == "all" else LastK(model, int(sl.split("-")[1]))
                rep = evaluate(scorer, ds, protocols="both", n_negatives=100, keep_ranks=True)
                per_slice[sl] = {}
                for r in rep.results:
                    if list(r.users) != users.tolist():
                        raise RuntimeError("evaluation users changed order")
                    per_slice[sl][r.protocol] = r.ranks
            tastes = None
            if name.startswith("lane") and seed == 0:
                explainer = ExplanationPipeline(model, None, item_texts=genres)
                rng = np.random.default_rng(26)
                chosen = sorted(rng.choice(ds.n_users, size=args.taste_users, replace=False))
                tastes = model_taste_checks(explainer, [int(u) for u in chosen], k=5)
            rec = {
                "model": name,
                "seed": seed,
                "tastes": tastes,
                "ranks": per_slice,
                "train_s": round(train_s, 1),
                "epochs": model.training.get("epochs_run"),
                "s_per_epoch": model.training.get("seconds_per_epoch"),
                "valid_ndcg10": model.training.get("valid_ndcg10"),
                "preference_positions": model.training.get("preference_positions"),
            }
            f.write_text(json.dumps(rec))
            done[(name, seed)] = rec
            print(name, seed, f"{train_s:.0f}s", rec["epochs"], flush=True)

    # ---------------------------------------------------------------- rows
    rows = []
    per_user: dict[tuple[str, str, str], list[np.ndarray]] = {}
    for (name, seed), rec in sorted(done.items()):
        for sl in SLICES:
            src = rec["ranks"]["all" if sl == "rare" else sl]
            for proto, ranks in src.items():
                r = np.asarray(ranks)
                if sl == "rare":
                    r = r[rare]
                nd, hr = ndcg_hr(r)
                per_user.setdefault((name, proto, sl), []).append(nd)
                rows.append(
                    {"model": name, "protocol": proto, "slice": sl, "seed": seed,
                     "users": int(len(r)), "NDCG@10": round(float(nd.mean()), 4),
                     "HR@10": round(float(hr.mean()), 4), "epochs": rec["epochs"],
                     "train_s": rec["train_s"]}
                )  # fmt: skip

    def cell(name: str, proto: str, sl: str, metric: str = "NDCG@10") -> tuple[float, float]:
        key = (name, proto, sl)
        v = [r[metric] for r in rows if (r["model"], r["protocol"], r["slice"]) == key]
        if not v:
            return float("nan"), float("nan")
        return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)

    protos = sorted({r["protocol"] for r in rows})
    full = next(p for p in protos if p.startswith("full"))
    present = [s for s in SYSTEMS if any(r["model"] == s for r in rows)]
    gains, paired = [], []
    for sl in SLICES:
        base = [b for b in ("sasrec", "sasrec-text") if b in present]
        for proto in protos:
            if "lane" not in present or not base:
                continue
            best = max(base, key=lambda b: cell(b, proto, sl)[0])
            lane_m, best_m = cell("lane", proto, sl)[0], cell(best, proto, sl)[0]
            gains.append(
                {"slice": sl, "protocol": proto, "best_backbone": best,
                 "lane": round(lane_m, 4), "backbone": round(best_m, 4),
                 "relative_gain": round(lane_m / best_m - 1, 4) if best_m else None}
            )  # fmt: skip
        if "lane" in present:
            others = [s for s in SYSTEMS if s != "lane"]
            for other in [b for b in others if b in present]:
                a = np.mean(per_user[("lane", full, sl)], axis=0)
                b = np.mean(per_user[(other, full, sl)], axis=0)
                lo, hi = bootstrap_ci(a - b)
                paired.append(
                    {"slice": sl, "vs": other, "mean_diff": round(float((a - b).mean()), 4),
                     "ci95": [round(lo, 4), round(hi, 4)], "users": int(len(a))}
                )  # fmt: skip

    # --------------------------------------------------------------- report
    def fmt(name: str, proto: str, sl: str) -> str:
        m, s = cell(name, proto, sl)
        return f"{m:.4f} ± {s:.4f}"

    table = [
        "| model | protocol | " + " | ".join(SLICES) + " |",
        "|---|---|" + "---|" * len(SLICES),
    ]
    for proto in protos:
        for name in present:
            label = "full" if proto.startswith("full") else "sampled 1+100"
            table.append(
                f"| {name} | {label} | " + " | ".join(fmt(name, proto, sl) for sl in SLICES) + " |"
            )
    gain_lines = [
        "| slice | protocol | LANE | better backbone | relative gain |",
        "|---|---|---|---|---|",
        *(
            f"| {g['slice']} | {'full' if g['protocol'].startswith('full') else 'sampled'} | "
            f"{g['lane']:.4f} | {g['best_backbone']} {g['backbone']:.4f} | "
            + (f"{g['relative_gain']:+.1%} |" if g["relative_gain"] is not None else "– |")
            for g in gains
        ),
    ]
    paired_lines = [
        "| slice | LANE minus | mean per-user ΔNDCG@10 | 95% bootstrap interval | users |",
        "|---|---|---|---|---|",
        *(
            f"| {p['slice']} | {p['vs']} | {p['mean_diff']:+.4f} | "
            f"[{p['ci95'][0]:+.4f}, {p['ci95'][1]:+.4f}] | {p['users']} |"
            for p in paired
        ),
    ]
    srcs = [pset.prefs[u].source for u in pset.llm_users]
    llm_sent = [pset.prefs[u].llm_count for u in pset.llm_users]
    epochs = {
        name: [done[(name, s)]["epochs"] for s in range(args.seeds) if (name, s) in done]
        for name in present
    }
    lane_pos = next((done[k]["preference_positions"] for k in sorted(done) if k[0] == "lane"), None)
    lines = [
        "## LANE: controls, slices and taste checks on MovieLens-100k (issues 19, 26)",
        "",
        f"Leak-free preferences: each user's are written from their training history up to "
        f"{args.holdout} interactions before its end (the last {args.window} titles before "
        f"that cut); LANE's training positions see them only for targets after the cut "
        f"({lane_pos} training positions), validation and test targets always. "
        f"Writer: {client.backend.name} model `{client.model}`, prompting mode `{pset.mode}` "
        f"({psum['prompt_version']}), for {len(pset.llm_users)} of {ds.n_users} users "
        f"(seeded sample; the others get grounded fallback preferences). Of them "
        f"{srcs.count('llm')} got five LLM sentences, {srcs.count('partial')} partial, "
        f"{srcs.count('fallback')} none; "
        f"{1 - sum(llm_sent) / max(5 * len(srcs), 1):.1%} of their sentences are grounded "
        f"fallback. The LLM wrote {psum.get('distinct_llm_sentences')} distinct sentences "
        f"over all users; {psum.get('boilerplate_replaced')} were replaced by the "
        "extraction-time checks (naming nothing checkable in the history, or one of a "
        "paraphrase cluster written for 3+ users; breakdown below), so "
        f"{psum.get('llm_sentences_kept_share')} of its usable sentences survive. "
        + (
            f"Extraction: {extraction_s:.0f} s for the users asked (one llama.cpp thread, "
            "pinned to one core, while the other core trained models)."
            if timing.is_file()
            else "Extraction: every reply came from the reply cache (asked by an earlier "
            "run of the same extraction)."
        ),
        "",
        f"{args.seeds} training seeds per system (cap {args.epochs} epochs, early stopping on "
        "validation NDCG@10 with patience 10; epochs run: "
        + "; ".join(f"{k} {v}" for k, v in epochs.items())
        + "). Test targets of all "
        f"{len(users)} users. Cells: NDCG@10, mean ± sample std over seeds. Slices: "
        "`last-k` = the model sees only the last k history items (LANE keeps its "
        "preferences, written from the longer history before the cut); `rare` = the "
        f"{int(rare.sum())} users whose test item has fewer than {args.rare} training "
        "interactions.",
        "",
        "Validation NDCG@10 (full ranking; what early stopping and the choice of LANE's "
        "taste channel use — never test; systems with fewer seeds show their mean over the "
        "seeds run, listed above): "
        + "; ".join(
            f"{name} {statistics.mean(done[(name, s)]['valid_ndcg10'] for s in seeds):.4f}"
            for name in present
            if (seeds := [s for s in range(args.seeds) if (name, s) in done])
        )
        + ".",
        "",
        *table,
        "",
        "LANE's relative gain over the better of SASRec-ID / SASRec-text (mean over seeds; "
        "goal ≥ +10% on short-history slices, full ranking):",
        "",
        *gain_lines,
        "",
        "Paired per user, full ranking (per-user NDCG@10 averaged over seeds; 2,000 "
        "bootstrap resamples of users, seed 0):",
        "",
        *paired_lines,
    ]
    taste_rows = [
        (name, done[(name, 0)]["tastes"])
        for name in present
        if (name, 0) in done and done[(name, 0)].get("tastes")
    ]
    if taste_rows:

        def _v(x: Any) -> str:
            return "–" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))

        lines += [
            "",
            f"Do the tastes mean what they say? Seed 0 of each LANE system, "
            f"{args.taste_users} seeded users × their top 5 items "
            "(`whyrec.evaluate.explanations.tastes.model_taste_checks`). Sign violations: "
            "(user, item, taste naming one of the item's facts) where removing the taste "
            "raises the item. Cited drop / top history drop: median over the tastes a reason "
            "would cite (named fact of the item, material). Top-10 changed: users whose top 10 "
            "changes when all their tastes are removed.",
            "",
            "| system | taste–item pairs | sign violations | cited tastes | cited drop / top "
            "history drop (median, IQR) | cited taste moves the rank | passed over as "
            "immaterial | top-10 changed without tastes |",
            "|---|---|---|---|---|---|---|---|",
            *(
                f"| {name} | {t['taste_item_pairs']} | {t['sign_violations']} "
                f"({_v(t['sign_violation_share'])}) | {t['cited_tastes']} | "
                f"{_v(t['cited_drop_share_median'])} {t['cited_drop_share_q25_q75'] or ''} | "
                f"{_v(t['cited_rank_moves_share'])} | {t['immaterial_tastes_passed_over']} | "
                f"{_v(t['users_top10_changed_without_tastes'])} |"
                for name, t in taste_rows
            ),
        ]
    pers = pset.personal
    if pers:
        lines += [
            "",
            f"Specificity of the LLM's tastes (extraction-time check, `whyrec.explain.personal`): "
            f"{pers.get('llm_sentences')} sentences written; "
            f"{_share(pers.get('specific_share'))} name a genre, decade or title of the "
            f"user's own history; {pers.get('replaced_unspecific')} replaced as naming nothing "
            f"checkable, {pers.get('replaced_boilerplate')} replaced as members of "
            f"{pers.get('paraphrase_clusters')} cross-user paraphrase clusters (3+ users); "
            f"{pers.get('llm_sentences_kept')} kept, all specific and none from a cluster.",
        ]
    if args.no_write:
        print("\n".join(lines))
        return
    write_result(
        "lane",
        {"preferences": psum, "personal": pset.personal,
         "tastes": {name: t for name, t in taste_rows},
         "extraction_s": extraction_s, "rows": rows, "gains": gains,
         "paired": paired, "epochs": epochs, "rare_users": int(rare.sum()),
         "args": {k: str(v) for k, v in vars(args).items()},
         "threads": {"llm": client.settings.n_threads}},
        "\n".join(lines),
    )  # fmt: skip


def _share(x: Any) -> str:
    return "–" if x is None else f"{x:.1%}"


if __name__ == "__main__":
    main()
