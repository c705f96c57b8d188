"""The ``whyrec`` command line. Each sub-package contributes its commands here.

Heavy imports (torch, llama.cpp) happen inside the commands so ``whyrec --help`` is fast.
"""

from __future__ import annotations

import typer

from whyrec import __version__

app = typer.Typer(
    name="whyrec",
    help="Explainable recommendation with LLMs: data, recommenders, preference-aligned "
    "explanations (LANE), evaluation and serving.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"whyrec {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """whyrec command line."""


def _register() -> None:
    from whyrec.cli import data as data_cli

    app.add_typer(data_cli.app, name="data")
    from whyrec.cli import demo as demo_cli

    demo_cli.register(app)
    from whyrec.cli import llm as llm_cli

    app.add_typer(llm_cli.app, name="llm")
    from whyrec.cli import models as models_cli

    models_cli.register(app)
    from whyrec.cli import explain as explain_cli

    explain_cli.register(app)
    from whyrec.cli import align as align_cli

    align_cli.register(app)
    from whyrec.cli import explanations as explanations_cli

    explanations_cli.register(app)
    from whyrec.cli import serve as serve_cli

    serve_cli.register(app)
    from whyrec.cli import batch as batch_cli

    batch_cli.register(app)


_register()


def main() -> None:
    """Console-script entry point: turn whyrec's own errors into one clean line."""
    from whyrec.errors import WhyrecError

    try:
        app()
    except WhyrecError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise SystemExit(2) from None
