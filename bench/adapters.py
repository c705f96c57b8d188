"""Outside recommenders explained by whyrec, on MovieLens-100k: one row per adapter.

For each adapter the model is trained with its own library (or, for ``callable`` and
``torchscript``, by a few lines of the team's own code here), wrapped, saved and loaded
back as a whyrec model directory, then:

* accuracy: full-ranking NDCG@10 / HR@10 on the test split (all items, seen excluded);
* evidence cost: median milliseconds of ``model.attribution(item, user)`` (every history
  item of the window removed once) per explained item, next to whyrec's own SASRec;
* the explanation harness of ``whyrec evaluate-explanations`` on ``--users`` users' top
  item: necessity win rate, invented titles and unsupported genre claims of the reasons
  whyrec shows — the template (no LLM) and, with ``--llm``, the reason written by the
  configured LLM (default: the packaged SmolLM2-135M-Instruct) and verified;
* adapter-specific figures (implicit ALS: agreement with ``ALS.explain``).

Usage:
    .venv/bin/python bench/adapters.py [--adapters callable,torchscript,...] [--users 24]
        [--llm] [--work /tmp/whyrec-bench-adapters]
Builders for the library adapters live in bench/adapters_implicit.py and
bench/adapters_lenskit.py; an adapter whose library is not installed is reported as such.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import command_line, write_result

ALL = [
    "callable",
    "torchscript",
    "implicit-als",
    "implicit-bpr",
    "lenskit-itemknn",
    "lenskit-als",
]


# ---------------------------------------------------------------- team models
def follow_scores_factory(dataset: Any) -> Any:
    """The team's own function: items that followed the history's items within three
    steps in the training sequences, log-counted, recent history items weighted more."""
    n = dataset.n_items
    follow = np.zeros((n, n), np.float32)
    for seq in dataset.user_sequences(("train",)):
        for gap in (1, 2, 3):
            np.add.at(follow, (seq[:-gap], seq[gap:]), 1.0 / gap)
    weights = np.log1p(follow)

    def scores(histories: list[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(histories), n), np.float32)
        for r, h in enumerate(histories):
            h = np.asarray(h)[-50:]
            recency = 0.5 + np.arange(1, len(h) + 1, dtype=np.float32) / len(h)
            out[r] = recency @ weights[h]
        return out

    return scores


def build_callable(dataset: Any, work: Path) -> Any:
    from whyrec.models import OutsideModel
    from whyrec.models.adapters.plain import CallableScorer

    return OutsideModel.wrap(CallableScorer(follow_scores_factory(dataset)), dataset)


def build_torchscript(dataset: Any, work: Path) -> Any:
    """A small PyTorch model trained here (mean of recent item vectors → softmax over
    items, next-item cross-entropy on the train split), scripted and saved as a file."""
    import torch

    from whyrec.models import OutsideModel
    from whyrec.models.adapters.plain import TorchScriptScorer

    path = work / "team-model.pt"
    if not path.is_file():
        torch.manual_seed(0)
        module = torch.jit.script(MeanPool(dataset.n_items, 64))
        seqs = [s for s in dataset.user_sequences(("train",)) if len(s) > 1]
        pairs = [(s[max(0, t - 50) : t], s[t]) for s in seqs for t in range(1, len(s))]
        opt = torch.optim.Adam(module.parameters(), lr=3e-3)
        rng = np.random.default_rng(0)
        for _epoch in range(3):
            order = rng.permutation(len(pairs))
            for start in range(0, len(order), 512):
                batch = [pairs[i] for i in order[start : start + 512]]
                width = max(len(h) for h, _ in batch)
                items = torch.full((len(batch), width), -1, dtype=torch.int64)
                for r, (h, _) in enumerate(batch):
                    items[r, : len(h)] = torch.from_numpy(np.asarray(h, dtype=np.int64))
                lengths = torch.tensor([len(h) for h, _ in batch])
                target = torch.tensor([int(t) for _, t in batch])
                loss = torch.nn.functional.cross_entropy(module(items, lengths), target)
                opt.zero_grad()
                loss.backward()
                opt.step()
        module.eval()
        module.save(str(path))
    return OutsideModel.wrap(TorchScriptScorer(path), dataset)


def _mean_pool_class() -> type:
    import torch

    class _MeanPool(torch.nn.Module):
        def __init__(self, n_items: int, dim: int) -> None:
            super().__init__()
            self.items = torch.nn.Embedding(n_items, dim)
            self.out = torch.nn.Linear(dim, n_items)

        def forward(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            mask = (items >= 0).to(torch.float32).unsqueeze(-1)
            vec = (self.items(items.clamp(min=0)) * mask).sum(1)
            vec = vec / lengths.clamp(min=1).unsqueeze(-1).to(torch.float32)
            return self.out(torch.tanh(vec))

    return _MeanPool


def MeanPool(n_items: int, dim: int) -> Any:
    return _mean_pool_class()(n_items, dim)


def builders() -> tuple[dict[str, Callable[..., Any]], dict[str, Callable[..., Any]]]:
    """Builders by adapter row name, and the extra-metric functions of each module."""
    found: dict[str, Callable[..., Any]] = {
        "callable": build_callable,
        "torchscript": build_torchscript,
    }
    extras: dict[str, Callable[..., Any]] = {}
    for module_name in ("adapters_implicit", "adapters_lenskit"):
        try:
            module = __import__(module_name)
        except ImportError as exc:
            print(f"[adapters] {module_name}: not available ({exc})", file=sys.stderr)
            continue
        for name, fn in getattr(module, "BUILDERS", {}).items():
            found[name] = fn
            if hasattr(module, "extra_metrics"):
                extras[name] = module.extra_metrics
    return found, extras


# ---------------------------------------------------------------------- measure
def evidence_ms(model: Any, pairs: list[tuple[int, int]]) -> float:
    """Median ms of one item's evidence (attribution over the history window)."""
    model.attribution(pairs[0][1], pairs[0][0])  # warm-up
    times = []
    for u, item in pairs:
        t0 = time.perf_counter()
        model.attribution(item, u)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def harness_rows(model: Any, dataset: Any, users: list[int], client: Any) -> dict[str, Any]:
    from whyrec.evaluate.explanations import evaluate_explanations

    systems = ["template", "lane"] if client is not None else ["template"]
    report = evaluate_explanations(
        model, client=client, dataset=dataset, user_indices=users, systems=systems,
        positions=["top"], rubric=False, pairwise=False,
    )  # fmt: skip
    out: dict[str, Any] = {}
    for system in systems:
        m = {r["metric"]: _Row(r) for r in report.rows if r["system"] == system}
        key = "llm" if system == "lane" else "template"
        out[key] = {
            "n": m["necessity_win"].n,
            "necessity": _round(m["necessity_win"].mean),
            "invented_titles": _round(m["invented_titles"].mean * m["invented_titles"].n),
            "unsupported_genres": _round(m["unsupported_genres"].mean * m["unsupported_genres"].n),
            "history_recall3": _round(m["history_recall3"].mean),
            "llm_written": _round(m["llm_written"].mean),
        }
    return out


