"""``whyrec evaluate-explanations`` and ``whyrec questionnaire``: explanation quality."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

questionnaire_app = typer.Typer(
    help="Human questionnaire on LANE's seven criteria: export a blind form, score answers.",
    no_args_is_help=True,
)


class Fmt(StrEnum):
    table = "table"
    json = "json"


def register(app: typer.Typer) -> None:
    """Add ``evaluate-explanations`` and the ``questionnaire`` group to the root app."""
    app.command("evaluate-explanations")(evaluate_explanations)
    app.add_typer(questionnaire_app, name="questionnaire")


def _split(value: str, what: str, allowed: tuple[str, ...]) -> list[str]:
    from whyrec.errors import ConfigError

    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise ConfigError(f"--{what}: expected a comma-separated subset of {', '.join(allowed)}")
    return items


def evaluate_explanations(
    run: str = typer.Argument(
        ...,
        help="A model directory (LANE, any whyrec model, or a saved outside model), or an "
        "outside model's import path module:object (needs --data).",
    ),
    users: int = typer.Option(10, "--users", "-n", help="How many users to explain."),
    user: list[str] = typer.Option(
        [], "--user", "-u", help="Explain these source user ids instead (repeatable)."
    ),
    systems: str = typer.Option(
        "lane,baseline,template", help="Systems to compare: lane, baseline, template."
    ),
    positions: str = typer.Option(
        "top,low", help="Which items per user: top (rank 1) and/or low (rank --low-rank)."
    ),
    low_rank: int = typer.Option(500, help="Rank of the low-ranked item among unseen items."),
    mode: str = typer.Option(
        "auto", help="How the LLM writes LANE's reasons: cot, sentences or auto (see explain)."
    ),
    seed: int = typer.Option(0, help="Seed of the user sample."),
    judge: bool = typer.Option(True, "--judge/--no-judge", help="Run the LLM judges."),
    pairwise: bool = typer.Option(
        True, "--pairwise/--no-pairwise", help="Also run the pairwise judge (both orders)."
    ),
    llm_config: Path | None = typer.Option(
        None, "--llm-config", help="LLM config of the explanation writer."
    ),
    judge_config: Path | None = typer.Option(
        None, "--judge-config", help="LLM config of the judge (default: the writer's)."
    ),
    data: str | None = typer.Option(
        None, "--data", "-d", help="Dataset (default: the one the model was trained on)."
    ),
    references: Path | None = typer.Option(
        None, help="CSV/JSONL of user_id,item_id,reference texts for BLEU/ROUGE/BERTScore-style."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the full results as JSON."),
    questionnaire: Path | None = typer.Option(
        None, help="Also export the human questionnaire (CSV, HTML form, key) to this folder."
    ),
    fmt: Fmt = typer.Option(Fmt.table, "--format", "-f", help="table or json."),
) -> None:
    """Compare LANE, the no-alignment baseline and the template on explanation quality.

    Any model with history evidence is accepted (whyrec's own or an outside one): for a
    model without preferences, the 'lane' system is whyrec's reason from its history
    evidence and item facts.

    Faithfulness to the recommender's weights and attribution, grounding of titles and
    genres, text diversity (and overlap with references), LLM rubric and pairwise
    judges; prints mean ± std and N per metric, naming the writer and judge LLMs."""
    from rich.console import Console

    from whyrec.cli.models import open_model
    from whyrec.embed import get_encoder
    from whyrec.errors import ConfigError
    from whyrec.evaluate.explanations import (
        SYSTEMS,
        export_questionnaire,
        load_references,
    )
    from whyrec.evaluate.explanations import (
        evaluate_explanations as run_eval,
    )

    err = Console(stderr=True)
    sys_list = _split(systems, "systems", SYSTEMS)
    pos_list = _split(positions, "positions", ("top", "low"))
    model, ds = open_model(run, data, need_data=True)
    if not model.has_attribution:
        raise ConfigError(
            f"{run} holds a {model.name!r} model whose scores ignore the history: there is no "
            "item-specific evidence to explain"
        )
    needs_llm = any(s in ("lane", "baseline") for s in sys_list)
    client, judge_client = _writer_and_judge(needs_llm, judge, llm_config, judge_config)
    refs = load_references(references) if references is not None else None
    indices = [model.user_index(u) for u in user] if user else None
    writer = f"{client.backend.name} / {client.model}" if client is not None else "template only"
    judge_name = f"{judge_client.backend.name} / {judge_client.model}" if judge_client else "none"
    err.print(f"writer LLM: {writer}; judge LLM: {judge_name}")
    report = run_eval(
        model, client=client, judge_client=judge_client, dataset=ds, encoder=get_encoder(),
        users=users, user_indices=indices, systems=sys_list, positions=pos_list,
        low_rank=low_rank, seed=seed, rubric=judge, pairwise=judge and pairwise, mode=mode,
        references=refs, progress=lambda m: err.print(f"[dim]{m}[/]"),
    )  # fmt: skip
    report.writer = writer
    if judge_client is not None:
        report.judge = judge_name
    if out is not None:
        report.save(out)
        err.print(f"results: {out}")
    if questionnaire is not None:
        files = export_questionnaire(report.cases, questionnaire, seed=seed)
        err.print(
            f"questionnaire: {files.csv} and {files.html} ({files.tasks} tasks, "
            f"{files.responses} explanations); key (keep it from raters): {files.key}"
        )
    _show_report(report, fmt)


def _writer_and_judge(
    needs_llm: bool, judge: bool, llm_config: Path | None, judge_config: Path | None
) -> tuple[Any, Any]:
    """The LLM client that writes explanations (``None`` when no system needs one) and
    the judge's (``None`` without judges; the writer's unless ``judge_config``)."""
    from whyrec.llm import LLMClient

    client = LLMClient.from_settings(llm_config) if needs_llm else None
    judge_client = None
    if judge:
        judge_client = LLMClient.from_settings(judge_config) if judge_config else client
        if judge_client is None:
            judge_client = LLMClient.from_settings(None)
    return client, judge_client


def _show_report(report: Any, fmt: Fmt) -> None:
    """The report as JSON, or as header lines, tables and notes."""
    from rich.console import Console

    if fmt is Fmt.json:
        typer.echo(report.to_json())
        return
    console = Console(width=max(Console().width, 140))
    for line in report.header_lines():
        console.print(line)
    console.print(report.table())
    if report.pairwise:
        console.print(report.pairwise_table())
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}")


@questionnaire_app.command("export")
def questionnaire_export(
    results: Path = typer.Argument(..., help="JSON written by evaluate-explanations --out."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the CSV, HTML form and key."),
    seed: int | None = typer.Option(None, help="Seed of ids and order (default: random)."),
    scale: int = typer.Option(5, help="Ratings run from 1 to this number."),
) -> None:
    """Export a blind questionnaire (systems anonymised and shuffled) from saved results."""
    from whyrec.evaluate.explanations import ExplanationReport, export_questionnaire

    report = ExplanationReport.load(results)
    files = export_questionnaire(report.cases, out, seed=seed, scale=scale)
    typer.echo(
        f"{files.tasks} tasks, {files.responses} explanations\nform: {files.html}\n"
        f"csv: {files.csv}\nkey (do not give to raters): {files.key}"
    )


@questionnaire_app.command("score")
def questionnaire_score(
    answers: list[Path] = typer.Argument(..., help="Filled CSV files (one per rater or more)."),
    key: Path = typer.Option(..., "--key", "-k", help="key.json written with the form."),
    fmt: Fmt = typer.Option(Fmt.table, "--format", "-f", help="table or json."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Also write the result as JSON."),
) -> None:
    """Per-system mean ± std and N for each of LANE's seven criteria."""
    import json

    from rich.console import Console
    from rich.table import Table

    from whyrec.evaluate.explanations import score_questionnaire
    from whyrec.io import write_json

    result = score_questionnaire(answers, key)
    if out is not None:
        write_json(out, result)
    if fmt is Fmt.json:
        typer.echo(json.dumps(result, indent=2))
        return
    crits = [*result["criteria"], "overall"]
    t = Table(
        title=f"Questionnaire: {len(result['raters'])} rater(s), "
        f"{result['responses_rated']} rated explanations, scale 1-{result['scale']}"
    )
    t.add_column("system")
    for c in crits:
        t.add_column(c, justify="right")
    for system, row in result["systems"].items():
        cells = []
        for c in crits:
            v = row[c]
            cells.append(
                "—" if v["mean"] is None else f"{v['mean']:.2f} ± {v['std']:.2f} ({v['n']})"
            )
        t.add_row(system, *cells)
    Console(width=max(Console().width, 140)).print(t)
