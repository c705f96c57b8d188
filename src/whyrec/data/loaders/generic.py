"""Any interaction log in CSV, TSV, Parquet or JSON lines, with a column mapping.

The escape hatch for data that has no dedicated loader: name the user, item and time
columns (and optionally rating, title and text columns) and whyrec reads the rest.
Interactions and items may sit in two files or in one (then every row repeats its
item's title and the catalogue is collapsed to one row per item).
"""

from __future__ import annotations

import csv
import difflib
import functools
import gzip
import io
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from whyrec.data.ids import clean_ids
from whyrec.data.loaders import _lines
from whyrec.data.loaders._lines import (
    attach_catalogue,
    check_file,
    clean_title,
    is_gzip,
    iter_lines,
    iter_records,
    join_text,
    open_binary,
    open_capped,
    read_capped,
    snippet,
)
from whyrec.data.raw import RawData, describe_source
from whyrec.errors import DataError

FORMATS = ("csv", "tsv", "parquet", "jsonl", "json")
_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
}
_UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
# seconds between 1900-01-01 and 2200-01-01: anything outside is a unit or data error
_MIN_SECONDS, _MAX_SECONDS = -2_208_988_800, 7_258_118_400
_CHUNK_ROWS = 500_000


def load_table(
    interactions: str | Path,
    items: str | Path | None = None,
    *,
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str = "timestamp",
    rating_col: str | None = None,
    title_col: str = "title",
    text_cols: Sequence[str] = (),
    items_item_col: str | None = None,
    fmt: str | None = None,
    sep: str | None = None,
    time_format: str | None = None,
    encoding: str = "utf-8",
    names: Sequence[str] | None = None,
    drop_invalid_ids: bool = False,
) -> RawData:
    """Load interactions (and a catalogue) from delimited, Parquet or JSON-lines files.

    ``fmt`` defaults to the extension (``.csv``, ``.tsv``/``.tab``, ``.parquet``,
    ``.jsonl``/``.ndjson``/``.json``, each optionally ``.gz``) and applies to both files
    when given. ``items_item_col`` names the item column of the items file (default:
    ``item_col``). Times may be epoch numbers (unit detected from their magnitude, or
    forced with ``time_format`` = ``s``/``ms``/``us``/``ns``), ISO-8601 dates or
    datetimes (naive ones read as UTC), or match a strptime ``time_format`` such as
    ``%d/%m/%Y %H:%M``. ``names`` gives column names for a headerless CSV/TSV.
    Text columns keep their names in the items table; list values are joined with ", ".

    Ids follow :mod:`whyrec.data.ids` (non-empty strings or integers; ``NaN``/None/empty,
    floats, lists and bytes are errors naming the row); with ``drop_invalid_ids`` such
    rows are dropped instead and counted in the notes (``rows_with_invalid_id_dropped``,
    ``items_with_invalid_id_dropped``). In Parquet files a column whose type cannot hold
    its values (float or list ids, binary titles, ...) is an error naming the column and
    its type.
    """
    inter_path = check_file(interactions, "interactions")
    params = {user_col: "user_col", item_col: "item_col", time_col: "time_col"}
    if rating_col:
        params[rating_col] = "rating_col"
    wanted = [user_col, item_col, time_col] + ([rating_col] if rating_col else [])
    if items is None:
        params.update({title_col: "title_col", **{c: "text_cols" for c in text_cols}})
        wanted += [c for c in [title_col, *text_cols] if c not in wanted]
    numeric = [time_col] + ([rating_col] if rating_col else [])
    table = _read_table(inter_path, fmt, sep, encoding, names, wanted, params, numeric)
    roles = {user_col: "id", item_col: "id", time_col: "time"}
    if rating_col:
        roles[rating_col] = "number"
    if items is None:
        roles.update({title_col: "text", **{c: "field" for c in text_cols}})
    _check_types(table, roles)
    notes: dict[str, int] = {}
    user_ids, item_ids = _interaction_ids(table, (user_col, item_col), drop_invalid_ids, notes)
    seconds, unit = _timestamps(table, time_col, time_format)
    ratings = _ratings(table, rating_col) if rating_col else np.full(table.n_rows, np.nan)
    inter = pd.DataFrame(
        {"user_id": user_ids, "item_id": item_ids, "timestamp": seconds, "rating": ratings}
    )

    files: dict[str, str | Path] = {"interactions": inter_path}
    if items is None:
        raw_items = _catalogue_columns(table, item_ids, title_col, text_cols)
    else:
        items_path = check_file(items, "items")
        files["items"] = items_path
        id_col = items_item_col or item_col
        id_param = "items_item_col" if items_item_col else "item_col"
        raw_items = _items_file(
            items_path,
            (fmt, sep, encoding),
            (id_col, id_param),
            title_col,
            text_cols,
            drop_invalid_ids,
            notes,
        )
    inter, catalogue = _join_catalogue(
        inter, raw_items, text_cols, notes, files.get("items", inter_path)
    )
    source = describe_source(
        "table",
        files,
        format=table.fmt,
        columns={
            "user": user_col,
            "item": item_col,
            "time": time_col,
            "rating": rating_col,
            "title": title_col,
            "text": list(text_cols),
            "items_item": items_item_col,
        },
        timestamp_unit=unit,
    )
    return RawData(interactions=inter, items=catalogue, source=source, notes=notes)