class _Row:
    def __init__(self, row: dict[str, Any]) -> None:
        self.mean = row["mean"] if row["mean"] is not None else 0.0
        self.n = row["n"]


def _round(x: Any, nd: int = 3) -> Any:
    return None if x is None else round(float(x), nd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--adapters", default=",".join(ALL))
    ap.add_argument("--users", type=int, default=24)
    ap.add_argument("--timing-items", type=int, default=30)
    ap.add_argument("--llm", action="store_true", help="Also the LLM-written reasons.")
    ap.add_argument("--work", type=Path, default=Path("/tmp/whyrec-bench-adapters"))
    ap.add_argument("--sasrec-epochs", type=int, default=30)
    args = ap.parse_args()

    from whyrec.data import load_dataset
    from whyrec.models import create_model, load_model

    args.work.mkdir(parents=True, exist_ok=True)
    ds = load_dataset("movielens-100k")
    rng = np.random.default_rng(0)
    users = [int(u) for u in rng.permutation(ds.n_users)[: args.users]]
    timing_users = [int(u) for u in rng.permutation(ds.n_users)[: args.timing_items]]
    client = None
    if args.llm:
        from whyrec.llm import LLMClient

        client = LLMClient.from_settings(None)
    found, extras = builders()
    rows: list[dict[str, Any]] = []

    # whyrec's own SASRec, for the evidence cost next to the adapters
    sas_dir = args.work / "sasrec"
    if not (sas_dir / "manifest.json").is_file():
        create_model("sasrec", epochs=args.sasrec_epochs, seed=0).fit(ds, progress=False).save(
            sas_dir
        )
    sas = load_model(sas_dir, ds)
    sas_pairs = [(u, int(sas.recommend(u, k=1).items[0])) for u in timing_users]
    baseline = {"adapter": "whyrec-sasrec", "evidence_ms": round(evidence_ms(sas, sas_pairs), 2)}
    baseline["full_ndcg10"] = _ndcg10(sas, ds)
    print(json.dumps(baseline), flush=True)

    for name in [a.strip() for a in args.adapters.split(",") if a.strip()]:
        if name not in found:
            rows.append({"adapter": name, "status": "not installed / no builder"})
            continue
        t0 = time.perf_counter()
        run = args.work / name
        if (run / "manifest.json").is_file():
            model = load_model(run, ds)
        else:
            built = found[name](ds, args.work)
            built.save(run)
            model = load_model(run, ds)  # what every entry point reads
        build_s = time.perf_counter() - t0
        pairs = [(u, int(model.recommend(u, k=1).items[0])) for u in timing_users]
        row: dict[str, Any] = {
            "adapter": name,
            "build_s": round(build_s, 1),
            "evidence_ms": round(evidence_ms(model, pairs), 2),
        }
        row["full_ndcg10"] = _ndcg10(model, ds)
        quality = harness_rows(model, ds, users, client)
        row.update({"n": quality["template"]["n"], **quality["template"]})
        if "llm" in quality:
            row["llm"] = {**quality["llm"], "writer": str(getattr(client, "model", ""))}
        if name in extras:
            top3 = [(u, int(i)) for u in users[:100] for i in model.recommend(u, k=3).items]
            row.update(extras[name](name, model, ds, top3))
        rows.append(row)
        print(json.dumps(row), flush=True)

    payload = {
        "rows": rows,
        "whyrec_sasrec": baseline,
        "users": args.users,
        "threads": os.environ.get("WHYREC_THREADS"),
        "affinity": sorted(os.sched_getaffinity(0)),
        "command": command_line(),
    }
    write_result("adapters", payload, _markdown(payload, client))


def _ndcg10(model: Any, dataset: Any) -> float:
    from whyrec.evaluate import evaluate

    return _round(evaluate(model, dataset, protocols="full")["full"]["ndcg@10"], 4)


def _markdown(p: dict[str, Any], client: Any) -> str:
    writer = str(getattr(client, "model", "")) if client is not None else None
    lines = [
        "## Outside recommenders explained by whyrec (MovieLens-100k)",
        "",
        f"Command: `{p['command']}` (CPU affinity {p['affinity']}, WHYREC_THREADS="
        f"{p['threads']}). Each model trained with its own library, wrapped, saved and loaded "
        "back as a whyrec model directory. Evidence: median ms of `model.attribution(item, "
        "user)` (each history item of the window removed once) per explained item. Reasons: "
        f"the harness of `whyrec evaluate-explanations` on {p['users']} users' top item; "
        "*template* = whyrec's grounded reason without an LLM"
        + (f"; *LLM* = written by {writer} and verified." if writer else "."),
        "NDCG@10: full ranking over all items, seen items excluded, test split.",
        "",
        "| adapter | NDCG@10 (full) | evidence ms | necessity (template) | invented titles | "
        "unsupported genres | necessity (LLM) | LLM-written | other |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    sas = p["whyrec_sasrec"]
    lines.append(
        f"| whyrec SASRec (reference) | {sas.get('full_ndcg10')} | {sas['evidence_ms']} "
        "| | | | | | |"
    )
    for r in p["rows"]:
        if "status" in r:
            lines.append(f"| {r['adapter']} | {r['status']} | | | | | | | |")
            continue
        llm = r.get("llm", {})
        other = ", ".join(
            f"{k} {v}" for k, v in r.items() if k in ("als_explain_agreement", "als_explain_n")
        )
        lines.append(
            f"| {r['adapter']} | {r.get('full_ndcg10')} | {r['evidence_ms']} | "
            f"{r['necessity']} (N={r['n']}) | {r['invented_titles']} | "
            f"{r['unsupported_genres']} | "
            f"{llm.get('necessity', '')}"
            + (f" (N={llm['n']})" if llm else "")
            + f" | {llm.get('llm_written', '')} | {other} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
