"""``whyrec align build | train | evaluate | explain``: tuning-based alignment.

torch, transformers and peft are imported inside the commands so ``whyrec --help`` stays fast.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from whyrec.cli.options import OutputFormat

app = typer.Typer(
    help="Tuning-based alignment: build training data from a recommender, LoRA-tune a small "
    "LLM into its surrogate, evaluate the alignment (RecExplainer, Cao et al.).",
    no_args_is_help=True,
)


class Form(StrEnum):
    behaviour = "behaviour"
    intention = "intention"
    hybrid = "hybrid"


class Knowledge(StrEnum):
    rec = "rec"
    rec_aux = "rec+aux"
    eval = "eval"


def _select_users(n_users: int, users: str, offset: int, seed: int) -> Any:
    """Internal user indices: ``all``, ``N`` (a seeded sample after ``offset``) or a file."""
    import numpy as np

    from whyrec.errors import ConfigError

    order = np.random.default_rng([seed, 11]).permutation(n_users)
    if users == "all":
        return order[offset:]
    try:
        n = int(users)
    except ValueError:
        raise ConfigError(
            f"--users expects 'all', a number, or a file of user ids; got {users!r}"
        ) from None
    if n < 1:
        raise ConfigError(f"--users must be >= 1, got {n}")
    return order[offset : offset + n]


def _users_from_file(path: Path, dataset: Any) -> Any:
    import numpy as np

    from whyrec.errors import DataError

    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        uid = line.strip()
        if not uid or uid.startswith("#"):
            continue
        try:
            out.append(dataset.user_index(uid))
        except DataError:
            raise DataError(
                f"unknown user id {uid!r} (dataset {dataset.name!r})", path=path, line=n
            ) from None
    return np.array(out, dtype=np.int64)


def _dataset(spec: str | None, manifest: dict[str, Any] | None = None) -> Any:
    from whyrec.cli.models import _load_data

    return _load_data(spec, manifest)


@app.command()
def build(
    out: Path = typer.Option(..., "--out", "-o", help="Directory for the sample set."),
    model: Path | None = typer.Option(
        None, "--model", "-m", help="Recommender run directory (f); needed for alignment data."
    ),
    data: str | None = typer.Option(
        None, "--data", "-d", help="Dataset (default: the one the model was trained on)."
    ),
    form: Form = typer.Option(Form.behaviour, help="Alignment form."),
    knowledge: Knowledge | None = typer.Option(
        None,
        help="Build the recommendation-knowledge mixture instead: 'rec' (retrieval, ranking, "
        "rating), 'rec+aux' (plus MIM, MLM, BPR) or 'eval' (test-split retrieval prompts).",
    ),
    mix: str | None = typer.Option(
        None, help="Task weights, e.g. 'retrieval=1,ranking=1,interest=2' (overrides defaults)."
    ),
    samples: int = typer.Option(1000, "--samples", "-n", help="Number of samples."),
    users: str = typer.Option(
        "all", help="'all', a number N (seeded sample of users) or a file of source user ids."
    ),
    users_offset: int = typer.Option(
        0, help="Skip this many users of the seeded order first (keeps eval users apart)."
    ),
    evaluation: bool = typer.Option(
        False,
        "--eval",
        help="Alignment evaluation set: each task once per user (balanced interest labels), "
        "history before the test item.",
    ),
    max_history: int = typer.Option(10, help="Titles shown per user."),
    states_per_user: int = typer.Option(1, help="Training: extra earlier prefixes per user."),
    seed: int = typer.Option(0, help="Seed of the sampling."),
    export: bool = typer.Option(
        True, "--export/--no-export", help="Also write openai.jsonl and the datasets copy."
    ),
) -> None:
    """Build alignment or recommendation-knowledge samples (chat format) into OUT."""
    from whyrec.align.builders import (
        DEFAULT_ALIGN_MIX,
        REC_ONLY_MIX,
        WITH_AUX_MIX,
        AlignmentConfig,
        KnowledgeConfig,
        build_alignment,
        build_knowledge,
        knowledge_eval_samples,
        parse_mix,
    )
    from whyrec.errors import ConfigError

    manifest = None
    rec = None
    if model is not None:
        from whyrec.models.base import read_manifest

        manifest = read_manifest(model)
    ds = _dataset(data, manifest)
    if model is not None:
        from whyrec.models import load_model

        rec = load_model(model, ds)
    chosen = (
        _users_from_file(Path(users), ds)
        if Path(users).is_file()
        else _select_users(ds.n_users, users, users_offset, seed)
    )
    if knowledge is Knowledge.eval:
        sset = knowledge_eval_samples(ds, chosen, max_history=max_history, seed=seed)
    elif knowledge is not None:
        default = REC_ONLY_MIX if knowledge is Knowledge.rec else WITH_AUX_MIX
        cfg = KnowledgeConfig(
            tasks=parse_mix(mix, default), n_samples=samples, max_history=max_history, seed=seed
        )
        sset = build_knowledge(ds, chosen, cfg)
    else:
        if rec is None:
            raise ConfigError("alignment data needs the recommender: pass --model RUN")
        cfg = AlignmentConfig(
            form=form.value,
            tasks=parse_mix(mix, DEFAULT_ALIGN_MIX),
            n_samples=samples,
            per_state=evaluation,
            max_history=max_history,
            seed=seed,
        )
        sset = build_alignment(
            rec,
            ds,
            chosen,
            cfg,
            split="test" if evaluation else "train",
            states_per_user=1 if evaluation else states_per_user,
        )
    sset.info["users"] = [str(ds.users["user_id"].iloc[int(u)]) for u in chosen]
    sset.info["dataset"] = ds.name
    sset.info["dataset_path"] = str(ds.path) if ds.path else None
    if model is not None:
        sset.info["recommender_path"] = str(model)
    sset.save(out, export=export)
    typer.echo(json.dumps({"out": str(out), "samples": len(sset), "counts": sset.counts()}))


@app.command()
def train(
    samples: Path = typer.Argument(..., help="Sample set directory from 'whyrec align build'."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory of the surrogate."),
    base: str | None = typer.Option(
        None,
        help="Base LLM: 'smollm2' (default, the packaged GGUF), a .gguf file, or a Hugging "
        "Face model directory.",
    ),
    steps: int = typer.Option(300, help="Optimiser steps."),
    batch_size: int = typer.Option(4, help="Samples per step."),
    lr: float = typer.Option(1e-3, help="Learning rate of the LoRA adapters."),
    connector_lr: float = typer.Option(1e-3, help="Learning rate of the connectors."),
    lora_r: int = typer.Option(8, help="LoRA rank."),
    max_length: int = typer.Option(384, help="Longer samples are skipped."),
    precision: str = typer.Option("auto", help="auto, bf16 or fp32 (compute precision)."),
    checkpoint_every: int = typer.Option(50, help="Steps between checkpoints."),
    seed: int = typer.Option(0, help="Random seed."),
    name: str | None = typer.Option(None, help="Name recorded in the surrogate's manifest."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """LoRA-tune the base LLM on SAMPLES; a killed run resumes when run again."""
    from whyrec.align.samples import SampleSet
    from whyrec.align.tuning import TuneConfig, train_surrogate

    sset = SampleSet.load(samples)
    cfg = TuneConfig(
        base_model=base,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        connector_lr=connector_lr,
        lora_r=lora_r,
        lora_alpha=2 * lora_r,
        max_length=max_length,
        precision=precision,
        checkpoint_every=checkpoint_every,
        seed=seed,
    )
    res = train_surrogate(sset, out, cfg, progress=progress, name=name)
    typer.echo(json.dumps({"out": str(res.path), **res.summary()}))


def _surrogate(spec: str, base: str | None) -> Any:
    from whyrec.align.tuning import Surrogate

    if spec == "untuned":
        return Surrogate.untuned(base)
    return Surrogate.load(Path(spec))


@app.command()
def evaluate(
    surrogate: str = typer.Argument(
        ..., help="Surrogate run directory, or 'untuned' for the base model as it is."
    ),
    samples: Path = typer.Option(
        ..., "--samples", "-s", help="Evaluation set ('align build --eval' or '--knowledge eval')."
    ),
    model: Path | None = typer.Option(
        None, "--model", "-m", help="Recommender run: reported beside the knowledge metrics."
    ),
    data: str | None = typer.Option(None, "--data", "-d", help="Dataset (default: from samples)."),
    base: str | None = typer.Option(None, help="Base LLM for 'untuned'."),
    trie: bool = typer.Option(
        True, "--trie/--no-trie", help="Also decode constrained to catalogue titles (labelled)."
    ),
    beams: int = typer.Option(10, help="Knowledge: beam width of the title search."),
    out: Path | None = typer.Option(None, help="Write the report as JSON here."),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f"),
) -> None:
    """Alignment with f (HR@5, NDCG@5, interest accuracy, coverage) or Recall/NDCG@10."""
    from whyrec.align.decoding import TitleTrie
    from whyrec.align.evaluation import (
        evaluate_alignment,
        evaluate_knowledge,
        recommender_knowledge,
    )
    from whyrec.align.samples import SampleSet
    from whyrec.io import write_json

    sset = SampleSet.load(samples)
    path = sset.info.get("dataset_path")
    ds = _dataset(data or (path if path and Path(path).is_dir() else sset.info.get("dataset")))
    sur = _surrogate(surrogate, base)
    knowledge = sset.info.get("builder") == "knowledge-eval"
    title_trie = TitleTrie(sur, ds.titles) if trie or knowledge else None
    report: dict[str, Any]
    if knowledge:
        assert title_trie is not None
        report = {"knowledge": evaluate_knowledge(sur, sset, title_trie, ds.titles, beams=beams)}
        if model is not None:
            from whyrec.models import load_model

            rec = load_model(model, ds)
            users = [s.meta["user"] for s in sset.samples]
            report["recommender"] = recommender_knowledge(rec, ds, users)
    else:
        report = {"alignment": evaluate_alignment(sur, sset, trie=title_trie)}
    report["surrogate"] = surrogate
    report["base"] = sur.base.get("name")
    if out is not None:
        write_json(out, report)
    if fmt is OutputFormat.json:
        typer.echo(json.dumps(report, indent=2, default=str))
        return
    _print_table(report)


def _print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{report['surrogate']} (base {report['base']})")
    table.add_column("task")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for section in ("alignment", "knowledge", "recommender"):
        block = report.get(section)
        if not block:
            continue
        for task, vals in block.items():
            if isinstance(vals, dict) and task != "examples":
                for k, v in vals.items():
                    if isinstance(v, float):
                        table.add_row(task, k, f"{v:.4f}")
            elif isinstance(vals, float):
                table.add_row(section, task, f"{vals:.4f}")
    Console(width=max(Console().width, 100)).print(table)


@app.command()
def explain(
    surrogate: str = typer.Argument(..., help="Surrogate run directory, or 'untuned'."),
    model: Path = typer.Option(..., "--model", "-m", help="The recommender run it aligns with."),
    user: str = typer.Option(..., "--user", "-u", help="Source user id."),
    k: int = typer.Option(3, "-k", help="Recommendations to explain."),
    base: str | None = typer.Option(None, help="Base LLM for 'untuned'."),
    max_new_tokens: int = typer.Option(96, help="Length limit of each reason."),
) -> None:
    """Recommend with the recommender and let the surrogate explain each item; its reply
    is verified against the item's evidence like any LLM reason."""
    from whyrec.align.explainer import SurrogateExplainer
    from whyrec.models import load_model

    rec = load_model(model)
    sur = _surrogate(surrogate, base)
    from whyrec.explain.explainer import ExplanationPipeline

    pipeline = ExplanationPipeline.from_run(rec)  # the run's item facts, evidence, verifier
    ex = SurrogateExplainer(sur, rec, max_new_tokens=max_new_tokens, pipeline=pipeline)
    items = ex.recommend_and_explain(rec.user_index(user), k=k)
    typer.echo(json.dumps([e.to_dict() for e in items], indent=2, default=str))


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="align")
