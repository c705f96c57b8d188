import json

import pandas as pd
import pytest

from whyrec.data import Dataset, RawData, build_dataset, load_dataset
from whyrec.errors import DataError


def small():
    inter = pd.DataFrame(
        {
            "user_id": ["u1"] * 4 + ["u2"] * 3,
            "item_id": ["a", "b", "c", "d", "b", "c", "a"],
            "timestamp": [1, 2, 3, 4, 1, 2, 3],
            "rating": [5, 4, 3, 2, 1, 2, 3],
        }
    )
    items = pd.DataFrame(
        {
            "item_id": ["a", "b", "c", "d"],
            "title": ["Alien", "Brazil", "Casablanca", "Dune"],
            "genres": ["Sci-Fi", "Comedy", "", "Sci-Fi"],
        }
    )
    return build_dataset(RawData(inter, items), name="small")


def test_save_load_round_trip(tmp_path):
    ds = small()
    ds.save(tmp_path / "ds")
    back = Dataset.load(tmp_path / "ds")
    pd.testing.assert_frame_equal(back.interactions, ds.interactions)
    pd.testing.assert_frame_equal(back.items, ds.items)
    m = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert m["counts"]["users"] == 2 and m["counts"]["actions"] == 7
    assert m["whyrec_version"] and len(m["fingerprint"]) == 16
    assert back.fingerprint() == ds.fingerprint()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_item_texts_and_lookups():
    ds = small()
    assert ds.item_texts(["genres"])[0] == "Alien | genres: Sci-Fi"
    assert ds.item_texts(["genres"])[2] == "Casablanca"  # empty field left out
    assert ds.titles[ds.item_index("d")] == "Dune"
    with pytest.raises(DataError, match="unknown user id 'nobody'"):
        ds.user_index("nobody")
    with pytest.raises(DataError, match="field 'nope'"):
        ds.item_texts(["nope"])


def test_load_errors_are_specific(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        Dataset.load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="manifest.json missing"):
        Dataset.load(tmp_path / "empty")
    small().save(tmp_path / "ds")
    (tmp_path / "ds" / "items.parquet").unlink()
    with pytest.raises(DataError, match="items.parquet missing"):
        Dataset.load(tmp_path / "ds")
    with pytest.raises(DataError, match="neither an existing dataset directory"):
        load_dataset("no-such-dataset")


def test_failed_save_leaves_previous_dataset_intact(tmp_path, monkeypatch):
    ds = small()
    ds.save(tmp_path / "ds")
    before = (tmp_path / "ds" / "manifest.json").read_text()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", boom)
    with pytest.raises(OSError):
        small().save(tmp_path / "ds")
    assert (tmp_path / "ds" / "manifest.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
