"""Loss at scale: gBCE with k negatives against the full softmax (CE).

Two parts, both written to docs/benchmarks.md ("Loss at scale") and
bench/results/loss_scale.json:

1. Accuracy on MovieLens-100k (leave-one-out, the recommenders benchmark's split):
   SASRec-ID trained with ``ce`` and with ``gbce`` drawing 256 negatives per batch, per
   training window (the default from 5,000 items on) or per position (gSASRec's draw);
   full ranking and sampled-100, one seed, epochs capped
   (``--epochs``). Each run in its own child process (its own peak RSS).
2. Cost of one loss step (forward + backward) alone, at the shape of a dense batch
   (128 windows x 200 positions, d = 64) and growing catalogues — what the loss adds
   per batch whatever the backbone costs.

Usage: .venv/bin/python bench/loss_scale.py [--epochs 40] [--threads 1] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# label -> (config overrides, what the row shows)
VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    "ce": ({"loss": "ce"}, "full softmax over every item"),
    "gbce-shared": (
        {"loss": "gbce", "gbce_negatives": "shared"},
        "gBCE, 256 negatives shared by the batch",
    ),
    "gbce-window": (
        {"loss": "gbce", "gbce_negatives": "window"},
        "gBCE, 256 negatives per training window (default from 5,000 items)",
    ),
    "gbce-position": (
        {"loss": "gbce", "gbce_negatives": "position"},
        "gBCE, 256 negatives per position (gSASRec's draw)",
    ),
}
RESULTS_FILE = Path(__file__).resolve().parent / "results" / "loss_scale.json"
COST_ITEMS = (1_682, 10_000, 27_278)  # ML-100k, the first probe, ML-20M
COST_SHAPE = (128, 200, 64)  # windows, positions, d: a dense-profile batch


def child(label: str, result: Path, epochs: int, seed: int) -> None:
    """Train and evaluate SASRec with one loss; write its figures to ``result``."""
    from whyrec.data import load_dataset
    from whyrec.evaluate import evaluate
    from whyrec.models import create_model

    overrides, _ = VARIANTS[label]
    ds = load_dataset("movielens-100k")
    model = create_model("sasrec", epochs=epochs, seed=seed, **overrides)
    t0 = time.perf_counter()
    model.fit(ds, progress=False)
    fit_s = time.perf_counter() - t0
    report = evaluate(model, ds)
    out = {
        "label": label,
        "what": VARIANTS[label][1],
        "config": model.config.to_dict(),
        "training": {k: v for k, v in model.training.items() if k != "epochs_log"},
        "valid_curve": [e.get("valid_ndcg10") for e in model.training.get("epochs_log", [])],
        "fit_seconds": round(fit_s, 1),
        "metrics": {r.protocol: r.metrics for r in report.results},
        "labels": {r.protocol: r.label for r in report.results},
        "n_users": report.results[0].n_users,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    result.write_text(json.dumps(out, indent=2))


def loss_cost(repeats: int = 3) -> list[dict[str, Any]]:
    """Seconds of one forward + backward of each loss alone (best of ``repeats``)."""
    import torch

    from whyrec.models.losses import gbce_window_loss, next_item_loss
    from whyrec.models.training import configure_threads

    configure_threads()
    b, length, d = COST_SHAPE
    n = b * length
    rows = []
    for n_items in COST_ITEMS:
        gen = torch.Generator().manual_seed(0)
        table = torch.randn(n_items + 1, d, requires_grad=True)
        query = torch.randn(n, d, requires_grad=True)
        targets = torch.randint(1, n_items + 1, (n,), generator=gen)
        row: dict[str, Any] = {"n_items": n_items, "positions": n}
        for label, kind, shared in (
            ("ce", "ce", False),
            ("gbce-position", "gbce", False),
            ("gbce-shared", "gbce", True),
            ("gbce-window", "gbce", None),
        ):
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                if shared is None:
                    loss = gbce_window_loss(
                        query.view(b, length, d),
                        targets.view(b, length),
                        table,
                        gen,
                        n_negatives=256,
                    )
                else:
                    loss = next_item_loss(
                        kind, query, targets, table, gen, n_negatives=256, shared=shared
                    )
                loss.backward()
                times.append(time.perf_counter() - t0)
                table.grad = query.grad = None
            row[label] = round(min(times), 4)
        rows.append(row)
        print(f"loss cost {n_items:>7,} items: {row}", flush=True)
    return rows


def fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.4f}"


def markdown(rows: list[dict[str, Any]], cost: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    labels = rows[0]["labels"]
    lines = [
        "## Loss at scale: gBCE vs full softmax",
        "",
        "SASRec-ID on MovieLens-100k (943 users, 1,682 items, leave-one-out; early stopping "
        f"on validation NDCG@10 with patience 10), **epochs capped at {meta['epochs']}**, "
        f"seed {meta['seed']}, one run per loss, each in its own process with "
        f"{meta['threads']} torch thread(s). 1-minute load average before/after: "
        f"{meta['load_before']:.2f} / {meta['load_after']:.2f}. Protocols:",
        "",
        *[f"- **{p}**: {lab}" for p, lab in labels.items()],
        "",
        "| loss | negatives | epochs (best) | s/epoch | peak RSS MB | full HR@10 | full NDCG@10 "
        "| full MRR | sampled HR@10 | sampled NDCG@10 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        t, m = r["training"], r["metrics"]
        full = m.get("full", {})
        samp = next((v for k, v in m.items() if k != "full"), {})
        lines.append(
            f"| {r['label']} | {VARIANTS[r['label']][1]} | {t['epochs_run']} ({t['best_epoch']}) "
            f"| {t['seconds_per_epoch']:.2f} | {r['peak_rss_mb']:.0f} | {fmt(full.get('HR@10'))} "
            f"| {fmt(full.get('NDCG@10'))} | {fmt(full.get('MRR'))} "
            f"| {fmt(samp.get('HR@10'))} | {fmt(samp.get('NDCG@10'))} |"
        )
    b, length, d = COST_SHAPE
    lines += [
        "",
        f"One loss step alone (forward + backward, best of 3, {meta['cost_threads']} "
        f"thread(s)), a dense batch of {b} windows x {length} positions "
        f"({b * length:,} positions), d = {d}, 256 negatives; seconds:",
        "",
        "| items | ce | gbce, per position | gbce, shared | gbce, per window |",
        "|---:|---:|---:|---:|---:|",
    ]
    for c in cost:
        window = f"{c['gbce-window']:.3f}" if "gbce-window" in c else "—"
        lines.append(
            f"| {c['n_items']:,} | {c['ce']:.3f} | {c['gbce-position']:.3f} "
            f"| {c['gbce-shared']:.3f} | {window} |"
        )
    lines += [
        "",
        "The sequence models choose the loss by catalogue size (docs/models.md, "
        "`whyrec.models.defaults.AUTO_GBCE_MIN_ITEMS`): CE below 5,000 items, gBCE with "
        "256 negatives per training window from there on; a `loss=` given to the model "
        "always wins, and the "
        "run's `training.json` records the loss and why (`loss_choice`).",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=40, help="epoch cap per run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per training run")
    ap.add_argument("--losses", default=",".join(VARIANTS), help="comma-separated labels")
    ap.add_argument("--no-cost", action="store_true", help="skip the per-step loss timing")
    ap.add_argument("--no-write", action="store_true", help="print, do not update docs")
    ap.add_argument(
        "--merge",
        action="store_true",
        help="keep the rows (and, with --no-cost, the cost table) of the last written run "
        "for losses not run now",
    )
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, Path(args.result), args.epochs, args.seed)
        return
    labels = [x.strip() for x in args.losses.split(",") if x.strip()]
    unknown = sorted(set(labels) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown losses {unknown}; known: {list(VARIANTS)}")
    env = dict(os.environ, WHYREC_THREADS=str(args.threads))
    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label in labels:
            result = Path(tmp) / f"{label}.json"
            cmd = [sys.executable, __file__, "--child", label, "--result", str(result)]
            cmd += ["--epochs", str(args.epochs), "--seed", str(args.seed)]
            subprocess.run(cmd, check=True, env=env)
            row = json.loads(result.read_text())
            rows.append(row)
            full = row["metrics"]["full"]
            print(
                f"{label:14s} fit {row['fit_seconds']:7.1f}s  epochs "
                f"{row['training']['epochs_run']}  full NDCG@10 {full['NDCG@10']:.4f}",
                flush=True,
            )
    cost = [] if args.no_cost else loss_cost()
    previous = RESULTS_FILE.is_file() and json.loads(RESULTS_FILE.read_text())
    if args.merge and previous:
        ran = {r["label"] for r in rows}
        rows = [r for r in previous["rows"] if r["label"] not in ran] + rows
        rows.sort(key=lambda r: list(VARIANTS).index(r["label"]))
        if args.no_cost:
            cost = previous.get("loss_cost", [])
    import torch

    meta = {
        "epochs": args.epochs,
        "seed": args.seed,
        "threads": args.threads,
        "cost_threads": torch.get_num_threads(),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }
    md = markdown(rows, cost, meta)
    print(md)
    if not args.no_write:
        sys.path.insert(0, str(Path(__file__).parent))
        from _report import write_result

        write_result("loss_scale", {"meta": meta, "rows": rows, "loss_cost": cost}, md)


if __name__ == "__main__":
    main()
