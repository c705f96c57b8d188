"""Helpers shared by the loaders: line-oriented reading, text cleaning, catalogue joins.

Public dumps come plain or gzipped, as JSON lines or as Python ``repr`` lines (Amazon 2014
metadata, Steam). These helpers open either transparently, stream lines with 1-based
numbers and turn every failure into a :class:`DataError` that names the file and line,
so a bad line in a 10-GB file can be found without guessing.
"""

from __future__ import annotations

import ast
import codecs
import gzip
import html
import io
import json
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import pandas as pd

from whyrec.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
_SNIPPET = 80
#: Longest line any loader reads, in bytes after decompression (a line of a JSON-lines or
#: Python-literal file, or a physical line of a CSV/TSV file). Longer is a DataError naming
#: the file, the line and this cap, raised after reading at most this many bytes of the
#: line: a 1 MB gzip holding 1 GB of zeros once took 2.4 GB of memory before its error.
MAX_LINE_BYTES = 16 * 1024 * 1024
#: Largest whole document read at once (a JSON array file, a gzipped Parquet file), in
#: bytes after decompression.
MAX_DOCUMENT_BYTES = 256 * 1024 * 1024


def check_file(path: str | Path, role: str = "input") -> Path:
    """Return ``path`` as a Path after checking it is an existing, non-empty file."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{role} file does not exist", path=p)
    if not p.is_file():
        raise DataError(f"{role} path is not a regular file", path=p)
    if p.stat().st_size == 0:
        raise DataError(f"{role} file is empty (0 bytes)", path=p)
    return p


def is_gzip(path: str | Path) -> bool:
    """True when the file starts with the gzip magic bytes, whatever its name."""
    with open(path, "rb") as fh:
        return fh.read(2) == GZIP_MAGIC


def open_binary(path: str | Path) -> IO[bytes]:
    """Open a file for binary reading, decompressing gzip transparently."""
    if is_gzip(path):
        return gzip.open(path, "rb")
    return open(path, "rb")


def line_too_long(path: str | Path, line: int, cap: int) -> DataError:
    """The error for a line longer than ``cap`` bytes."""
    return DataError(
        f"line longer than the {cap:,}-byte cap for one line (after decompression); "
        "expected one record per line: is this the right file and format?",
        path=path,
        line=line,
    )


def read_capped(fh: IO[bytes], path: str | Path, cap: int | None = None) -> bytes:
    """All of ``fh`` (a whole JSON document, a gzipped Parquet file), or a DataError once
    more than ``cap`` (default :data:`MAX_DOCUMENT_BYTES`) bytes come out of it: at most
    ``cap + 1`` bytes are ever held."""
    cap = MAX_DOCUMENT_BYTES if cap is None else cap
    data = fh.read(cap + 1)
    if len(data) > cap:
        raise DataError(
            f"more than {cap:,} bytes after decompression, the cap for a file read whole; "
            "use JSON lines (one record per line) or an uncompressed Parquet file",
            path=path,
        )
    return data


def _bounded_lines(fh: IO[bytes], path: Path, cap: int) -> Iterator[tuple[int, bytes]]:
    """``(line_number, raw_line)`` with no line read past ``cap`` bytes (newline aside)."""
    lineno = 0
    while True:
        raw = fh.readline(cap + 1)
        if not raw:
            return
        lineno += 1
        if len(raw) > cap and raw[cap:] != b"\n":
            raise line_too_long(path, lineno, cap)
        yield lineno, raw


class LineCapReader(io.RawIOBase):
    """A binary stream passing ``inner`` through unchanged, but raising the
    :func:`line_too_long` error as soon as a physical line exceeds ``cap`` bytes.

    pandas reads CSV/TSV through it, so a file without line breaks costs ``cap`` bytes of
    memory, not its decompressed size. Reads are at most ``cap`` bytes, so a line that
    fits in one read is short enough; longer ones span reads and are counted across them.
    ``saw_nul`` tells whether a zero byte has gone through (see ``generic._read_delimited``).
    """

    def __init__(self, inner: IO[bytes], path: str | Path, cap: int) -> None:
        self.inner = inner
        self.path = path
        self.cap = cap
        self.run = 0  # bytes since the last newline
        self.newlines = 0
        self.saw_nul = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.inner.read(min(len(view), self.cap))
        n = len(data)
        first = data.find(b"\n")
        if first < 0:
            self.run += n
        else:
            self.run += first
            if self.run <= self.cap:
                self.newlines += data.count(b"\n")
                self.run = n - data.rfind(b"\n") - 1
        if self.run > self.cap:
            raise line_too_long(self.path, self.newlines + 1, self.cap)
        if not self.saw_nul and b"\x00" in data:
            self.saw_nul = True
        view[:n] = data
        return n

    def close(self) -> None:
        self.inner.close()
        super().close()


def open_capped(path: str | Path, cap: int | None = None) -> IO[bytes]:
    """:func:`open_binary` (gzip transparently) behind a :class:`LineCapReader` (default
    cap :data:`MAX_LINE_BYTES`)."""
    cap = MAX_LINE_BYTES if cap is None else cap
    return io.BufferedReader(LineCapReader(open_binary(path), path, cap))


def _ascii_compatible(encoding: str) -> bool:
    try:
        return "\n{".encode(encoding) == b"\n{"
    except LookupError:
        raise DataError(f"unknown text encoding {encoding!r}", field="encoding") from None


def iter_lines(
    path: str | Path, encoding: str = "utf-8", *, max_line_bytes: int | None = None
) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for each non-blank line, numbers 1-based.

    Lines are decoded one at a time, so an undecodable byte is reported at its exact
    line together with the encoding that was expected. No line is read past
    ``max_line_bytes`` (characters for UTF-16/32 files): a longer one is a DataError
    naming the file, the line and the cap (default :data:`MAX_LINE_BYTES`).
    """
    path = Path(path)
    max_line_bytes = MAX_LINE_BYTES if max_line_bytes is None else max_line_bytes
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise DataError(
            f"unknown text encoding {encoding!r}", path=path, field="encoding"
        ) from None
    lineno = 0
    try:
        with open_binary(path) as fh:
            if _ascii_compatible(encoding):
                for lineno, raw in _bounded_lines(fh, path, max_line_bytes):
                    try:
                        text = raw.decode(encoding)
                    except UnicodeDecodeError as e:
                        raise DataError(
                            f"cannot decode byte {raw[e.start : e.start + 1]!r} at column "
                            f"{e.start + 1} as {encoding}; pass encoding=... if the file "
                            "uses another encoding",
                            path=path,
                            line=lineno,
                        ) from None
                    if lineno == 1 and text.startswith("\ufeff"):
                        text = text[1:]
                    if text.strip():
                        yield lineno, text
            else:  # UTF-16/32: decode the stream, lines cannot be split on raw bytes
                reader = io.TextIOWrapper(fh, encoding=encoding, newline=None)
                try:
                    while text := reader.readline(max_line_bytes + 1):
                        lineno += 1
                        if len(text) > max_line_bytes and text[max_line_bytes:] != "\n":
                            raise line_too_long(path, lineno, max_line_bytes)
                        if lineno == 1 and text.startswith("\ufeff"):
                            text = text[1:]
                        if text.strip():
                            yield lineno, text
                except UnicodeDecodeError:
                    raise DataError(
                        f"cannot decode text as {encoding}; pass encoding=... if the file "
                        "uses another encoding",
                        path=path,
                        line=lineno + 1,
                    ) from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataError(
            f"corrupt or truncated gzip data after line {lineno} ({e or type(e).__name__})",
            path=path,
            line=lineno + 1,
        ) from None