def _interaction_ids(
    table: _Table, columns: tuple[str, str], drop_invalid_ids: bool, notes: dict[str, int]
) -> tuple[pd.Series, pd.Series]:
    """The user and item ids of the interactions; with ``drop_invalid_ids`` the rows with
    an invalid one are dropped from ``table`` too (and counted in ``notes``)."""
    user_col, item_col = columns
    user_ids, user_ok = _ids(table, user_col, drop=drop_invalid_ids)
    item_ids, item_ok = _ids(table, item_col, drop=drop_invalid_ids)
    if drop_invalid_ids:
        keep = user_ok & item_ok
        notes["rows_with_invalid_id_dropped"] = int((~keep).sum())
        if not keep.any():
            raise DataError("no row has a valid user and item id", path=table.path)
        if not keep.all():
            table.frame = table.frame[keep]
            user_ids = user_ids[keep].reset_index(drop=True)
            item_ids = item_ids[keep].reset_index(drop=True)
    return user_ids, item_ids


def _items_file(
    path: Path,
    reading: tuple[str | None, str | None, str],
    id_column: tuple[str, str],
    title_col: str,
    text_cols: Sequence[str],
    drop_invalid_ids: bool,
    notes: dict[str, int],
) -> pd.DataFrame:
    """The catalogue columns of a separate items file. ``reading`` is (format, separator,
    encoding); ``id_column`` the item id column and the parameter that named it."""
    fmt, sep, encoding = reading
    id_col, id_param = id_column
    item_params = {id_col: id_param}
    item_params.update({title_col: "title_col", **{c: "text_cols" for c in text_cols}})
    item_table = _read_table(
        path, fmt, sep, encoding, None, [id_col, title_col, *text_cols], item_params
    )
    _check_types(item_table, {id_col: "id", title_col: "text", **{c: "field" for c in text_cols}})
    catalogue_ids, catalogue_ok = _ids(item_table, id_col, drop=drop_invalid_ids)
    if drop_invalid_ids:
        notes["items_with_invalid_id_dropped"] = int((~catalogue_ok).sum())
        if not catalogue_ok.all():
            item_table.frame = item_table.frame[catalogue_ok]
            catalogue_ids = catalogue_ids[catalogue_ok].reset_index(drop=True)
    notes["items_duplicate_ids_dropped"] = int(catalogue_ids.duplicated().sum())
    return _catalogue_columns(item_table, catalogue_ids, title_col, text_cols)


