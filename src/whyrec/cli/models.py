"""``whyrec train / evaluate / recommend``: the model commands.

torch and the models are imported inside the commands so ``whyrec --help`` stays fast.
"""

from __future__ import annotations

import json
import shutil
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from whyrec.cli.options import HOLDOUT_HELP, OutputFormat

MODEL_NAMES = ["popularity", "bpr-mf", "sasrec", "sasrec-text", "gru4rec", "lane"]


class Protocol(StrEnum):
    both = "both"
    full = "full"
    sampled = "sampled"


class Split(StrEnum):
    test = "test"
    valid = "valid"


def _parse_sets(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are read as JSON when they parse (numbers, lists...)."""
    from whyrec.errors import ConfigError

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def _load_data(spec: str | None, manifest: dict[str, Any] | None = None) -> Any:
    """A dataset from ``--data`` or, failing that, from where the model was trained."""
    from whyrec.data import load_dataset
    from whyrec.errors import ConfigError

    if spec is None and manifest is not None:
        ds_info = manifest["dataset"]
        path = ds_info.get("path")
        spec = path if path and Path(path).is_dir() else ds_info.get("name")
    if not spec:
        raise ConfigError("no dataset: pass --data NAME_OR_DIR")
    return load_dataset(Path(spec) if Path(spec).is_dir() else spec)


def open_model(
    spec: str | Path, data: str | None = None, *, need_data: bool = False
) -> tuple[Any, Any]:
    """The model an entry point's ``MODEL`` argument names, and its dataset when known
    (``need_data``: always — a model directory's own dataset unless ``--data`` is given).

    ``spec`` is a model directory (whyrec's own models, and outside models whose manifest
    names their adapter) or a Python import path ``module:object`` naming an outside
    model (then ``--data``, the dataset it was trained on, is required)."""
    from whyrec.errors import ConfigError
    from whyrec.models import load_model
    from whyrec.models.outside import is_import_path

    if is_import_path(str(spec)):
        if data is None:
            raise ConfigError(
                f"{spec} is a Python import path: pass --data with the dataset the model "
                "was trained on"
            )
        ds = _load_data(data)
        return load_model(str(spec), ds), ds
    if need_data:
        from whyrec.models.base import read_manifest

        ds = _load_data(data, read_manifest(spec))
    else:
        ds = _load_data(data) if data is not None else None
    return load_model(Path(spec), ds), ds


def _print_report(report: Any, fmt: OutputFormat) -> None:
    if fmt is OutputFormat.json:
        typer.echo(report.to_json())
    else:
        _console().print(report.table())


def _console() -> Any:
    """A console at least 130 columns wide, so metric tables are never truncated."""
    from rich.console import Console

    return Console(width=max(Console().width, 130))


def register(app: typer.Typer) -> None:
    """Add ``train``, ``evaluate`` and ``recommend`` to the root command."""
    app.command()(train)
    app.command()(evaluate)
    app.command()(recommend)


def train(
    model: str = typer.Option(
        "sasrec-text", "--model", "-m", help=f"One of: {', '.join(MODEL_NAMES)}."
    ),
    data: str = typer.Option(
        "movielens-100k", "--data", "-d", help="Dataset name (movielens-100k) or dataset directory."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory for the model."),
    epochs: int | None = typer.Option(None, help="Maximum epochs (trainable models)."),
    loss: str | None = typer.Option(None, help="Sequence models: bce, ce or gbce."),
    seed: int | None = typer.Option(None, help="Random seed (default 0)."),
    encoder: str | None = typer.Option(
        None,
        help="sasrec-text: 'minilm' (default), 'st:<dir>', 'openai:<model>' or 'hashing'.",
    ),
    encoder_base_url: str | None = typer.Option(
        None, help="Base URL of an OpenAI-compatible encoder."
    ),
    encoder_key_env: str = typer.Option(
        "OPENAI_API_KEY", help="Environment variable holding the encoder's API key."
    ),
    set_: list[str] = typer.Option(
        [], "--set", help="Any model option as key=value (repeatable), e.g. --set dim=128."
    ),
    overwrite: bool = typer.Option(False, help="Replace a finished model in --out."),
    evaluate_after: bool = typer.Option(
        True, "--evaluate/--no-evaluate", help="Evaluate on the test split when done."
    ),
    negatives: int = typer.Option(100, help="Sampled protocol of the final evaluation."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    llm_users: int | None = typer.Option(
        50,
        help="lane: users whose preferences the LLM extracts (seeded sample; others get "
        "grounded fallback preferences). Pass 0 for fallback only.",
    ),
    pref_window: int = typer.Option(200, help="lane: history titles shown to the LLM."),
    pref_holdout: int = typer.Option(
        10,
        min=0,
        help="lane: " + HOLDOUT_HELP,
    ),
) -> None:
    """Train a recommender; a killed run resumes when the same command is run again."""
    from whyrec.errors import ConfigError

    config = _parse_sets(set_)
    for key, value in (("epochs", epochs), ("loss", loss), ("seed", seed)):
        if value is not None:
            config[key] = value
    if encoder is not None:
        from whyrec.embed import get_encoder

        kwargs: dict[str, Any] = {}
        if encoder.startswith("openai:"):
            kwargs = {"base_url": encoder_base_url, "api_key_env": encoder_key_env}
        config["encoder"] = get_encoder(encoder, **kwargs).config()
    if (out / "manifest.json").is_file():
        if not overwrite:
            raise ConfigError(
                f"{out} already holds a trained model; pass --overwrite to replace it"
            )
        shutil.rmtree(out)

    from whyrec.models import create_model

    rec = create_model(model, **config)
    ds = _load_data(data)
    if rec.has_preferences:
        # LANE needs every user's preferences first (LLM sample + grounded fallback)
        from whyrec.embed import encoder_from_config
        from whyrec.explain.pipeline import extract_preferences
        from whyrec.llm import LLMClient

        pset = extract_preferences(
            ds,
            client=LLMClient.from_settings(),
            encoder=encoder_from_config(config.get("encoder")),
            llm_users=llm_users,
            window=pref_window,
            holdout=pref_holdout or None,
        )
        typer.echo(f"preferences: {json.dumps(pset.summary())}", err=True)
        rec.set_preferences(  # type: ignore[attr-defined]
            pset.vectors, pset.texts, pset.sources, cuts=pset.cuts
        )
    checkpoints = out / "checkpoints"
    where = f"; checkpoints in {checkpoints}" if hasattr(rec.config, "epochs") else ""
    typer.echo(
        f"training {rec.name} on {ds.name} ({ds.n_users:,} users, {ds.n_items:,} items){where}",
        err=True,
    )
    rec.fit(ds, progress=progress, checkpoint_dir=checkpoints)
    rec.save(out)
    t = rec.training
    if "valid_ndcg10" in t:
        typer.echo(
            f"trained in {t['train_seconds']:.1f}s ({t['epochs_run']} epochs, "
            f"{t['seconds_per_epoch']:.2f}s/epoch); best validation NDCG@10 "
            f"{t['valid_ndcg10']:.4f} at epoch {t['best_epoch']}",
            err=True,
        )
    typer.echo(f"model saved to {out}", err=True)
    if evaluate_after:
        from whyrec.evaluate import evaluate as run_eval

        longest = int(ds.interactions.groupby("user_idx").size().max())
        protocols = "both"
        if ds.n_items - longest < negatives:
            protocols = "full"
            typer.echo(
                f"note: sampled protocol skipped: a user has {longest} of {ds.n_items} items, "
                f"too few left for {negatives} negatives",
                err=True,
            )
        report = run_eval(rec, ds, protocols=protocols, n_negatives=negatives)
        report.save(out / "evaluation.json")
        _print_report(report, OutputFormat.table)


def evaluate(
    run: Path = typer.Argument(..., help="Model directory written by 'whyrec train'."),
    data: str | None = typer.Option(
        None, "--data", "-d", help="Dataset (default: the one the model was trained on)."
    ),
    protocol: Protocol = typer.Option(Protocol.both, help="full, sampled or both."),
    split: Split = typer.Option(Split.test, help="Which held-out items to rank."),
    negatives: int = typer.Option(100, help="Sampled protocol: negatives per user."),
    seed: int = typer.Option(0, help="Sampled protocol: seed of the negative draw."),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f"),
    save: bool = typer.Option(True, help="Also write RUN/evaluation.json."),
) -> None:
    """Rank every user's held-out item: full catalogue and/or 1 + N sampled."""
    from whyrec.evaluate import evaluate as run_eval
    from whyrec.models import load_model
    from whyrec.models.base import read_manifest

    manifest = read_manifest(run)
    ds = _load_data(data, manifest)
    model = load_model(run, ds)
    report = run_eval(
        model, ds, protocols=protocol.value, split=split.value, n_negatives=negatives, seed=seed
    )
    if save:
        name = "evaluation.json" if split is Split.test else f"evaluation-{split.value}.json"
        report.save(run / name)
    _print_report(report, fmt)


def recommend(
    run: Path = typer.Argument(..., help="Model directory written by 'whyrec train'."),
    user: str | None = typer.Option(None, "--user", "-u", help="Source user id (as in the data)."),
    history: str | None = typer.Option(
        None, help="Instead of --user: comma-separated source item ids, oldest first."
    ),
    k: int = typer.Option(10, "-k", help="How many items."),
    include_seen: bool = typer.Option(False, help="Allow items the user already has."),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f"),
) -> None:
    """Top-k items for a user of the training data, or for a given history."""
    from whyrec.errors import ConfigError
    from whyrec.models import load_model

    if (user is None) == (history is None):
        raise ConfigError("give exactly one of --user or --history")
    model = load_model(run)
    if user is not None:
        recs = model.recommend(model.user_index(user), k=k, exclude_seen=not include_seen)
    else:
        assert history is not None
        ids = [h.strip() for h in history.split(",") if h.strip()]
        items = [model.item_index(i) for i in ids]
        recs = model.recommend(history=items, k=k, exclude_seen=not include_seen)
    records = recs.to_records()
    if fmt is OutputFormat.json:
        payload = {"model": model.name, "user": user, "history": history, "items": records}
        typer.echo(json.dumps(payload, indent=2))
        return
    from rich.table import Table

    from whyrec.safety import terminal_text as t

    who = f"user {t(user, 80)}" if user is not None else "the given history"
    table = Table(title=f"{model.name}: top {len(records)} for {who}")
    for col, justify in (("#", "right"), ("item", "left"), ("title", "left"), ("score", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in records:
        # cells are rich markup: ids and titles are escaped so they print literally
        table.add_row(str(r["rank"]), t(r["item_id"], 40), t(r["title"], 120), f"{r['score']:.4f}")
    _console().print(table)
