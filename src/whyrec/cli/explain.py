"""``whyrec preferences`` and ``whyrec explain``: LANE's LLM stages from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from whyrec.cli.options import HOLDOUT_HELP


def register(app: typer.Typer) -> None:
    """Add the commands to the root app."""
    app.command()(preferences)
    app.command()(explain)


def preferences(
    data: str = typer.Argument("movielens-100k", help="Dataset name or directory, or a LANE run."),
    m: int = typer.Option(5, "-m", help="Preferences per user."),
    window: int = typer.Option(200, help="Most recent training titles shown to the LLM."),
    holdout: int = typer.Option(
        10,
        min=0,
        help=HOLDOUT_HELP,
    ),
    llm_users: int | None = typer.Option(
        None, help="Ask the LLM for a seeded sample of this many users (default: all)."
    ),
    seed: int = typer.Option(0, help="Seed of the user sample."),
    store: Path | None = typer.Option(
        None, help="SQLite store (default: per dataset in the cache)."
    ),
    out: Path | None = typer.Option(None, help="Also write the preferences as JSON lines here."),
    llm_config: Path | None = typer.Option(None, "--llm-config", help="LLM config file."),
    show: int = typer.Option(3, help="Print this many users' preferences."),
    mode: str = typer.Option(
        "auto",
        help="Prompting: 'json' (one schema-constrained call per user), 'aspects' (m short "
        "calls, one aspect each; suits small local models), 'auto' (aspects for a local "
        "model under 2 GB, else json).",
    ),
) -> None:
    """Extract m preferences per user with the LLM (grounded fallback when invalid).

    Re-runs only ask about users whose history, model or prompt changed."""
    from rich.console import Console

    from whyrec.data import load_dataset
    from whyrec.embed import get_encoder
    from whyrec.explain.pipeline import extract_preferences
    from whyrec.llm import LLMClient
    from whyrec.safety import terminal_text as t

    console = Console(stderr=True)
    run = Path(data)
    if (run / "manifest.json").is_file() and (run / "preferences.json").is_file():
        from whyrec.models import load_model

        model = load_model(run)
        for u in range(min(show, model.n_users)):
            console.print(f"user {t(model.user_ids[u], 80)}: {t(model.preference_texts[u])}")
        return
    ds = load_dataset(data)
    client = LLMClient.from_settings(llm_config)
    pset = extract_preferences(
        ds, client=client, encoder=get_encoder(), m=m, window=window, llm_users=llm_users,
        seed=seed, store=store, mode=mode, holdout=holdout or None,
    )  # fmt: skip
    summary = pset.summary()
    ids = ds.users["user_id"].astype(str).tolist()
    if out is not None:  # written first: the minutes of LLM work never depend on printing
        from whyrec.io import atomic_write

        lines = [
            json.dumps({"user_id": ids[u], **pset.prefs[u].__dict__}, ensure_ascii=False)
            for u in sorted(pset.prefs)
        ]
        atomic_write(out, lambda p: p.write_text("\n".join(lines) + "\n", encoding="utf-8"))
    console.print_json(json.dumps(summary))
    # user ids, preference sentences (LLM output or titles) are untrusted: printed literally
    for u in pset.llm_users[:show]:
        p = pset.prefs[u]
        console.print(f"[bold]user {t(ids[u], 80)}[/] ({t(p.source)}):")
        for s in p.preferences:
            console.print(f"  - {t(s)}")
    if out is not None:
        console.print(f"written: {t(out)}")
    if pset.llm_failed:  # every asked user hit an outage: the fallback is all there is
        typer.secho(
            f"error: the LLM stage failed for all {pset.report.asked} user(s) asked "
            f"(first error: {pset.report.first_outage}); their grounded fallback preferences "
            "were stored and will be asked again on the next run",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(1)


def explain(
    run: str = typer.Argument(
        ...,
        help="A model directory (whyrec train, LANE or any other; or an outside model's "
        "saved directory), or an outside model's Python import path module:object "
        "(docs/outside-models.md; needs --data).",
    ),
    user: str = typer.Option(..., "--user", "-u", help="Source user id."),
    k: int = typer.Option(3, "-k", help="How many recommendations to explain."),
    item: str | None = typer.Option(None, help="Explain this item id instead of the top-k."),
    fmt: str = typer.Option("text", "--format", help="text or json."),
    no_llm: bool = typer.Option(False, "--no-llm", help="Template reasons only (no LLM)."),
    llm_config: Path | None = typer.Option(None, "--llm-config", help="LLM config file."),
    data: str | None = typer.Option(
        None, "--data", "-d", help="Dataset the model was trained on (name or directory)."
    ),
    mode: str = typer.Option(
        "auto",
        help="How the LLM writes: 'cot' (LANE's four steps as one JSON reply), 'sentences' "
        "(one short sentence per cited piece of evidence; more LLM-written text from a tiny "
        "model, but less faithful: docs/lane.md), 'auto' (= cot).",
    ),
) -> None:
    """Recommendations with the evidence behind each item and a verified reason.

    For each item: its score and rank; how much its score falls without each preference
    (LANE) and each recent history item; the evidence the reason cites (what lowers this
    item's score most when removed); and the reason — the LLM's, with unsupported
    sentences removed, or the grounded template when none is left. LANE's own
    preference weights are shown too: they are per user, the same for every item."""
    from whyrec.cli.models import open_model
    from whyrec.errors import ConfigError
    from whyrec.explain.explainer import ExplanationPipeline

    if fmt not in ("text", "json"):
        raise ConfigError(f"--format must be text or json, got {fmt!r}")
    model, ds = open_model(run, data)
    client = None
    if not no_llm:
        from whyrec.llm import LLMClient

        client = LLMClient.from_settings(llm_config)
    if mode not in ("auto", "cot", "sentences"):
        raise ConfigError(f"--mode must be auto, cot or sentences, got {mode!r}")
    pipeline = ExplanationPipeline.from_run(model, client, mode=mode, dataset=ds)
    u = model.user_index(user)
    if item is not None:
        results = [pipeline.explain(model.item_index(item), u, use_llm=not no_llm)]
    else:
        results = pipeline.recommend_and_explain(u, k=k, use_llm=not no_llm)
    if fmt == "json":
        from whyrec.safety import terminal_json

        typer.echo(terminal_json([r.to_dict() for r in results]))
    else:
        print_explanations(results)
    if not no_llm and results and all(r.llm_outage for r in results):
        from whyrec.safety import printable_text

        typer.echo(
            "error: the LLM could not be reached for any explanation; the grounded template "
            f"reasons are shown ({printable_text('; '.join(results[0].problems), 300)})",
            err=True,
        )
        raise typer.Exit(1)


def print_explanations(results: list) -> None:
    """Human-readable output of explanations; every data string is escaped for rich."""
    from rich.console import Console

    from whyrec.explain.grounding import spoken_title
    from whyrec.safety import terminal_text as t

    console = Console()
    for r in results:
        console.rule(
            f"[bold]{t(spoken_title(r.title), 80)}[/] (rank {r.rank}, score {r.score:.3f})"
        )
        if r.item_facts:
            console.print(f"  item facts: {t(', '.join(r.item_facts), 120)}")
        cited_p = set(r.cited.get("preferences", []))
        if r.preference_effects:
            console.print("  this item's score without each preference (LANE's user-level weight):")
        for p in sorted(r.preference_effects, key=lambda p: -p["score_drop"]):
            mark = "[green]cited[/]" if p["index"] in cited_p else "     "
            console.print(
                f"  {mark} {p['score_drop']:+.3f} (rank {p['rank_without']})  "
                f"{t(p['preference'], 100)}  [dim](weight {p['weight']:.0%})[/]"
            )
        cited_h = set(r.cited.get("history", []))
        console.print("  history items whose removal lowers its score most:")
        for h in r.history_effects[:5]:
            mark = "[green]cited[/]" if h["item"] in cited_h else "     "
            name = t(spoken_title(h["title"]), 80)
            console.print(f"  {mark} {h['score_drop']:+.3f} (rank {h['rank_without']})  {name}")
        who = f", {t(r.model, 60)}" if r.model and r.reason_source != "template" else ""
        console.print(f"  [bold]reason[/] ({r.reason_source}{who}):")
        console.print(f"  {t(r.reason)}")
        if r.completed_sentences:
            console.print(
                f"  [dim]template words for cited evidence the LLM left out: "
                f"{t(' '.join(r.completed_sentences), 300)}[/]"
            )
        for s in r.removed_sentences:
            console.print(f"  [dim]removed: {t(s['sentence'], 120)} — {t(s['problem'], 120)}[/]")
        if r.reason_source == "template" and r.problems:
            console.print(f"  [dim]LLM reason not shown: {t('; '.join(r.problems), 300)}[/]")
