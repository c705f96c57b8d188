"""``whyrec llm ...``: check the configured LLM, see its settings, estimate a stage's cost.

Every command reads the same settings as the library (config file, ``WHYREC_LLM_*``),
and ``--backend/--model/--base-url`` override them for one run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from whyrec.cli.options import OptionSpec, option_group

app = typer.Typer(
    help="The LLM layer: quick chat, active settings, dry-run cost estimates, a local endpoint.",
    no_args_is_help=True,
)

_CONFIG_HELP = "TOML or JSON settings file (default: $WHYREC_LLM_CONFIG)."


class Stage(StrEnum):
    """Stages the estimator knows typical call sizes for."""

    preferences = "preferences"
    explanations = "explanations"


class Backend(StrEnum):
    """Backends the client can use."""

    local = "local"
    openai = "openai"


#: The settings file and the overrides that chat, info and estimate take.
_LLM_OPTIONS: tuple[OptionSpec, ...] = (
    ("config", Path | None, typer.Option(None, "--config", "-c", help=_CONFIG_HELP)),
    ("backend", Backend | None, typer.Option(None, "--backend", help="Override the backend.")),
    ("model", str | None, typer.Option(None, "--model", help="Override the model name.")),
    ("base_url", str | None, typer.Option(None, "--base-url", help="Override the endpoint URL.")),
)


def _settings(llm: dict[str, Any], **kw: Any) -> Any:
    """LLM settings from the file and overrides of :data:`_LLM_OPTIONS` (and ``kw``)."""
    from whyrec.llm.settings import LLMSettings

    backend = llm.get("backend")
    return LLMSettings.load(
        llm.get("config"),
        backend=backend.value if backend else None,
        model=llm.get("model"),
        base_url=llm.get("base_url"),
        **kw,
    )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s"
    minutes = seconds / 60
    if minutes < 90:
        return f"{minutes:.1f} min"
    hours = minutes / 60
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"


@app.command()
@option_group(_LLM_OPTIONS, into="llm")
def chat(
    prompt: str = typer.Argument(..., help="The user message."),
    system: str | None = typer.Option(None, "--system", "-s", help="A system message."),
    schema: Path | None = typer.Option(
        None, "--schema", help="JSON-schema file; the reply must parse and validate against it."
    ),
    max_tokens: int | None = typer.Option(None, "--max-tokens", min=1),
    temperature: float | None = typer.Option(None, "--temperature", min=0.0, max=2.0),
    seed: int | None = typer.Option(None, "--seed"),
    no_cache: bool = typer.Option(False, "--no-cache", help="Bypass the reply cache."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole result as JSON."),
    *,
    llm: dict[str, Any],
) -> None:
    """Send one message and print the reply (a quick check that the LLM works)."""
    from whyrec.llm.client import LLMClient
    from whyrec.llm.errors import LLMError, LLMOutputError
    from whyrec.safety import printable_text, terminal_json

    schema_obj = None
    if schema is not None:
        try:
            schema_obj = json.loads(schema.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise typer.BadParameter(
                f"{schema}: cannot read a JSON schema ({exc})", param_hint="--schema"
            ) from exc
        if not isinstance(schema_obj, dict):
            raise typer.BadParameter(
                f"{schema}: expected a JSON object (a JSON schema)", param_hint="--schema"
            )
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    settings = _settings(llm, cache=False if no_cache else None)
    with LLMClient(settings) as client:
        try:
            res = client.complete(
                messages,
                schema=schema_obj,
                max_tokens=max_tokens,
                temperature=temperature,
                seed=seed,
                stage="chat",
            )
        except LLMOutputError as exc:
            typer.secho(f"error: {printable_text(exc)}", fg=typer.colors.RED, err=True)
            typer.echo(f"last reply: {printable_text(exc.text, 2000)}", err=True)
            raise typer.Exit(1) from None
        except LLMError as exc:  # endpoint down, key refused, bad bodies after the retries
            typer.secho(f"error: {type(exc).__name__}: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None
    if as_json:
        out = {k: v for k, v in vars(res).items() if k != "tag"}
        typer.echo(json.dumps(out, indent=2, default=str))
        return
    if schema_obj is not None:
        typer.echo(terminal_json(res.parsed))
    else:
        typer.echo(printable_text(res.text))  # the model's reply: no terminal control codes
    source = "cache hit" if res.cached else f"{res.attempts} attempt(s)"
    typer.echo(
        f"[{res.backend} · {printable_text(res.model, 80)} · "
        f"{res.prompt_tokens}+{res.completion_tokens} tokens · {res.latency_s:.2f} s · {source}]",
        err=True,
    )


@app.command()
@option_group(_LLM_OPTIONS, into="llm")
def info(
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
    *,
    llm: dict[str, Any],
) -> None:
    """Show the active backend, model, model file, endpoint and cache (loads no model)."""
    from whyrec.llm.client import LLMClient

    settings = _settings(llm)
    with LLMClient(settings) as client:
        data = client.info()
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    width = max(len(k) for k in data)
    for key, value in data.items():
        if value is None:
            continue
        typer.echo(f"{key.ljust(width)}  {value}")


@app.command()
@option_group(_LLM_OPTIONS, into="llm")
def estimate(
    stage: Stage = typer.Option(..., "--stage", help="Which stage to estimate."),
    users: int = typer.Option(..., "--users", min=0, help="Number of users."),
    prompt_tokens: int | None = typer.Option(
        None, "--prompt-tokens", min=1, help="Prompt tokens per call (default: stage profile)."
    ),
    completion_tokens: int | None = typer.Option(
        None, "--completion-tokens", min=1, help="Reply tokens per call (default: stage profile)."
    ),
    history_items: int | None = typer.Option(
        None, "--history-items", min=0, help="History titles per prompt (default: stage profile)."
    ),
    calls_per_user: float | None = typer.Option(None, "--calls-per-user", min=0.0),
    retry_rate: float = typer.Option(
        0.1, "--retry-rate", min=0.0, help="Share of calls expected to need one extra ask."
    ),
    concurrency: int | None = typer.Option(None, "--concurrency", min=1),
    calibrate: bool = typer.Option(
        False, "--calibrate", help="Measure speed with two short real calls first (not free!)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
    *,
    llm: dict[str, Any],
) -> None:
    """Dry-run estimate of tokens, cost and time for a stage over N users."""
    from dataclasses import replace

    from whyrec.llm import estimate as est

    settings = _settings(llm)
    profile = est.STAGE_PROFILES[stage.value]
    if history_items is not None:
        profile = replace(profile, history_items=history_items)
    throughput = None
    if calibrate:
        from whyrec.llm.client import LLMClient

        with LLMClient(settings, cache=False) as client:
            throughput = est.calibrate(client)
    result = est.estimate_stage(
        stage.value,
        users,
        settings,
        profile=profile,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        calls_per_user=calls_per_user,
        retry_rate=retry_rate,
        throughput=throughput,
        concurrency=concurrency,
    )
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2, default=str))
        return
    if result.cost_usd is None:
        cost = f"unknown: no price for {result.model!r}; add it under 'prices' in the settings"
    elif settings.is_local:
        cost = "$0 (local model)"
    else:
        cost = f"${result.cost_usd:,.2f}"
    tp = result.throughput
    lines = [
        f"stage        {result.stage} for {result.users:,} users",
        f"model        {result.backend} · {result.model}",
        f"calls        {result.calls:,} (+{result.retry_rate:.0%} expected re-asks/retries)",
        f"per call     {result.prompt_tokens_per_call:,} prompt + "
        f"{result.completion_tokens_per_call:,} reply tokens",
        f"tokens       {result.prompt_tokens:,} prompt + {result.completion_tokens:,} reply "
        f"= {result.total_tokens:,}",
        f"cost         {cost}",
        f"time         {_duration(result.seconds)} at {result.concurrency} call(s) in parallel",
        f"speed        {tp.prefill:,.0f} prompt tok/s, {tp.decode:,.1f} reply tok/s ({tp.source})",
    ]
    typer.echo("\n".join(lines))


@app.command("clear-cache")
def clear_cache(
    config: Path | None = typer.Option(None, "--config", "-c", help=_CONFIG_HELP),
    failures_only: bool = typer.Option(
        False, "--failures-only", help="Forget only remembered failures (never-valid replies)."
    ),
) -> None:
    """Delete every cached reply (or only the remembered failures)."""
    from whyrec.llm.cache import ReplyCache

    settings = _settings({"config": config})
    cache = ReplyCache(settings.resolved_cache_path())
    n = cache.clear(failures_only=failures_only)
    cache.close()
    what = "remembered failures" if failures_only else "cached replies"
    typer.echo(f"removed {n} {what} from {cache.path}")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Listen address (loopback by default)."),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    model_path: Path | None = typer.Option(
        None, "--model-path", help="GGUF file (default: settings, else the packaged SmolLM2)."
    ),
    alias: str | None = typer.Option(
        None, "--alias", help="Model name clients send (default: the file name without .gguf)."
    ),
    threads: int | None = typer.Option(None, "--threads", min=1),
    n_ctx: int | None = typer.Option(None, "--n-ctx", min=256),
    config: Path | None = typer.Option(None, "--config", "-c", help=_CONFIG_HELP),
) -> None:
    """Expose a GGUF model as an OpenAI-compatible endpoint (llama-cpp-python's server).

    Point the ``openai`` backend at it with ``base_url=http://HOST:PORT/v1``.
    """
    import importlib.util

    from whyrec.llm.backends.local import packaged_model_path

    settings = _settings({"config": config})
    if importlib.util.find_spec("uvicorn") is None or importlib.util.find_spec("llama_cpp") is None:
        raise typer.BadParameter("needs llama-cpp-python[server]: pip install 'whyrec[local]'")
    path = model_path or settings.model_path or packaged_model_path()
    if not Path(path).is_file():
        raise typer.BadParameter(f"{path}: GGUF file not found", param_hint="--model-path")
    name = alias or Path(path).stem
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(path),
        "--model_alias",
        name,
        "--host",
        host,
        "--port",
        str(port),
        "--n_threads",
        str(threads or settings.n_threads),
        "--n_ctx",
        str(n_ctx or settings.n_ctx),
    ]
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.secho(
            f"warning: listening on {host}: the endpoint has no authentication",
            fg=typer.colors.YELLOW,
            err=True,
        )
    typer.echo(
        f"serving {name} at http://{host}:{port}/v1 (backend=openai, base_url=http://{host}:"
        f"{port}/v1, model={name}); Ctrl-C stops",
        err=True,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        # Become the server: signals (Ctrl-C, SIGTERM from a supervisor) reach it directly
        # and no orphan is left behind.
        os.execv(sys.executable, cmd)
    proc = subprocess.Popen(cmd)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        code = proc.wait(timeout=30)
    raise typer.Exit(code)
