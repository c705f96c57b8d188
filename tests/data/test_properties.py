"""Property-based tests (hypothesis) of the loaders' id, timestamp and text parsing.

Whatever a file holds, loading ends in a dataset or in a DataError naming the file —
never in another exception — and what loads is what the file said: ids as the one id
rule keeps them, times as the exact seconds, titles as one line. Seeded
(``derandomize``) with small example counts: the same cases every run, in seconds.
"""

from __future__ import annotations

import calendar
import csv
import datetime as dt
import io
import json
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from whyrec.data.ids import MAX_ID_LENGTH, check_id, clean_ids
from whyrec.data.loaders._lines import clean_title, parse_record
from whyrec.data.loaders.generic import load_table
from whyrec.errors import DataError

SETTINGS = settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
# any text, control characters, bidi controls and lone surrogates included
TEXT = st.text(st.characters(codec=None), max_size=140)
ID_LIKE = st.one_of(
    TEXT,
    st.sampled_from(["NaN", "nan", "None", " ", ".", "..", "a/b", "x" * 128, "x" * 129]),
    st.from_regex(r"[A-Za-z0-9/_.-]{1,20}", fullmatch=True),
)


@pytest.fixture(scope="module")
def workdir():
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def _jsonl(path: Path, rows: list[dict]) -> Path:
    # ASCII JSON: lone surrogates are written as \\u escapes, as other programs do
    path.write_text(
        "\n".join(json.dumps(r, ensure_ascii=True) for r in rows) + "\n", encoding="utf-8"
    )
    return path


def _error(i: int, why: str) -> DataError:
    return DataError(f"row {i + 1}: {why}", field="user_id")


@SETTINGS
@given(value=ID_LIKE)
def test_one_id_rule_for_the_loader_and_the_api(value):
    try:
        api = check_id(value)
    except ValueError:
        api = None
    try:
        text, ok = clean_ids(pd.Series([value, "u-fine"], dtype=object), _error)
        loaded = text.iloc[0]
    except DataError as exc:
        assert str(exc).startswith("field 'user_id': row 1:")
        loaded = None
    assert loaded == api  # the same verdict, the same stripped id
    if api is not None:
        assert 0 < len(api) <= MAX_ID_LENGTH and api == api.strip()


@SETTINGS
@given(user=ID_LIKE, item=st.integers(min_value=-(2**70), max_value=2**70))
def test_ids_round_trip_through_a_file_or_fail_naming_it(workdir, user, item):
    rows = [
        {"user_id": user, "item_id": item, "timestamp": 1_600_000_000, "title": "A"},
        {"user_id": user, "item_id": item, "timestamp": 1_600_000_001, "title": "A"},
    ]
    path = _jsonl(workdir / "ids.jsonl", rows)
    try:
        raw = load_table(path)
    except DataError as exc:
        assert str(exc).startswith(str(path))
        return
    assert set(raw.interactions["user_id"]) == {check_id(user)}
    assert set(raw.interactions["item_id"]) == {str(item)}


@SETTINGS
@given(
    when=st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2199, 12, 31)),
    layout=st.sampled_from(["iso", "iso-z", "date", "dmy"]),
)
def test_times_in_range_load_as_their_exact_seconds(workdir, when, layout):
    when = when.replace(microsecond=0)
    text = {
        "iso": when.isoformat(),
        "iso-z": when.isoformat() + "Z",
        "date": when.date().isoformat(),
        "dmy": when.strftime("%d/%m/%Y"),
    }[layout]
    if layout not in ("iso", "iso-z"):
        when = dt.datetime.combine(when.date(), dt.time())
    expected = calendar.timegm(when.timetuple())
    rows = [{"user_id": "u", "item_id": "i", "timestamp": text, "title": "A"}] * 2
    path = _jsonl(workdir / "times.jsonl", rows)
    raw = load_table(path, time_format="%d/%m/%Y" if layout == "dmy" else None)
    assert raw.interactions["timestamp"].tolist() == [expected, expected]


@SETTINGS
@given(
    value=st.one_of(
        TEXT,
        st.integers(min_value=-(2**80), max_value=2**80),
        st.floats(allow_nan=True, allow_infinity=True),
        st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31)).map(
            lambda d: d.isoformat()
        ),
        st.sampled_from(["0001-01-01", "9999-12-31T23:59:59", "31/12/9999", "1e400", "-0"]),
    ),
    time_format=st.sampled_from([None, "%d/%m/%Y", "s", "ms"]),
)
def test_any_timestamp_loads_in_range_or_fails_naming_the_line(workdir, value, time_format):
    if isinstance(value, float) and value != value or value in (float("inf"), float("-inf")):
        value = str(value)  # JSON has no NaN or Infinity; as text
    # every row the same value: the column is read the way that value asks for
    rows = [{"user_id": "u", "item_id": k, "timestamp": value, "title": k} for k in "ij"]
    path = _jsonl(workdir / "any_time.jsonl", rows)
    try:
        raw = load_table(path, time_format=time_format)
    except DataError as exc:
        assert str(exc).startswith(f"{path}:")
        return
    seconds = raw.interactions["timestamp"]
    assert seconds.between(-2_208_988_800, 7_258_118_400).all()


@SETTINGS
@given(title=TEXT, extra=TEXT)
def test_any_title_loads_as_one_line_through_csv(workdir, title, extra):
    if any("\ud800" <= c <= "\udfff" for c in title + extra):
        return
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["user_id", "item_id", "timestamp", "title", "note"])
    writer.writerow(["u", "i1", 1_600_000_000, title, extra])
    writer.writerow(["u", "i2", 1_600_000_001, "Plain", "x"])
    path = workdir / "titles.csv"
    path.write_text(buf.getvalue(), encoding="utf-8", newline="")
    try:
        raw = load_table(path, text_cols=["note"])
    except DataError as exc:
        assert str(exc).startswith(str(path))
        return
    for t in raw.items["title"]:
        assert "\n" not in t and "\r" not in t and t == t.strip()
    assert clean_title(title) in set(raw.items["title"]) or not clean_title(title)


@SETTINGS
@given(line=st.one_of(TEXT, st.dictionaries(TEXT, TEXT).map(repr), st.dictionaries(
    TEXT, st.one_of(TEXT, st.integers(), st.none())).map(json.dumps)))  # fmt: skip
def test_any_line_parses_to_a_record_or_a_data_error(line):
    try:
        record = parse_record(line, "f.jsonl", 7)
    except DataError as exc:
        assert str(exc).startswith("f.jsonl:7: ")
        return
    assert isinstance(record, dict)
