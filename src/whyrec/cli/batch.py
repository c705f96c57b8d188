"""``whyrec batch``: resumable LLM jobs over many users (Parquet shards + manifest)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from whyrec.cli.options import OptionSpec, option_group

app = typer.Typer(
    help="Resumable batch jobs: LANE preferences or explanations for many users, written as "
    "Parquet shards plus a manifest. Kill and rerun at will; nothing is computed twice.",
    no_args_is_help=True,
)

_USERS = typer.Option("all", "--users", help="'all' or a file with one user id per line.")
_OUT = typer.Option(..., "--out", "-o", help="Output directory (shards + manifest.json).")
_BACKEND = typer.Option("local", "--backend", help="local (threads) or ray (Ray Data actors).")
_RETRY = typer.Option(
    False,
    "--retry-failed",
    help="Run only the items that failed before and those that ended with the grounded "
    "fallback because no reply validated (asking the model again, past the reply cache).",
)
_CONC = typer.Option(
    None, "--concurrency", help="LLM calls in flight (per actor with ray); default: settings."
)
_PAR = typer.Option(
    None, "--n-parallel", help="Local model: sequences decoded together (batched decoding)."
)
_WORKERS = typer.Option(
    None,
    "--workers",
    help="Local model: processes, each with its share of n_threads on its own cores "
    "(2 on a 2-core machine: about twice the throughput of one 2-thread process).",
)
_WEIGHTS = typer.Option(
    None,
    "--weights",
    help="Local model: 'file' (as stored) or a format to re-encode the weights into once, "
    "e.g. f16 (same quality as the packaged Q4_1; faster prompts and batched decoding).",
)
_SHARD = typer.Option(64, "--shard-size", help="Items per Parquet shard.")
_QPS = typer.Option(None, "--qps", help="Request-rate limit across the job (HTTP endpoints).")
_ACTORS = typer.Option(1, "--actors", help="ray: number of LLM actors.")
_CPUS = typer.Option(None, "--cpus-per-actor", help="ray: CPUs per actor (default n_threads).")
_ADDR = typer.Option(
    None, "--ray-address", help="ray: cluster address (default $RAY_ADDRESS, else local)."
)
_CFG = typer.Option(None, "--llm-config", help="LLM config file.")
_PROGRESS = typer.Option(True, "--progress/--no-progress", help="Show a progress bar.")

#: The options every job command takes, in --help order.
_JOB_OPTIONS: tuple[OptionSpec, ...] = (
    ("backend", str, _BACKEND),
    ("retry_failed", bool, _RETRY),
    ("concurrency", int | None, _CONC),
    ("n_parallel", int | None, _PAR),
    ("workers", int | None, _WORKERS),
    ("weights", str | None, _WEIGHTS),
    ("shard_size", int, _SHARD),
    ("qps", float | None, _QPS),
    ("actors", int, _ACTORS),
    ("cpus_per_actor", float | None, _CPUS),
    ("ray_address", str | None, _ADDR),
    ("llm_config", Path | None, _CFG),
    ("progress", bool, _PROGRESS),
)
#: Of those, the ones that are LLM settings rather than batch options.
_SETTINGS_OPTIONS = ("n_parallel", "workers", "weights")


def _run(job_factory: Any, users: str, out: Path, o: dict[str, Any]) -> None:
    from whyrec.batch import BatchOptions, run_batch
    from whyrec.llm import LLMClient, LLMSettings

    settings = LLMSettings.load(o["llm_config"], **{k: o[k] for k in _SETTINGS_OPTIONS})
    opts = BatchOptions(
        backend=o["backend"],
        retry_failed=o["retry_failed"],
        concurrency=o["concurrency"],
        shard_size=o["shard_size"],
        progress=o["progress"],
        qps=o["qps"],
        ray_address=o["ray_address"],
        actors=o["actors"],
        cpus_per_actor=o["cpus_per_actor"],
    )
    opts.check()
    # with ray the driver only needs the model's name; nothing is loaded here
    client = LLMClient(settings, cache=False if opts.on_ray else None)
    try:
        job = job_factory(client)
        report = run_batch(job, out, users, client=client, settings=settings, options=opts)
    finally:
        client.close()
    for note in report.notes:
        typer.secho(f"note: {note}", err=True, fg=typer.colors.YELLOW)
    typer.echo(json.dumps(report.to_dict()))
    if report.status == "complete_with_failures":
        raise typer.Exit(3)


@app.command()
@option_group(_JOB_OPTIONS, into="job")
def preferences(
    run: str = typer.Argument(..., help="Dataset name or directory, or a model directory."),
    users: str = _USERS,
    out: Path = _OUT,
    m: int = typer.Option(5, "-m", help="Preferences per user."),
    window: int = typer.Option(200, help="Most recent training titles shown to the LLM."),
    max_tokens: int = typer.Option(200, help="Completion budget per call."),
    mode: str = typer.Option(
        "auto", help="Prompt mode: json, aspects (one call per aspect) or auto (by model size)."
    ),
    *,
    job: dict[str, Any],
) -> None:
    """m LANE preferences per user (grounded fallback when the reply never validates)."""
    from whyrec.batch import PreferenceJob

    _run(
        lambda client: PreferenceJob(
            run, client=client, m=m, window=window, max_tokens=max_tokens, mode=mode
        ),
        users,
        out,
        job,
    )


@app.command()
@option_group(_JOB_OPTIONS, into="job")
def explanations(
    run: str = typer.Argument(
        ...,
        help="A model directory (LANE, any whyrec model, or a saved outside model), or an "
        "outside model's import path module:object (needs --data).",
    ),
    users: str = _USERS,
    out: Path = _OUT,
    k: int = typer.Option(1, "-k", help="Recommendations explained per user."),
    max_tokens: int | None = typer.Option(
        None, help="Completion budget per call (default: the explainer's)."
    ),
    history_window: int = typer.Option(15, help="Recent history titles shown to the LLM."),
    data: str | None = typer.Option(
        None, "--data", "-d", help="Dataset the model was trained on (name or directory)."
    ),
    *,
    job: dict[str, Any],
) -> None:
    """Each user's top-k recommendations with verified reasons (LANE's four steps for a
    LANE model; history evidence and item facts for others)."""
    from whyrec.batch import ExplanationJob
    from whyrec.cli.models import _load_data

    ds = _load_data(data) if data is not None else None
    _run(
        lambda client: ExplanationJob(
            run,
            client=client,
            k=k,
            max_tokens=max_tokens,
            history_window=history_window,
            dataset=ds,
        ),  # fmt: skip
        users,
        out,
        job,
    )


@app.command()
def status(
    out: Path = typer.Argument(..., help="A batch output directory."),
    failures: int = typer.Option(5, help="Show this many failure reasons."),
) -> None:
    """Job, counts, shards and the latest failure reasons of a batch directory.

    A job whose manifest says "running" while the process named in its lock is gone
    (killed) is reported as "interrupted (stale lock from PID N)"; rerun to resume.
    """
    from whyrec.batch import read_manifest, read_output
    from whyrec.batch.store import lock_state

    manifest = read_manifest(out)
    shards = manifest.get("shards", [])
    state = manifest.get("status")
    lock = lock_state(out)
    if state == "running" and lock["alive"] is False:
        holder = f"PID {lock['pid']}" if lock["pid"] is not None else "a process that is gone"
        state = f"interrupted (stale lock from {holder})"
    summary = {
        "job": manifest.get("job"),
        "status": state,
        "counts": manifest.get("counts"),
        "data_shards": sum(e.get("kind", "data") == "data" for e in shards),
        "failure_shards": sum(e.get("kind") == "failures" for e in shards),
        "rows": sum(e["rows"] for e in shards if e.get("kind", "data") == "data"),
        "runs": len(manifest.get("runs", [])),
    }
    typer.echo(json.dumps(summary, indent=2))
    if failures > 0 and summary["failure_shards"]:
        done = set(read_output(out)["key"])
        fails = read_output(out, failures=True).drop_duplicates("key", keep="last")
        fails = fails[~fails["key"].isin(done)]
        for row in fails.tail(failures).itertuples():
            typer.echo(f"failed {row.key}: {row.error_type}: {row.reason}", err=True)


def register(root: typer.Typer) -> None:
    """Add ``whyrec batch ...`` to the root command."""
    root.add_typer(app, name="batch")