def snippet(text: str) -> str:
    """A short, single-line excerpt of ``text`` for error messages."""
    text = text.strip()
    return repr(text if len(text) <= _SNIPPET else text[:_SNIPPET] + "...")


def parse_record(
    text: str, path: str | Path, line: int, *, python_literals: bool = True
) -> dict[str, Any]:
    """Parse one line as a JSON object, or else (when allowed) as a Python dict literal.

    ``json.loads`` is tried first because it is several times faster; it fails on the
    first character of a ``{'key': ...}`` line, so the fallback costs little.
    ``ast.literal_eval`` only builds literals, never runs code.
    """
    try:
        obj = json.loads(text)
    except ValueError as json_err:
        if not python_literals:
            raise DataError(
                f"malformed line: expected a JSON object ({json_err.msg} at column "
                f"{json_err.colno}): {snippet(text)}",
                path=path,
                line=line,
            ) from None
        try:
            obj = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as lit_err:
            raise DataError(
                "malformed line: expected a JSON object or a Python dict literal "
                f"({type(lit_err).__name__}: {lit_err}): {snippet(text)}",
                path=path,
                line=line,
            ) from None
    if not isinstance(obj, dict):
        raise DataError(
            f"malformed line: expected an object/dict, got {type(obj).__name__}: {snippet(text)}",
            path=path,
            line=line,
        )
    return obj


