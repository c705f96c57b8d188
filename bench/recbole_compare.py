"""whyrec's SASRec against RecBole 1.2.1's SASRec on the same MovieLens-100k split.

Both train on one pinned CPU core with one thread, on the identical leave-one-out split
(whyrec exports its split; the exported timestamps are each interaction's position in
the user's sequence, so RecBole's ``LS`` split picks the same validation and test items),
early-stop on validation NDCG@10 and are tested under full ranking (all items, seen items
excluded). RecBole runs with its SASRec defaults (2 layers, 64-d, CE loss, batch 2048,
lr 1e-3, max length 50, stopping_step 10) and evaluates every epoch, as it does by default.

RecBole lives in its own virtualenv (it is not a whyrec dependency):

    python3 -m venv /tmp/recbole-venv
    /tmp/recbole-venv/bin/pip install torch==2.13.0 recbole==1.2.1

Steps (each prints where it wrote its result):

    .venv/bin/python bench/recbole_compare.py export /tmp/recbole-cmp
    taskset -c 0 /tmp/recbole-venv/bin/python bench/recbole_compare.py recbole /tmp/recbole-cmp
    taskset -c 0 .venv/bin/python bench/recbole_compare.py whyrec /tmp/recbole-cmp
    .venv/bin/python bench/recbole_compare.py report /tmp/recbole-cmp
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

DATASET = "ml100k-whyrec"


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def export(out: Path) -> None:
    from whyrec.data import load_dataset

    ds = load_dataset("movielens-100k")
    folder = out / DATASET
    folder.mkdir(parents=True, exist_ok=True)
    seqs = ds.user_sequences()
    users = ds.users["user_id"].astype(str).tolist()
    items = ds.items["item_id"].astype(str).tolist()
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u, seq in enumerate(seqs):
        lines += [f"{users[u]}\t{items[i]}\t{pos}" for pos, i in enumerate(seq)]
    (folder / f"{DATASET}.inter").write_text("\n".join(lines) + "\n")
    meta = {"fingerprint": ds.fingerprint(), "interactions": len(lines) - 1, "users": len(seqs)}
    (out / "export.json").write_text(json.dumps(meta, indent=2))
    print(f"wrote {folder} ({meta['interactions']} interactions)")


def run_recbole(out: Path, epochs: int) -> None:
    import torch

    torch.set_num_threads(1)
    # RecBole 1.2.1 reloads its own checkpoints (config objects inside) with torch.load;
    # torch >= 2.6 defaults to weights_only=True, which refuses them.
    _load = torch.load
    torch.load = lambda *a, **k: _load(*a, **{**k, "weights_only": False})
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    sys.argv = sys.argv[:1]  # RecBole parses the command line itself
    os.chdir(out)  # and writes log/ and log_tensorboard/ into the working directory
    config = Config(
        model="SASRec",
        dataset=DATASET,
        config_dict={
            "data_path": str(out),
            "checkpoint_dir": str(out / "recbole-saved"),
            "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
            "metrics": ["Hit", "NDCG", "MRR"],
            "topk": [5, 10, 20],
            "valid_metric": "NDCG@10",
            # RecBole's SASRec trains with CE by default, which needs no sampled negatives
            "train_neg_sample_args": None,
            "epochs": epochs,
            "device": "cpu",
            "use_gpu": False,
            "show_progress": False,
            "seed": 2020,
            "reproducibility": True,
            "worker": 0,
        },
    )
    init_seed(config["seed"], config["reproducibility"])
    t0, c0 = time.perf_counter(), _cpu_seconds()
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    model = SASRec(config, train.dataset).to(config["device"])
    trainer = Trainer(config, model)
    epoch_times: list[float] = []
    original = trainer._train_epoch

    def timed_epoch(*a: object, **k: object) -> object:
        t = time.perf_counter()
        result = original(*a, **k)
        epoch_times.append(time.perf_counter() - t)
        return result

    trainer._train_epoch = timed_epoch
    valid_scores: list[float] = []
    original_valid = trainer._valid_epoch

    log_path = out / "recbole-epochs.jsonl"
    log_path.unlink(missing_ok=True)

    def recorded_valid(*a: object, **k: object) -> object:
        score, result = original_valid(*a, **k)
        valid_scores.append(float(score))
        # the test metrics of every epoch are logged so that a run cut short still shows
        # where it stood; model selection uses validation only
        test_now = trainer.evaluate(test, load_best_model=False, show_progress=False)
        row = {
            "epoch": len(valid_scores),
            "train_epoch_s": round(epoch_times[-1], 2) if epoch_times else None,
            "cpu_s": round(_cpu_seconds() - c0, 1),
            "wall_s": round(time.perf_counter() - t0, 1),
            "valid_ndcg@10": round(float(score), 4),
            "test": {key: round(float(v), 4) for key, v in test_now.items()},
        }
        with log_path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        return score, result

    trainer._valid_epoch = recorded_valid
    best_valid, valid_result = trainer.fit(train, valid, saved=True, show_progress=False)
    fit_s, fit_cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    test_result = trainer.evaluate(test, load_best_model=True, show_progress=False)
    result = {
        "library": "RecBole 1.2.1",
        "model": "SASRec (RecBole defaults)",
        "protocol": "full",
        "epochs_run": len(epoch_times),
        "best_epoch": valid_scores.index(max(valid_scores)) + 1 if valid_scores else None,
        "train_wall_s": round(fit_s, 1),
        "train_cpu_s": round(fit_cpu, 1),
        "median_train_epoch_s": round(sorted(epoch_times)[len(epoch_times) // 2], 2),
        "valid": {k: round(float(v), 4) for k, v in valid_result.items()},
        "test": {k: round(float(v), 4) for k, v in test_result.items()},
        "users": int(dataset.user_num - 1),
        "interactions": int(dataset.inter_num),
    }
    (out / "recbole.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def run_whyrec(out: Path, seed: int) -> None:
    os.environ.setdefault("WHYREC_THREADS", "1")
    from whyrec.data import load_dataset
    from whyrec.evaluate import evaluate
    from whyrec.models import create_model

    ds = load_dataset("movielens-100k")
    meta = json.loads((out / "export.json").read_text())
    if meta["fingerprint"] != ds.fingerprint():
        sys.exit("the exported split is from another dataset version: run 'export' again")
    t0, c0 = time.perf_counter(), _cpu_seconds()
    model = create_model("sasrec", seed=seed).fit(ds, progress=False)
    fit_s, fit_cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    rep = evaluate(model, ds, protocols="full")
    full = rep.results[0]
    tr = model.training
    result = {
        "library": "whyrec",
        "model": "SASRec (whyrec defaults)",
        "protocol": full.protocol,
        "epochs_run": tr.get("epochs_run"),
        "best_epoch": tr.get("best_epoch"),
        "train_wall_s": round(fit_s, 1),
        "train_cpu_s": round(fit_cpu, 1),
        "median_train_epoch_s": tr.get("seconds_per_epoch"),
        "test": {k.lower(): round(v, 4) for k, v in full.metrics.items()},
        "users": full.n_users,
        "epochs_log": [
            {"epoch": e["epoch"], "seconds": e["seconds"], "valid_ndcg@10": e["valid_ndcg10"]}
            for e in tr.get("epochs_log", [])
        ],
    }
    (out / f"whyrec-seed{seed}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def _recbole_result(out: Path) -> dict:
    """RecBole's final result, or — for a run cut short — its best epoch so far."""
    done = out / "recbole.json"
    if done.is_file():
        res = json.loads(done.read_text())
        res["complete"] = True
        return res
    log = out / "recbole-epochs.jsonl"
    if not log.is_file():
        sys.exit(f"no RecBole result in {out}: run the 'recbole' step first")
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    best = max(rows, key=lambda r: r["valid_ndcg@10"])
    times = sorted(r["train_epoch_s"] for r in rows if r.get("train_epoch_s"))
    return {
        "library": "RecBole 1.2.1",
        "model": "SASRec (RecBole defaults)",
        "complete": False,
        "epochs_run": len(rows),
        "best_epoch": best["epoch"],
        "train_wall_s": rows[-1]["wall_s"],
        "train_cpu_s": rows[-1]["cpu_s"],
        "cpu_s_per_epoch": round(rows[-1]["cpu_s"] / len(rows), 1),
        "median_train_epoch_s": times[len(times) // 2] if times else None,
        "test": best["test"],
        "valid_ndcg@10": best["valid_ndcg@10"],
        "epochs": rows,
    }


def report(out: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _report import write_result

    rb = _recbole_result(out)
    ours = [json.loads(p.read_text()) for p in sorted(out.glob("whyrec-seed*.json"))]
    if not ours:
        sys.exit(f"no whyrec-seed*.json in {out}: run the 'whyrec' step first")

    def med(values: list[float]) -> float:
        v = sorted(values)
        return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2

    w_ndcg = med([r["test"]["ndcg@10"] for r in ours])
    w_cpu = med([r["train_cpu_s"] for r in ours])
    rb_ndcg = rb["test"]["ndcg@10"]
    # time to accuracy: whyrec's first epoch whose validation NDCG@10 reaches RecBole's
    # best validation NDCG@10, in whyrec's CPU seconds (one thread: CPU ≈ wall alone)
    rb_valid = rb.get("valid_ndcg@10") or rb.get("valid", {}).get("ndcg@10")
    reach = []
    for r in ours:
        cum = 0.0
        for e in r.get("epochs_log", []):
            cum += e["seconds"]
            if e["valid_ndcg@10"] is not None and e["valid_ndcg@10"] >= rb_valid:
                reach.append({"epoch": e["epoch"], "wall_s": round(cum, 1)})
                break
    rows = [
        (f"RecBole 1.2.1 SASRec{'' if rb['complete'] else ' (cut short)'}",
         rb["test"]["hit@10"], rb_ndcg, rb["test"]["mrr@10"], rb["epochs_run"],
         rb["best_epoch"], rb["train_cpu_s"]),
    ]  # fmt: skip
    for i, r in enumerate(ours):
        t = r["test"]
        rows.append(
            (f"whyrec SASRec (seed {i})", t.get("hr@10"), t["ndcg@10"], t.get("mrr@10"),
             r["epochs_run"], r["best_epoch"], r["train_cpu_s"])
        )  # fmt: skip
    cpu_ratio = (rb["train_cpu_s"] / rb["epochs_run"]) / med(
        [r["train_cpu_s"] / r["epochs_run"] for r in ours]
    )
    lines = [
        "## whyrec SASRec vs RecBole 1.2.1 SASRec (MovieLens-100k, leave-one-out, full ranking)",
        "",
        "Command: see the docstring of `bench/recbole_compare.py` (export → recbole → whyrec "
        "→ report). Same split (exported by whyrec; RecBole's `LS` split picks the same "
        "validation and test items), both with one thread, both early-stopping on "
        "validation NDCG@10 with patience 10; RecBole with its SASRec defaults (CE loss, "
        "batch 2048, every prefix of every sequence a training sample) and per-epoch full "
        "validation. Test metrics under full ranking over all items, seen items excluded. "
        "Times are CPU seconds of the training process, which stay comparable when the "
        "machine is shared (both ran beside other jobs on a 2-core machine).",
        "",
        "| run | HR@10 | NDCG@10 | MRR@10 | epochs | best epoch | train CPU s |",
        "|---|---|---|---|---|---|---|",
        *["| " + " | ".join("–" if v is None else str(v) for v in row) + " |" for row in rows],
        "",
        f"CPU time per epoch: RecBole / whyrec = {cpu_ratio:.0f}×. RecBole's CPU seconds "
        "include one extra test-set evaluation per epoch (logged so that a run cut short "
        "still shows where it stood), a small part of an epoch's cost.",
    ]
    if not rb["complete"]:
        lines += [
            "",
            f"RecBole's run was stopped after {rb['epochs_run']} epochs "
            f"({rb['train_cpu_s']:.0f} CPU s) without having early-stopped; the row shows its "
            f"best epoch so far (valid NDCG@10 {rb_valid:.4f}), so its final accuracy is not "
            "known from this run.",
        ]
    if reach:
        reach_s = med([x["wall_s"] for x in reach])
        lines += [
            "",
            f"Time to RecBole's best validation NDCG@10 ({rb_valid:.4f}): whyrec reaches it at "
            f"epoch {reach[0]['epoch']} after {reach_s:.0f} s of training (wall time, an "
            "upper bound on its CPU time); RecBole needed "
            f"{rb['best_epoch']} epochs ≈ "
            f"{rb['train_cpu_s'] * rb['best_epoch'] / rb['epochs_run']:.0f} CPU s — "
            f"**{rb['train_cpu_s'] * rb['best_epoch'] / rb['epochs_run'] / reach_s:.0f}× "
            "faster** to the same accuracy.",
        ]
    lines += [
        "",
        f"Final test NDCG@10: whyrec (median of {len(ours)}) {w_ndcg:.4f} vs RecBole "
        f"{rb_ndcg:.4f}; whyrec's whole training run took {w_cpu:.0f} CPU s.",
    ]
    payload = {
        "recbole": rb,
        "whyrec": ours,
        "whyrec_median": {"ndcg@10": w_ndcg, "train_cpu_s": w_cpu},
        "cpu_per_epoch_ratio": round(cpu_ratio, 1),
        "whyrec_time_to_recbole_best": reach,
    }
    write_result("recbole_compare", payload, "\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("step", choices=["export", "recbole", "whyrec", "report"])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--epochs", type=int, default=300, help="RecBole's epoch cap (default 300)")
    ap.add_argument("--seed", type=int, default=0, help="whyrec's seed")
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    if args.step == "export":
        export(args.dir)
    elif args.step == "recbole":
        run_recbole(args.dir, args.epochs)
    elif args.step == "whyrec":
        run_whyrec(args.dir, args.seed)
    else:
        report(args.dir)


if __name__ == "__main__":
    main()
