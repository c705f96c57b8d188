"""``whyrec serve RUN``: the HTTP service (recommendations + cached explanations + web page).

Not to be confused with ``whyrec llm serve``, which exposes the embedded LLM itself as an
OpenAI-compatible endpoint.
"""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the root app."""
    app.command()(serve)


def serve(
    run: Path = typer.Argument(
        ...,
        help="Model directory written by 'whyrec train' (or a saved outside model), or an "
        "outside model's import path module:object (needs --data).",
    ),
    data: str | None = typer.Option(
        None,
        "--data",
        "-d",
        help="Dataset the model was trained on (required for an import path; otherwise "
        "the one in the run's manifest).",
    ),
    host: str | None = typer.Option(
        None, help="Address to bind (default 127.0.0.1; other addresses need API keys)."
    ),
    port: int | None = typer.Option(None, help="TCP port (default 8000)."),
    config: Path | None = typer.Option(
        None, "--config", help="Serve config file (TOML/JSON; also $WHYREC_SERVE_CONFIG)."
    ),
    store: str | None = typer.Option(
        None,
        help="SQLite file (default: <RUN>.serve.sqlite beside the run), or a PostgreSQL "
        "URL postgresql://USER@HOST:PORT/DB that several replicas share (a password is "
        "better given in $WHYREC_SERVE_STORE_URL or ~/.pgpass than here).",
    ),
    llm: bool | None = typer.Option(
        None, "--llm/--no-llm", help="Write reasons with the LLM (default) or templates only."
    ),
    llm_config: Path | None = typer.Option(None, "--llm-config", help="LLM config file."),
    budget: float | None = typer.Option(
        None, help="Seconds a request waits for a new LLM reason (default 1.5)."
    ),
    access_log: bool | None = typer.Option(
        None, "--access-log/--no-access-log", help="uvicorn's per-request log."
    ),
    log_level: str = typer.Option("info", help="uvicorn log level."),
) -> None:
    """Serve recommendations with on-demand, cached explanations over HTTP.

    API keys come from $WHYREC_SERVE_API_KEYS (comma-separated) or the config file, never
    from the command line. Open http://HOST:PORT/ for the web page, /docs for the API.
    """
    import uvicorn

    from whyrec.serve.app import create_app
    from whyrec.serve.settings import ServeSettings

    settings = ServeSettings.load(
        config,
        run=run,
        dataset=data,
        host=host,
        port=port,
        store=store,
        llm=llm,
        llm_config=llm_config,
        explain_budget_s=budget,
        access_log=access_log,
    )
    app = create_app(settings)
    auth = "API keys required" if settings.auth_enabled else "no API keys: loopback only"
    typer.echo(
        f"whyrec serve: {app.state.service.model.name} from {settings.run} on "
        f"http://{settings.host}:{settings.port}/ ({auth}; store {settings.store_display()})",
        err=True,
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        access_log=settings.access_log,
        timeout_graceful_shutdown=10,
    )