def _join_catalogue(
    inter: pd.DataFrame,
    raw_items: pd.DataFrame,
    text_cols: Sequence[str],
    notes: dict[str, int],
    items_path: Path,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per item (conflicting titles resolved), and the interactions whose item has
    a title; what was dropped goes into ``notes``."""
    catalogue, untitled, conflicts = _collapse_items(raw_items, [str(c) for c in text_cols])
    notes["items_with_conflicting_titles"] = conflicts
    inter, catalogue, kept = attach_catalogue(inter, catalogue, untitled)
    notes.update(kept)
    if inter.empty:
        raise DataError(
            "no interaction refers to an item with a title; check item_col/items_item_col "
            "and that both files use the same item ids",
            path=items_path,
        )
    return inter, catalogue


# ------------------------------------------------------------------------- reading


@dataclass
class _Table:
    """The requested columns of one file, raw, plus a way back to file positions."""

    path: Path
    fmt: str
    frame: pd.DataFrame
    available: list[str]
    locate: Callable[[int], int | None]
    unit: str  # "line" for text files, "row"/"record" where lines mean nothing
    types: dict[str, Any] | None = None  # Parquet: the Arrow type of each read column

    @property
    def n_rows(self) -> int:
        return len(self.frame)

    def error(self, index: int, column: str, message: str) -> DataError:
        """A DataError for the ``index``-th data row (0-based, of the current frame) and
        ``column``; rows dropped since reading keep their original positions."""
        pos = self.locate(int(self.frame.index[index]))
        if self.unit == "line":
            return DataError(message, path=self.path, line=pos, field=column)
        return DataError(f"{self.unit} {pos}: {message}", path=self.path, field=column)


def detect_format(path: str | Path, fmt: str | None = None) -> str:
    """The table format of ``path``: ``fmt`` if given, else from its (.gz-stripped) suffix."""
    if fmt is not None:
        key = fmt.lower().lstrip(".")
        key = {"tab": "tsv", "ndjson": "jsonl", "pq": "parquet"}.get(key, key)
        if key not in FORMATS:
            raise DataError(
                f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}", field="fmt"
            )
        return key
    name = Path(path).name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    suffix = Path(name).suffix
    if suffix not in _SUFFIXES:
        raise DataError(
            f"cannot tell the format from the extension {suffix or '(none)'!r}; expected "
            f"one of {', '.join(_SUFFIXES)} (optionally .gz) or pass fmt= "
            f"({', '.join(FORMATS)})",
            path=path,
        )
    return _SUFFIXES[suffix]


def _read_table(
    path: Path,
    fmt: str | None,
    sep: str | None,
    encoding: str,
    names: Sequence[str] | None,
    columns: list[str],
    params: dict[str, str],
    numeric: Sequence[str] = (),
) -> _Table:
    kind = detect_format(path, fmt)
    if kind in ("csv", "tsv"):
        delimiter = sep or ("\t" if kind == "tsv" else ",")
        return _read_delimited(path, kind, delimiter, encoding, names, columns, params, numeric)
    if kind == "parquet":
        return _read_parquet(path, columns, params)
    if kind == "json" and _first_char(path) == "[":
        return _read_json_array(path, encoding, columns, params)
    return _read_json_lines(path, kind, encoding, columns, params)


def _missing_column(
    path: Path, column: str, available: Sequence[str], params: dict[str, str]
) -> DataError:
    shown = ", ".join(repr(c) for c in list(available)[:50])
    if len(available) > 50:
        shown += f", ... ({len(available)} in all)"
    close = difflib.get_close_matches(column, [str(c) for c in available], n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    param = params.get(column)
    how = f" (set {param}=...)" if param else ""
    return DataError(
        f"column not found{how}; available columns: {shown or '(none)'}{hint}",
        path=path,
        field=column,
    )


def _check_columns(
    path: Path, columns: list[str], available: Sequence[str], params: dict[str, str]
) -> None:
    present = set(available)
    for col in columns:
        if col not in present:
            raise _missing_column(path, col, available, params)


def _read_delimited(
    path: Path,
    kind: str,
    sep: str,
    encoding: str,
    names: Sequence[str] | None,
    columns: list[str],
    params: dict[str, str],
    numeric: Sequence[str],
) -> _Table:
    pd_encoding = (
        "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    )
    options: dict[str, Any] = {
        "sep": sep,
        "engine": "python" if len(sep) > 1 else "c",
        "header": None if names else 0,
        "names": list(names) if names else None,
    }
    args = (path, encoding, pd_encoding, options, columns, params, numeric)
    read = _read_delimited_frame(*args, escape=False)
    if read is None:  # a pandas < 3 met a NUL: read again with NULs escaped (_NulEscaper)
        read = _read_delimited_frame(*args, escape=True)
    assert read is not None
    table, available = read
    if table.empty:
        raise DataError(f"no data rows after the header (a {kind.upper()} file)", path=path)

    def locate(index: int) -> int | None:
        return _delimited_line(path, sep, encoding, has_header=not names, index=index)

    return _Table(path, kind, table, available, locate, "line")


def _read_delimited_frame(
    path: Path,
    encoding: str,
    pd_encoding: str,
    options: dict[str, Any],
    columns: list[str],
    params: dict[str, str],
    numeric: Sequence[str],
    *,
    escape: bool,
) -> tuple[pd.DataFrame, list[str]] | None:
    """The wanted columns of a CSV/TSV file and all its column names; None when, not
    escaping, a zero byte went by and this pandas cuts fields at NULs (read again with
    ``escape``: every NUL escaped before pandas and restored in its result)."""
    restart = not escape and options["engine"] == "c" and _c_parser_cuts_nul()
    seen_nul = False

    def source() -> tuple[IO[bytes], dict[str, Any]]:
        # every read goes through the line cap (gzip decompressed on the way)
        capped = open_capped(path)
        if escape:
            escaped = io.BufferedReader(_NulEscaper(capped, pd_encoding), 1 << 16)
            return escaped, {**options, "encoding": "utf-8"}
        return capped, {**options, "encoding": pd_encoding}

    def read_header() -> pd.DataFrame:
        nonlocal seen_nul
        fh, opts = source()
        with fh:
            header = pd.read_csv(fh, nrows=0, **opts)
            seen_nul = _saw_nul(fh)
        return header

    header = _pandas_read(path, encoding, read_header)
    if restart and seen_nul:
        return None
    read_names = [str(c) for c in header.columns]  # the names pandas uses (escaped ones)
    from_file = options["names"] is None
    available = [_unescape_nul(c) for c in read_names] if escape and from_file else read_names
    _check_columns(path, columns, available, params)
    wanted = list(dict.fromkeys(columns))

    # ids and text stay strings ("007" is not 7); times and ratings are left to the
    # C parser's number conversion, much faster than converting strings afterwards
    dtypes = {r: object for r, c in zip(read_names, available, strict=True) if c not in numeric}

    def read_all() -> pd.DataFrame:
        # No usecols: with it pandas silently accepts rows with too many fields. Chunks
        # keep memory bounded while every field of every row is still tokenised.
        nonlocal seen_nul
        fh, opts = source()
        with fh:
            chunks = pd.read_csv(fh, dtype=dtypes, na_filter=False, chunksize=_CHUNK_ROWS, **opts)
            parts = []
            for chunk in chunks:
                if escape:
                    chunk.columns = pd.Index(available)
                    _restore_nul(chunk)
                parts.append(chunk[wanted])
            seen_nul = _saw_nul(fh)
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=wanted)

    frame = _pandas_read(path, encoding, read_all)
    if restart and seen_nul:
        return None
    return frame, available


# A NUL ends a field for the C parser of pandas < 3 ('u1\x00' is read as 'u1', a title of
# one NUL as ''), which would hide it from the id rule and lose text that pandas 3 keeps.
# Such a pandas reads a file holding a zero byte through _NulEscaper: NUL becomes ESC '0'
# and ESC itself ESC ESC (ESC a Unicode noncharacter, ordinary text to the parser), and
# _restore_nul undoes this in every text cell and column name. The fields and values come
# out as pandas 3 reads them; files without a zero byte are read once, unchanged.
_ESC = "\ufdd0"
_ESCAPES = str.maketrans({"\x00": _ESC + "0", _ESC: _ESC + _ESC})
_ESCAPED = re.compile(_ESC + "(.)", re.DOTALL)


def _unescape_nul(text: str) -> str:
    return _ESCAPED.sub(lambda m: "\x00" if m.group(1) == "0" else _ESC, text)


@functools.cache
def _c_parser_cuts_nul() -> bool:
    """Whether this pandas' C CSV parser drops text after a NUL inside a field."""
    probe = pd.read_csv(io.BytesIO(b"a\nx\x00y\n"), dtype=object, engine="c")
    return bool(probe["a"].iloc[0] != "x\x00y")


def _saw_nul(fh: IO[bytes]) -> bool:
    raw = getattr(fh, "raw", None)
    return bool(getattr(raw, "saw_nul", False))


class _NulEscaper(io.RawIOBase):
    """The text of ``inner`` (decoded as ``encoding``, line ends untouched) as UTF-8 with
    NUL and the escape character escaped (see ``_ESCAPES``)."""

    def __init__(self, inner: IO[bytes], encoding: str) -> None:
        self.text = io.TextIOWrapper(inner, encoding=encoding, newline="")
        self.pending = b""
        self.offset = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while self.offset >= len(self.pending):
            chunk = self.text.read(1 << 16)
            if not chunk:
                return 0
            self.pending, self.offset = chunk.translate(_ESCAPES).encode("utf-8"), 0
        view = memoryview(buffer).cast("B")
        n = min(len(view), len(self.pending) - self.offset)
        view[:n] = self.pending[self.offset : self.offset + n]
        self.offset += n
        return n

    def close(self) -> None:
        self.text.close()
        super().close()


def _restore_nul(frame: pd.DataFrame) -> None:
    """Undo ``_ESCAPES`` in the text columns of ``frame``, in place."""
    for col in frame.columns:
        values = frame[col]
        if not (ptypes.is_object_dtype(values) or ptypes.is_string_dtype(values)):
            continue
        marked = values.map(lambda v: isinstance(v, str) and _ESC in v).to_numpy(dtype=bool)
        if marked.any():
            values = values.copy()
            values[marked] = values[marked].map(_unescape_nul)
            frame[col] = values


def _pandas_read(path: Path, encoding: str, read: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    """Run a pandas reader, turning its exceptions into DataErrors that say where."""
    try:
        return read()
    except UnicodeDecodeError:
        pass  # located below, outside the handler, so the report is not a chained one
    except LookupError:
        raise DataError(
            f"unknown text encoding {encoding!r}", path=path, field="encoding"
        ) from None
    except pd.errors.EmptyDataError:
        raise DataError(
            "file has no header and no data (empty after decompression?)", path=path
        ) from None
    except pd.errors.ParserError as e:
        found = re.search(r"line (\d+)", str(e))
        raise DataError(
            f"malformed row: {str(e).splitlines()[-1].strip()}",
            path=path,
            line=int(found.group(1)) if found else None,
        ) from None
    except (OSError, EOFError, ValueError) as e:
        raise DataError(f"cannot read the file: {e}", path=path) from None
    for _ in iter_lines(path, encoding):  # raises at the first undecodable line
        pass
    raise DataError(f"cannot decode the file as {encoding}; pass encoding=...", path=path)


def _delimited_line(
    path: Path, sep: str, encoding: str, *, has_header: bool, index: int
) -> int | None:
    """Physical 1-based line where data row ``index`` starts; rescans the file (errors only)."""
    with (
        open_binary(path) as raw,
        io.TextIOWrapper(raw, encoding=encoding, errors="replace", newline="") as fh,
    ):
        if len(sep) > 1:  # pandas' python engine: no quoting across lines, blank lines skipped
            rows = ((n, line) for n, line in enumerate(fh, start=1) if line.strip())
        else:
            # a field may be as long as a line may be (the default limit, 128 KiB, made
            # locating a row with a long id end in a csv.Error)
            csv.field_size_limit(max(csv.field_size_limit(), _lines.MAX_LINE_BYTES))
            reader = csv.reader(fh, delimiter=sep)
            rows = _csv_starts(reader)
        row = -1 if has_header else 0
        for start, _ in rows:
            if row == index:
                return start
            row += 1
    return None


def _csv_starts(reader: Any) -> Any:
    end = 0
    for record in reader:
        start, end = end + 1, reader.line_num
        if record:  # pandas skips blank lines
            yield start, record


def _read_parquet(path: Path, columns: list[str], params: dict[str, str]) -> _Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        source: Any = path
        if is_gzip(path):
            with gzip.open(path) as fh:
                source = io.BytesIO(read_capped(fh, path))
        parquet = pq.ParquetFile(source)
        available = list(parquet.schema_arrow.names)
        _check_columns(path, columns, available, params)
        arrow = parquet.read(columns=list(dict.fromkeys(columns)))
        frame = arrow.to_pandas()
    except (pa.ArrowException, OSError, EOFError) as e:
        raise DataError(f"not a readable Parquet file: {e}", path=path) from None
    if frame.empty:
        raise DataError("Parquet file has no rows", path=path)
    types = {name: arrow.schema.field(name).type for name in arrow.schema.names}
    return _Table(path, "parquet", frame, available, lambda i: i + 1, "row", types)


def _type_ok(role: str, t: Any) -> bool:
    """Whether a Parquet column of Arrow type ``t`` can hold values of ``role``."""
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_null(t):
        return role != "id"
    text = pa.types.is_string(t) or pa.types.is_large_string(t)
    integer = pa.types.is_integer(t)
    if role == "id":
        return text or integer
    if role in ("text", "field"):
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            return _type_ok(role, t.value_type)
        if role == "field":  # text fields may be numbers or dates too (a year, a price)
            return text or not (
                pa.types.is_binary(t)
                or pa.types.is_large_binary(t)
                or pa.types.is_fixed_size_binary(t)
                or pa.types.is_struct(t)
                or pa.types.is_map(t)
            )
        return text
    if role == "number":
        return text or integer or pa.types.is_floating(t) or pa.types.is_decimal(t)
    # time: epoch numbers, dates, timestamps or date text
    return (
        text
        or integer
        or pa.types.is_floating(t)
        or pa.types.is_timestamp(t)
        or pa.types.is_date(t)
    )


_EXPECTED = {
    "id": "string or integer ids",
    "text": "strings (or lists of strings)",
    "field": "text, numbers or dates (not bytes or records)",
    "number": "numbers (or numeric strings)",
    "time": "timestamps, dates, epoch numbers or date strings",
}


def _check_types(table: _Table, roles: dict[str, str]) -> None:
    """Parquet columns must have a type their role can use; other formats are checked
    value by value."""
    if table.types is None:
        return
    for column, role in roles.items():
        t = table.types.get(column)
        if t is not None and not _type_ok(role, t):
            raise DataError(
                f"Parquet column has type {t}; expected {_EXPECTED[role]}",
                path=table.path,
                field=column,
            )


def _first_char(path: Path) -> str:
    with open_binary(path) as fh:
        head = fh.read(4096).decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    return head[:1]


def _read_json_array(
    path: Path, encoding: str, columns: list[str], params: dict[str, str]
) -> _Table:
    try:
        with open_binary(path) as fh:
            data = json.loads(read_capped(fh, path).decode(encoding).lstrip("\ufeff"))
    except UnicodeDecodeError as e:
        raise DataError(
            f"cannot decode byte at offset {e.start} as {encoding}; pass encoding=...", path=path
        ) from None
    except json.JSONDecodeError as e:
        raise DataError(
            f"malformed JSON: {e.msg} at column {e.colno}", path=path, line=e.lineno
        ) from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError("expected a JSON array of objects (or JSON lines)", path=path)
    if not data:
        raise DataError("JSON array is empty", path=path)
    available = list(dict.fromkeys(k for r in data[:1000] for k in r))
    frame = pd.DataFrame({c: [r.get(c) for r in data] for c in dict.fromkeys(columns)})
    for col in columns:
        if frame[col].isna().all():
            raise _missing_column(path, col, available, params)
    return _Table(path, "json", frame, available, lambda i: i + 1, "record")


def _read_json_lines(
    path: Path, kind: str, encoding: str, columns: list[str], params: dict[str, str]
) -> _Table:
    wanted = list(dict.fromkeys(columns))
    values: dict[str, list[Any]] = {c: [] for c in wanted}
    lines: list[int] = []
    seen: set[str] = set()
    available: dict[str, None] = {}
    for line, rec in iter_records(path, encoding, python_literals=False):
        if len(lines) < 1000:
            available.update(dict.fromkeys(map(str, rec)))
        lines.append(line)
        for col in wanted:
            value = rec.get(col)
            values[col].append(value)
            if value is not None:
                seen.add(col)
    if not lines:
        raise DataError("no records (only blank lines)", path=path)
    for col in wanted:
        if col not in seen:
            raise _missing_column(path, col, list(available), params)
    frame = pd.DataFrame({c: pd.Series(v, dtype=object) for c, v in values.items()})
    return _Table(path, "jsonl", frame, list(available), lambda i: lines[i], "line")


# ---------------------------------------------------------------------- converting


def _as_text(series: pd.Series) -> pd.Series:
    """Raw values as stripped ``str`` objects; missing values become ''."""
    if ptypes.is_float_dtype(series):
        whole = series.dropna()
        if (whole == np.floor(whole)).all():  # ids stored as floats because of NaNs
            series = series.astype("Int64")
    values = series.astype(object)
    missing = values.isna()
    if missing.any():
        values = values.where(~missing, "")
    if ptypes.infer_dtype(values, skipna=False) != "string":
        values = values.map(str)
    return values.str.strip()


def _ids(table: _Table, column: str, *, drop: bool = False) -> tuple[pd.Series, np.ndarray]:
    """The column's ids as strings and the mask of valid rows (see whyrec.data.ids)."""
    return clean_ids(
        table.frame[column],
        lambda i, why: table.error(i, column, f"{why}; every row needs a string or integer id"),
        drop=drop,
    )


def _ratings(table: _Table, column: str) -> np.ndarray:
    raw = table.frame[column]
    if ptypes.is_numeric_dtype(raw) and not ptypes.is_bool_dtype(raw):
        return raw.astype("float64").to_numpy()
    text = _as_text(raw)
    numbers = pd.to_numeric(text.where(text != ""), errors="coerce")
    bad = (numbers.isna() & (text != "")).to_numpy()
    if bad.any():
        i = int(bad.argmax())
        raise table.error(i, column, f"expected a numeric rating (or empty), got {text.iloc[i]!r}")
    return numbers.astype("float64").to_numpy()


def _timestamps(table: _Table, column: str, time_format: str | None) -> tuple[np.ndarray, str]:
    """Unix seconds for every row, and how they were read (unit or format)."""
    raw = table.frame[column]
    if ptypes.is_datetime64_any_dtype(raw):
        parsed = raw.dt.tz_localize("UTC") if raw.dt.tz is None else raw.dt.tz_convert("UTC")
        return _datetime_seconds(table, column, parsed, raw, "a timestamp"), "datetime"
    numeric_dtype = ptypes.is_numeric_dtype(raw) and not ptypes.is_bool_dtype(raw)
    text = raw if numeric_dtype else _as_text(raw)
    if time_format is not None and time_format not in _UNITS:
        if "%" not in time_format:
            raise DataError(
                f"time_format {time_format!r} is neither a strptime format (with % codes) nor "
                f"an epoch unit ({', '.join(_UNITS)})",
                field="time_format",
            )
        parsed, beyond = _parse_dates(text, time_format)
        expected = f"a time in the format {time_format!r}"
        seconds = _datetime_seconds(table, column, parsed, text, expected, beyond)
        return seconds, time_format
    numbers = raw if numeric_dtype else pd.to_numeric(text.where(text != ""), errors="coerce")
    nonempty = (text != "").to_numpy() if not numeric_dtype else raw.notna().to_numpy()
    first = int(nonempty.argmax()) if nonempty.any() else 0
    if time_format in _UNITS or numeric_dtype or pd.notna(numbers.iloc[first]):
        bad = numbers.isna().to_numpy()
        if bad.any():
            i = int(bad.argmax())
            raise table.error(
                i,
                column,
                f"expected a unix timestamp (a number, like the first row's), got "
                f"{_shown(text.iloc[i])}",
            )
        unit = time_format or _guess_unit(numbers)
        if ptypes.is_integer_dtype(numbers):
            seconds = numbers.astype("int64").to_numpy() // _UNITS[unit]
        else:
            seconds = np.floor(numbers.astype("float64").to_numpy() / _UNITS[unit])
        _check_range(table, column, seconds, text, f"unix {unit}")
        return seconds.astype("int64"), unit
    parsed, beyond = _parse_dates(text, "ISO8601")
    expected = (
        "an ISO-8601 date or datetime such as 2019-03-01 or 2019-03-01T12:30:00Z "
        "(pass time_format='%d/%m/%Y' or similar for other layouts)"
    )
    return _datetime_seconds(table, column, parsed, text, expected, beyond), "iso8601"


def _parse_dates(text: pd.Series, fmt: str) -> tuple[pd.Series, np.ndarray]:
    """``text`` parsed as UTC times in ``fmt`` (NaT where it cannot be), and the mask of
    rows that are valid times outside the years this pandas can hold.

    pandas 3 parses text at microseconds (years 1-9999); pandas 2 only at nanoseconds
    (1677-2262), where year 9999 is as much NaT as "garbage" is. Both lie outside
    1900-2200, so such rows are told apart by parsing them alone: an out-of-bounds error
    means a valid but out-of-range time. Only NaT rows are looked at, in file order up to
    the first one that is not a time (that row is the error then); under pandas 3 that is
    the first NaT row, and nothing is found beyond.
    """
    parsed = pd.to_datetime(text, format=fmt, utc=True, errors="coerce")
    beyond = np.zeros(len(parsed), dtype=bool)
    seen: dict[Any, bool] = {}
    for i in np.flatnonzero(parsed.isna().to_numpy()):
        value = text.iloc[i]
        if value not in seen:
            try:
                pd.to_datetime([value], format=fmt, utc=True)
                seen[value] = False  # NaT without an error: an empty or missing value
            except pd.errors.OutOfBoundsDatetime:
                seen[value] = True
            except (ValueError, TypeError):
                seen[value] = False
        if not seen[value]:
            break
        beyond[i] = True
    return parsed, beyond


def _guess_unit(numbers: pd.Series) -> str:
    """Epoch unit from magnitude: 1e11 s is year 5138, so larger values are finer units."""
    typical = float(np.nanmedian(np.abs(numbers.astype("float64").to_numpy())))
    if typical >= 1e17:
        return "ns"
    if typical >= 1e14:
        return "us"
    if typical >= 1e11:
        return "ms"
    return "s"


def _datetime_seconds(
    table: _Table,
    column: str,
    parsed: pd.Series,
    shown: pd.Series,
    expected: str,
    beyond: np.ndarray | None = None,
) -> np.ndarray:
    """Unix seconds of ``parsed``; rows marked in ``beyond`` (valid times pandas cannot
    hold, see _parse_dates) are out of range."""
    bad = parsed.isna().to_numpy()
    if beyond is not None:
        bad = bad & ~beyond
    if bad.any():
        i = int(bad.argmax())
        raise table.error(i, column, f"expected {expected}, got {_shown(shown.iloc[i])}")
    # In microseconds first: pandas parses year 1 or 9999 at a coarser unit, and the
    # nanoseconds a subtraction from a nanosecond epoch needs cannot hold them (that
    # overflow ended `data prepare` in an OutOfBoundsDatetime traceback).
    micros = pd.DatetimeIndex(parsed).as_unit("us").asi8
    seconds = micros // 1_000_000
    if beyond is not None and beyond.any():
        seconds = np.where(beyond, _MAX_SECONDS + 1, seconds)
    _check_range(table, column, seconds, shown, "time")
    return seconds


def _check_range(
    table: _Table, column: str, seconds: np.ndarray, shown: pd.Series, what: str
) -> None:
    bad = (seconds < _MIN_SECONDS) | (seconds > _MAX_SECONDS)
    if bad.any():
        i = int(bad.argmax())
        if what == "time":  # a date as written: the unit cannot be the problem
            message = f"{_shown(shown.iloc[i])} is outside the years 1900-2200 whyrec accepts"
        else:
            message = (
                f"{_shown(shown.iloc[i])} read as {what} falls outside 1900-2200; set "
                "time_format to the right unit (s, ms, us, ns) or layout"
            )
        raise table.error(i, column, message)


def _shown(value: Any) -> str:
    return "an empty value" if value == "" or value is None else snippet(str(value))


def _catalogue_columns(
    table: _Table, item_ids: pd.Series, title_col: str, text_cols: Sequence[str]
) -> pd.DataFrame:
    """Item rows (id, cleaned title and text) in file order, repeats removed first.

    In a single-file log every interaction repeats its item's fields; dropping exact
    repeats before cleaning keeps the per-value Python work to the distinct rows.
    """
    raw = pd.DataFrame({"item_id": item_ids.to_numpy()})
    sources = [title_col, *text_cols]
    for k, col in enumerate(sources):
        raw[f"_{k}"] = table.frame[col].to_numpy()
    try:
        raw = raw.drop_duplicates(ignore_index=True)
    except TypeError:
        pass  # list values (JSON) are unhashable: clean every row instead
    columns: dict[str, Any] = {"item_id": raw["item_id"], "title": raw["_0"].map(clean_title)}
    for k, col in enumerate(text_cols, start=1):
        columns[str(col)] = raw[f"_{k}"].map(join_text)
    return pd.DataFrame(columns)


def _collapse_items(
    raw_items: pd.DataFrame, text_cols: list[str]
) -> tuple[pd.DataFrame, list[str], int]:
    """One row per item: first non-empty title and text per column, in first-seen order.

    Returns the titled items, the ids of items that never had a title, and how many items
    carried more than one distinct title (the first one wins).
    """
    blanked = raw_items.mask(raw_items == "")
    titles_per_item = blanked.groupby("item_id", sort=False)["title"].nunique()
    collapsed = blanked.groupby("item_id", sort=False).first().reset_index()
    collapsed = collapsed[["item_id", "title", *[c for c in text_cols if c != "title"]]]
    collapsed = collapsed.fillna("").astype(str)
    titled = collapsed["title"] != ""
    untitled = collapsed.loc[~titled, "item_id"].tolist()
    return collapsed[titled].reset_index(drop=True), untitled, int((titles_per_item > 1).sum())
