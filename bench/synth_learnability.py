"""Is the synthetic data learnable? SASRec (default settings, epochs capped) against
popularity on full-ranking NDCG@10 over every test user of a synthetic dataset.

Steps: ``whyrec.data.synth.synthesize`` → ``prepare_dataset`` (leave-one-out) →
popularity and SASRec fitted → full-ranking evaluation of the test split. Prints one
JSON object (and writes it to --json when given) with the sizes, the settings SASRec
actually used, seconds per stage and both models' metrics.

Usage: .venv/bin/python bench/synth_learnability.py [--users 20000 --items 5000
       --interactions 1000000 --epochs 3 --seed 0 --json bench/results/synth_learnability.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=3, help="SASRec epoch cap")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--workdir", type=Path, default=None, help="kept when given")
    args = parser.parse_args()

    from whyrec.data import prepare_dataset
    from whyrec.data.synth import load_synthetic, synthesize
    from whyrec.evaluate.ranking import evaluate
    from whyrec.models import create_model
    from whyrec.models.training import available_cores

    work = args.workdir or Path(tempfile.mkdtemp(prefix="synth-learn-"))
    times: dict[str, float] = {}
    try:
        t = time.perf_counter()
        result = synthesize(
            args.users, args.items, args.interactions, seed=args.seed, out=work / "synth"
        )
        times["synthesize_s"] = time.perf_counter() - t
        t = time.perf_counter()
        ds = prepare_dataset(load_synthetic(result.directory), out=work / "ds", name="synthetic")
        times["prepare_s"] = time.perf_counter() - t
        metrics = {}
        models = {
            "popularity": create_model("popularity"),
            "sasrec": create_model("sasrec", epochs=args.epochs, seed=args.seed),
        }
        training = {}
        for name, model in models.items():
            t = time.perf_counter()
            model.fit(ds, progress=False)
            times[f"{name}_fit_s"] = time.perf_counter() - t
            t = time.perf_counter()
            report = evaluate(model, ds, protocols="full")
            times[f"{name}_eval_s"] = time.perf_counter() - t
            metrics[name] = report.results[0].metrics
            training[name] = {
                k: v for k, v in getattr(model, "training", {}).items() if not isinstance(v, list)
            }
        pop, sas = metrics["popularity"]["NDCG@10"], metrics["sasrec"]["NDCG@10"]
        out = {
            "sizes": {"users": args.users, "items": args.items, "interactions": args.interactions},
            "seed": args.seed,
            "epoch_cap": args.epochs,
            "threads": available_cores(),
            "sasrec_config": models["sasrec"].config.to_dict(),
            "sasrec_training": training["sasrec"],
            "seconds": {k: round(v, 1) for k, v in times.items()},
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "ndcg10": {"popularity": pop, "sasrec": sas, "ratio": sas / pop},
            "metrics": metrics,
        }
        text = json.dumps(out, indent=2, default=str)
        print(text)
        if args.json:
            args.json.write_text(text + "\n", encoding="utf-8")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