def iter_records(
    path: str | Path, encoding: str = "utf-8", *, python_literals: bool = True
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, record)`` for every non-blank line of a (gzipped) lines file."""
    for line, text in iter_lines(path, encoding):
        yield line, parse_record(text, path, line, python_literals=python_literals)


def require(record: dict[str, Any], key: str, path: str | Path, line: int) -> Any:
    """``record[key]``, or a DataError naming the field and the keys the line does have."""
    value = record.get(key)
    if value is None or value == "":
        state = "is missing" if key not in record else f"is empty ({value!r})"
        raise DataError(
            f"required field {state}; the line has: {', '.join(sorted(map(str, record)))}",
            path=path,
            line=line,
            field=key,
        )
    return value


def is_missing(value: Any) -> bool:
    """None, NaN, pd.NA or NaT: the spellings of 'no value' that tables produce."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and value != value


def clean_title(value: Any, *, unescape: bool = False) -> str:
    """A title as one trimmed line ('' when absent); ``unescape`` decodes HTML entities."""
    if is_missing(value):
        return ""
    if isinstance(value, list):
        value = " ".join(str(v) for v in flatten(value))
    text = str(value)
    if unescape and "&" in text:
        text = html.unescape(text)
    if not text.isascii():
        text = repair_utf8(text)
    return " ".join(text.split())


def repair_utf8(text: str) -> str:
    """Undo UTF-8 bytes that were read as Latin-1 ('CafÃ©' -> 'Café').

    Python-2 ``repr`` lines (as in older dumps) spell non-ASCII text as UTF-8 byte
    escapes such as ``'Caf\\xc3\\xa9'``, which ``literal_eval`` reads as 'CafÃ©'. Genuine
    Latin-1 text almost never re-decodes as valid UTF-8, so the repair is safe.
    """
    try:
        return text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


def flatten(value: Any) -> Iterator[Any]:
    """Leaves of arbitrarily nested lists/tuples, in order."""
    if isinstance(value, list | tuple):
        for v in value:
            yield from flatten(v)
    elif not is_missing(value):
        yield value


def join_text(value: Any, sep: str = ", ", *, unescape: bool = False) -> str:
    """A text field as a plain string: nested lists flattened, blanks and repeats removed."""
    if is_missing(value):
        return ""
    parts: Iterable[Any] = flatten(value) if isinstance(value, list | tuple) else (value,)
    seen: dict[str, None] = {}
    for part in parts:
        text = clean_title(part, unescape=unescape)
        if text:
            seen.setdefault(text, None)
    return sep.join(seen)


def catalogue_frame(titled: dict[str, dict[str, str]]) -> pd.DataFrame:
    """Items table from ``{item_id: {"title": ..., field: text}}``, insertion order kept.

    A text field that no item fills is noise for the encoder, so it is left out.
    """
    rows = [{"item_id": item_id, **fields} for item_id, fields in titled.items()]
    items = pd.DataFrame(rows) if rows else pd.DataFrame({"item_id": [], "title": []})
    empty = [
        c
        for c in items.columns
        if c not in ("item_id", "title") and not items[c].astype(bool).any()
    ]
    return items.drop(columns=empty).astype(str)


def attach_catalogue(
    interactions: pd.DataFrame, items: pd.DataFrame, untitled: Iterable[str]
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """Keep interactions whose item is in ``items`` (all titled); count what was dropped.

    ``untitled`` holds ids whose metadata exists but has no usable title. Counts cover
    items that have interactions: those are the ones whose loss changes the data.
    """
    item_ids = interactions["item_id"]
    has_title = item_ids.isin(items["item_id"])
    no_title = item_ids.isin(set(untitled)) & ~has_title
    no_meta = ~(has_title | no_title)
    notes = {
        "items_without_title_dropped": int(item_ids[no_title].nunique()),
        "interactions_of_untitled_items_dropped": int(no_title.sum()),
        "items_without_metadata_dropped": int(item_ids[no_meta].nunique()),
        "interactions_without_metadata_dropped": int(no_meta.sum()),
    }
    return interactions[has_title].reset_index(drop=True), items.reset_index(drop=True), notes
