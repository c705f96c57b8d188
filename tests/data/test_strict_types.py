"""Strict typing at the data boundary: ids, Parquet column types, manifest checksums."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from whyrec.cli import app
from whyrec.data import RawData, build_dataset
from whyrec.data.dataset import Dataset
from whyrec.data.loaders import load_table
from whyrec.errors import DataError


def _csv(tmp_path: Path, users: list[str]) -> Path:
    lines = ["user_id,item_id,timestamp,title"]
    lines += [f"{u},i{k % 3},{1000 + k},Film {k % 3}" for k, u in enumerate(users)]
    path = tmp_path / "log.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("bad", ["NaN", "nan", "None", "NULL", "<NA>", "  "])
def test_missing_value_spellings_are_not_user_ids(tmp_path, bad):
    path = _csv(tmp_path, ["u1", "u2", bad, "u3"])
    with pytest.raises(DataError, match=r"log\.csv:4: field 'user_id': empty id"):
        load_table(path)


def test_invalid_id_rows_can_be_dropped_with_a_count(tmp_path):
    path = _csv(tmp_path, ["u1", "NaN", "u1", "nan", "u2", "u2", "u2"])
    raw = load_table(path, drop_invalid_ids=True)
    assert sorted(raw.interactions["user_id"].unique()) == ["u1", "u2"]
    assert raw.notes["rows_with_invalid_id_dropped"] == 2
    ds = build_dataset(raw, name="x", split="none")
    assert ds.manifest["loading_notes"]["rows_with_invalid_id_dropped"] == 2


def test_negative_integer_ids_are_ids(tmp_path):
    raw = load_table(_csv(tmp_path, ["-5", "-5", "7"]))
    assert set(raw.interactions["user_id"]) == {"-5", "7"}


def _parquet(tmp_path: Path, **columns) -> Path:
    base = {
        "user_id": pa.array(["a", "b", "c"]),
        "item_id": pa.array(["x", "y", "z"]),
        "timestamp": pa.array([1, 2, 3]),
        "title": pa.array(["X", "Y", "Z"]),
    }
    base.update(columns)
    path = tmp_path / "log.parquet"
    pq.write_table(pa.table(base), path)
    return path


@pytest.mark.parametrize(
    ("column", "values", "type_name"),
    [
        ("user_id", pa.array([1.5, 2.0, 3.0]), "double"),
        ("item_id", pa.array([[1], [2], [3]]), "list<element: int64>"),
        ("title", pa.array([b"X", b"Y", b"Z"]), "binary"),
        ("user_id", pa.array([True, False, True]), "bool"),
    ],
)
def test_parquet_columns_of_the_wrong_type_are_errors(tmp_path, column, values, type_name):
    path = _parquet(tmp_path, **{column: values})
    with pytest.raises(DataError) as info:
        load_table(path)
    msg = str(info.value)
    assert f"field '{column}'" in msg and f"type {type_name}" in msg and "log.parquet" in msg


def test_parquet_integer_and_dictionary_ids_are_fine(tmp_path):
    path = _parquet(
        tmp_path,
        user_id=pa.array([-1, 2, 3]),
        item_id=pa.array(["x", "y", "z"]).dictionary_encode(),
    )
    raw = load_table(path)
    assert list(raw.interactions["user_id"]) == ["-1", "2", "3"]


def test_json_lines_with_list_or_float_ids_name_the_line(tmp_path):
    path = tmp_path / "log.jsonl"
    rows = [
        {"user_id": "a", "item_id": "x", "timestamp": 1, "title": "X"},
        {"user_id": 1.5, "item_id": "y", "timestamp": 2, "title": "Y"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"log\.jsonl:2: field 'user_id': a float \(1\.5\)"):
        load_table(path)
    rows[1] = {"user_id": "b", "item_id": [1], "timestamp": 2, "title": "Y"}
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"log\.jsonl:2: field 'item_id': a list \(\[1\]\)"):
        load_table(path)


def test_build_rejects_bad_ids_from_any_loader():
    inter = pd.DataFrame({"user_id": ["a", None], "item_id": ["x", "x"], "timestamp": [1, 2]})
    items = pd.DataFrame({"item_id": ["x"], "title": ["X"]})
    with pytest.raises(DataError, match=r"field 'user_id': interactions row 2: empty id"):
        build_dataset(RawData(inter, items), name="x", split="none")
    items = pd.DataFrame({"item_id": ["x"], "title": [b"X"]})
    inter = pd.DataFrame({"user_id": ["a"], "item_id": ["x"], "timestamp": [1]})
    with pytest.raises(DataError, match="title is bytes"):
        build_dataset(RawData(inter, items), name="x", split="none")


def _saved(tmp_path: Path) -> Path:
    inter = pd.DataFrame(
        {"user_id": ["a"] * 4 + ["b"] * 4, "item_id": list("wxyz") * 2, "timestamp": range(8)}
    )
    items = pd.DataFrame({"item_id": list("wxyz"), "title": list("WXYZ")})
    return build_dataset(RawData(inter, items), name="t", split="none").save(tmp_path / "ds")


def test_truncated_dataset_file_is_an_error_naming_it(tmp_path):
    path = _saved(tmp_path)
    assert Dataset.load(path).n_users == 2  # intact: loads
    f = path / "interactions.parquet"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(DataError, match=r"interactions\.parquet: does not match the manifest"):
        Dataset.load(path)


def test_unreadable_parquet_without_recorded_checksums_is_a_data_error(tmp_path):
    path = _saved(tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    del manifest["files"]  # a directory written before checksums were recorded
    (path / "manifest.json").write_text(json.dumps(manifest))
    (path / "items.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match=r"items\.parquet: not a readable Parquet file"):
        Dataset.load(path)


def test_train_on_a_truncated_dataset_exits_cleanly(tmp_path):
    path = _saved(tmp_path)
    f = path / "interactions.parquet"
    f.write_bytes(f.read_bytes()[:-20])
    result = CliRunner().invoke(
        app, ["train", "--data", str(path), "--model", "popularity", "--out", str(tmp_path / "run")]
    )
    assert isinstance(result.exception, DataError), result.exception
    assert "interactions.parquet" in str(result.exception)
