"""Hostile input files for ``whyrec data prepare``: dates out of range, ids with control
characters or a million characters, ids with "/", and lines without end (a gzip bomb).

Each must end in one ``error:`` line naming the file, the line and the field, exit 2,
with bounded memory; the legitimate cases next to them must still load."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from whyrec.cli import app
from whyrec.data.loaders import _lines, generic
from whyrec.data.loaders._lines import iter_lines
from whyrec.data.loaders.generic import load_table
from whyrec.errors import DataError

runner = CliRunner()


def prepare(tmp_path: Path, source: Path, *extra: str):
    out = tmp_path / "ds"
    args = ["data", "prepare", str(source), "--format", "table", "--out", str(out), *extra]
    return runner.invoke(app, args), out


def prepare_error(tmp_path: Path, source: Path, *extra: str) -> str:
    """The DataError ``whyrec data prepare`` ends in (the console script prints it as one
    ``error:`` line, exit 2: see test_the_console_script_prints_one_line)."""
    res, _ = prepare(tmp_path, source, *extra)
    assert isinstance(res.exception, DataError), (res.exception, res.output)
    return str(res.exception)


def log_csv(tmp_path: Path, bad_row: str, name: str = "log.csv") -> Path:
    """Three users with a few good rows each, then ``bad_row`` as line 8 of the file."""
    rows = [f"u{u},i{k},2019-0{k + 1}-01,Film {k}" for u in range(3) for k in range(2)]
    path = tmp_path / name
    text = "user_id,item_id,timestamp,title\n" + "\n".join(rows) + "\n" + bad_row + "\n"
    path.write_bytes(text.encode("utf-8"))
    return path


# ----------------------------------------------------------------------------- dates


@pytest.mark.parametrize(
    ("value", "extra"),
    [
        ("9999-12-31T23:59:59", ()),
        ("0001-01-01", ()),
        ("9999-12-31", ()),
        ("31/12/9999", ("--time-format", "%d/%m/%Y")),
        ("01/01/0001", ("--time-format", "%d/%m/%Y")),
        ("1899-12-31", ()),
    ],
)
def test_dates_out_of_range_are_one_clean_error(tmp_path, value, extra):
    src = log_csv(tmp_path, f"u0,i9,{value},Late film")
    if extra:  # the good rows in the same layout
        text = (
            src.read_text().replace("2019-01-01", "01/01/2019").replace("2019-02-01", "01/02/2019")
        )
        src.write_text(text)
    error = prepare_error(tmp_path, src, *extra)
    assert error.startswith(f"{src}:8: field 'timestamp':")
    assert "outside the years 1900-2200" in error


@pytest.mark.parametrize(
    ("rows", "line", "expected"),
    [
        # a value that is no date wins over one out of range, wherever it stands
        (["u0,i9,9999-12-31,F", "u1,i9,soon,F"], 9, "expected an ISO-8601 date"),
        (["u0,i9,soon,F", "u1,i9,0001-01-01,F"], 8, "expected an ISO-8601 date"),
        # else the first date out of range, whether pandas can hold it (1899) or not (9999)
        (["u0,i9,1899-12-31,F", "u1,i9,9999-12-31,F"], 8, "'1899-12-31' is outside"),
        (["u0,i9,9999-12-31,F", "u1,i9,1899-12-31,F"], 8, "'9999-12-31' is outside"),
        (
            ["u0,i9,2019-05-01,F", "u1,i9,9999-12-31,F", "u1,i8,9999-12-31,F"],
            9,
            "'9999-12-31' is outside",
        ),
    ],
)
def test_which_bad_date_is_reported(tmp_path, rows, line, expected):
    # the same on pandas 2 (nanoseconds: year 9999 parses to NaT, like "soon") and 3
    src = log_csv(tmp_path, "\n".join(rows))
    error = prepare_error(tmp_path, src)
    assert error.startswith(f"{src}:{line}: field 'timestamp':") and expected in error


@pytest.mark.parametrize(
    ("row", "expected"),
    [("u0,i9,9999-12-31,Late film", "field 'timestamp'"), ("3\x00,i1,2019-03-01,F", "U+0000")],
)
def test_the_console_script_prints_one_line(tmp_path, row, expected):
    src = log_csv(tmp_path, row)
    proc = subprocess.run(
        [sys.executable, "-m", "whyrec", "data", "prepare", str(src), "--format", "table",
         "--out", str(tmp_path / "ds")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: {src}:8: ") and expected in line


def test_out_of_range_dates_in_json_lines_and_parquet(tmp_path):
    recs = [{"user_id": "u1", "item_id": "i1", "timestamp": "2019-05-01", "title": "A"}] * 2
    recs.append({"user_id": "u1", "item_id": "i2", "timestamp": "9999-01-01", "title": "B"})
    jsonl = tmp_path / "log.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    with pytest.raises(DataError, match=r"log\.jsonl:3: field 'timestamp': .*1900-2200"):
        load_table(jsonl)
    frame = pd.DataFrame(recs)
    # through numpy: pandas 2 cannot parse year 9999 itself (it parses at nanoseconds)
    frame["timestamp"] = frame["timestamp"].to_numpy().astype("datetime64[us]")
    pq = tmp_path / "log.parquet"
    frame.to_parquet(pq)
    with pytest.raises(DataError, match=r"row 3: .*1900-2200"):
        load_table(pq)


# ------------------------------------------------------------------------------- ids


@pytest.mark.parametrize(
    ("user", "code"),
    [("3\x00", "U+0000"), ("u\x1b[31m", "U+001B"), ("abc\u202egpj.exe", "U+202E"),
     ("a\u2066b", "U+2066"), ("x\x85y", "U+0085")],
)  # fmt: skip
def test_ids_with_control_characters_are_refused_at_load(tmp_path, user, code):
    src = log_csv(tmp_path, f"{user},i1,2019-03-01,Film 1")
    error = prepare_error(tmp_path, src)
    assert error.startswith(f"{src}:8: field 'user_id':") and code in error
    # the same rows can be dropped on request, counted in the manifest
    res, out = prepare(tmp_path, src, "--drop-invalid-ids", "--split", "none")
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["loading_notes"]["rows_with_invalid_id_dropped"] == 1


def test_a_nul_byte_no_longer_makes_a_second_user(tmp_path):
    src = log_csv(tmp_path, "u1\x00,i1,2019-03-01,Film 1")
    with pytest.raises(DataError, match="U\\+0000"):
        load_table(src)


@pytest.fixture(params=["native", "escaped"])
def nul_reading(request, monkeypatch):
    """CSV read as this pandas reads it, and through the NUL escaping pandas < 3 needs
    (forced here, so pandas 3 runs that path too)."""
    if request.param == "escaped":
        monkeypatch.setattr(generic, "_c_parser_cuts_nul", lambda: True)
    return request.param


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1", "utf-16"])
@pytest.mark.parametrize("packed", [False, True])
def test_nul_bytes_reach_the_loader_whatever_the_pandas(tmp_path, nul_reading, encoding, packed):
    esc = "\ufdd0"  # the escape character of the NUL escaping, in the data itself
    if encoding == "latin-1":
        esc = "\xff"  # latin-1 cannot write U+FDD0; the escaping is the same for any text
    text = (
        "user_id,item_id,timestamp,title,n\x00te\n"
        f"u1,i1,1600000000,\x00,a\n"
        f'u1,i2,1600000001,"{esc}0 and \x00{esc}\x00, quoted",b\n'
        f"u2,i3,1600000002,{esc}{esc}0\x00\x00,c\n"
        "u2,i1,1600000003,\x00,d\n"
    )
    data = text.encode(encoding)
    path = tmp_path / ("log.csv.gz" if packed else "log.csv")
    path.write_bytes(gzip.compress(data) if packed else data)
    raw = load_table(path, encoding=encoding, text_cols=["n\x00te"])
    assert raw.items["title"].tolist() == [
        "\x00",
        f"{esc}0 and \x00{esc}\x00, quoted",
        f"{esc}{esc}0\x00\x00",
    ]
    assert raw.items["n\x00te"].tolist() == ["a", "b", "c"]
    bad = tmp_path / "bad.csv"
    bad.write_bytes(text.replace("u2,i3", "u2\x00,i3").encode(encoding))
    with pytest.raises(DataError, match=r"bad\.csv:4: field 'user_id':.*U\+0000"):
        load_table(bad, encoding=encoding, text_cols=["n\x00te"])
    # a NUL in a header name is part of the name, as a header without it is another one
    with pytest.raises(DataError, match=r"field 'note': column not found.*'n\\x00te'"):
        load_table(path, encoding=encoding, text_cols=["note"])


def test_a_nul_in_a_number_column_is_an_error_not_a_cut(tmp_path, nul_reading):
    src = log_csv(tmp_path, "u0,i9,1600000000\x00,F")
    src.write_text(src.read_text().replace("2019-0", "155000000").replace("-01,", ","))
    with pytest.raises(DataError, match=r"log\.csv:8: field 'timestamp':.*'1600000000\\x00'"):
        load_table(src)


def test_a_million_character_id_is_refused(tmp_path):
    src = log_csv(tmp_path, f"{'u' * 1_000_000},i1,2019-03-01,Film 1")
    error = prepare_error(tmp_path, src)
    assert error.startswith(f"{src}:8: field 'user_id':") and "1,000,000 characters" in error
    assert len(error) < 2000  # the id itself is not repeated
    item = log_csv(tmp_path, f"u1,{'i' * 129},2019-03-01,Film 1", name="items.csv")
    with pytest.raises(DataError, match="field 'item_id': id of 129 characters; at most 128"):
        load_table(item)


def test_ids_with_slashes_and_128_characters_load(tmp_path):
    longest = "x" * 128
    src = log_csv(tmp_path, f"team/alice,{longest},2019-03-01,Film 1")
    raw = load_table(src)
    assert "team/alice" in set(raw.interactions["user_id"])
    assert longest in set(raw.interactions["item_id"])


@pytest.mark.parametrize("user", ["NaN", " ", "..", "."])
def test_blank_nan_and_dot_ids_are_refused(tmp_path, user):
    src = log_csv(tmp_path, f"{user},i1,2019-03-01,Film 1")
    with pytest.raises(DataError, match=r"log\.csv:8: field 'user_id'"):
        load_table(src)


# ----------------------------------------------------------------------- line cap


def test_line_cap_boundaries(tmp_path, monkeypatch):
    monkeypatch.setattr(_lines, "MAX_LINE_BYTES", 64)
    ok = tmp_path / "ok.jsonl"
    ok.write_bytes(b"x" * 64 + b"\n" + b"y" * 64)  # exactly the cap, with and without \n
    assert [len(t.rstrip("\n")) for _, t in iter_lines(ok)] == [64, 64]
    over = tmp_path / "over.jsonl.gz"
    over.write_bytes(gzip.compress(b"a\n" + b"z" * 65 + b"\n"))
    with pytest.raises(DataError, match=r"over\.jsonl\.gz:2: line longer than the 64-byte cap"):
        list(iter_lines(over))
    utf16 = tmp_path / "u16.jsonl"
    utf16.write_bytes(("a\n" + "z" * 65 + "\n").encode("utf-16"))
    with pytest.raises(DataError, match=r"u16\.jsonl:2: line longer than the 64-byte cap"):
        list(iter_lines(utf16, "utf-16"))


def test_csv_lines_are_capped_too(tmp_path, monkeypatch):
    monkeypatch.setattr(_lines, "MAX_LINE_BYTES", 100)
    src = log_csv(tmp_path, "u0,i1,2019-03-01," + "T" * 150)
    with pytest.raises(DataError, match=r"log\.csv:8: line longer than the 100-byte cap"):
        load_table(src)
    gz = tmp_path / "log.csv.gz"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    with pytest.raises(DataError, match=r"log\.csv\.gz:8: line longer than the 100-byte cap"):
        load_table(gz)
    fine = log_csv(tmp_path, "u0,i1,2019-03-01," + "T" * 60, name="fine.csv")
    assert len(load_table(fine).interactions) == 7


MEASURE = """
import sys
from whyrec.cli import main
sys.argv = ["whyrec", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
# the peak of this process's own memory: VmHWM (ru_maxrss would also count the pytest
# process this one was forked from, which Linux carries across exec)
status = open("/proc/self/status").read()
peak = int(status.split("VmHWM:")[1].split()[0])
print(f"peak_kb={peak} code={code}", file=sys.stderr)
"""


@pytest.mark.parametrize("fmt", ["amazon", "table"])
def test_a_gzip_bomb_fails_with_bounded_memory(tmp_path, fmt):
    bomb = tmp_path / "reviews.json.gz"
    zeros = b"\0" * (1 << 20)
    with gzip.open(bomb, "wb", compresslevel=1) as fh:
        for _ in range(1024):  # 1 GiB of zeros without a line break
            fh.write(zeros)
    meta = tmp_path / "meta.json.gz"
    meta.write_bytes(gzip.compress(b'{"asin": "a", "title": "A"}\n'))
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, "data", "prepare", str(bomb), "--format", fmt,
         "--items", str(meta), "--out", str(tmp_path / "ds")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr
    assert f"{bomb}:1: line longer than the 16,777,216-byte cap" in proc.stderr
    peak_mb = int(proc.stderr.split("peak_kb=")[1].split()[0]) / 1024
    assert "code=2" in proc.stderr
    assert peak_mb < 600, f"peak memory {peak_mb:.0f} MB"  # ~150 MB; was 2.4 GB
