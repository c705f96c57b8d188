"""The on-disk state of a batch job: Parquet shards plus a manifest, crash-safe.

Layout of an output directory::

    DIR/manifest.json            job identity, shard list (rows, SHA-256), counts, status
    DIR/shards/part-00000.parquet     completed items, one row each
    DIR/failures/part-00001.parquet   items that failed, with the reason
    DIR/quarantine/                   shards that failed their checksum (never read)
    DIR/.lock                         held while a job runs ("pid N host H")

Every file is written to a hidden temporary sibling, fsynced and renamed into place;
only then is it recorded in the manifest (itself replaced atomically). A job killed at
any instant therefore leaves: complete shards (listed, or not yet listed), the previous
manifest, and maybe a temporary file. :meth:`JobStore.open` reconciles that state:
temporary files are deleted, complete shards missing from the manifest are adopted,
listed shards whose bytes no longer match their checksum are quarantined, so no
completed item is lost or counted twice and no half-written shard is ever read.

A key appears in one data shard, except that a row with ``status="fallback"`` (the
reply never validated; the grounded fallback was stored) may be superseded by a row for
the same key in a later shard (``--retry-failed`` asks again): the latest row wins.

The lock is an ``flock`` the kernel drops when its process dies, so a killed job never
blocks the next run; the lock file names the holder, and :func:`lock_state` tells a
live holder from a dead one (``whyrec batch status`` reports the latter as a stale lock).
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import hashlib
import json
import os
import re
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from whyrec.errors import ConfigError, DataError

FORMAT = "whyrec-batch/1"
MANIFEST = "manifest.json"
SHARDS = "shards"
FAILURES = "failures"
QUARANTINE = "quarantine"
_PART = re.compile(r"^part-(\d{5,})\.parquet$")

#: Columns of a failure record (the same for every job kind).
FAILURE_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("user_id", pa.string()),
        ("stage", pa.string()),
        ("error_type", pa.string()),
        ("reason", pa.string()),
        ("attempts", pa.int32()),
        ("last_reply", pa.string()),
        ("failed_at", pa.string()),
    ]
)


def now_iso() -> str:
    """UTC time, seconds precision."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durable(target: Path, write: Any) -> None:
    """``write(tmp)``, fsync, rename onto ``target``, fsync the directory."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


@dataclass
class ShardInfo:
    """One shard as the manifest records it."""

    file: str  # relative to the output directory
    rows: int
    sha256: str
    created: str
    kind: str = "data"  # "data" or "failures"

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "rows": self.rows,
            "sha256": self.sha256,
            "created": self.created,
            "kind": self.kind,
        }


@dataclass
class Reconciled:
    """What :meth:`JobStore.open` found and repaired."""

    adopted: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    temp_removed: list[str] = field(default_factory=list)
    stale_lock: str | None = None  # "pid N" of a run that died holding the directory

    def notes(self) -> list[str]:
        out = []
        if self.stale_lock:
            out.append(
                f"took over a stale lock from {self.stale_lock}: that run was interrupted "
                "(killed); its durable shards are kept and the rest runs now"
            )
        if self.adopted:
            out.append(f"adopted {len(self.adopted)} complete shard(s) written before a stop")
        if self.quarantined:
            out.append(
                f"quarantined {len(self.quarantined)} shard(s) whose checksum did not match: "
                + ", ".join(self.quarantined)
            )
        if self.missing:
            out.append(
                f"{len(self.missing)} listed shard(s) are missing; their items run again: "
                + ", ".join(self.missing)
            )
        if self.temp_removed:
            out.append(f"removed {len(self.temp_removed)} unfinished temporary file(s)")
        return out


class JobStore:
    """One output directory: lock, manifest, shards. Use :meth:`open` (a context manager)."""

    def __init__(self, root: Path, data_schema: pa.Schema) -> None:
        self.root = Path(root)
        self.data_schema = data_schema
        self.manifest: dict[str, Any] = {}
        self._lock_fh: Any = None
        self._previous_holder = ""
        self.reconciled = Reconciled()
        self._key_cache: dict[str, list[str]] = {}  # shard files never change once written

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, root: str | Path, job: dict[str, Any], data_schema: pa.Schema) -> JobStore:
        """Lock ``root``, check it holds the same job (or nothing), and reconcile it."""
        store = cls(Path(root), data_schema)
        store.root.mkdir(parents=True, exist_ok=True)
        store._lock()
        try:
            store._load(job)
            store._reconcile()
            store.save()
        except BaseException:
            store.close()
            raise
        return store

    def __enter__(self) -> JobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _lock(self) -> None:
        path = self.root / ".lock"
        fh = path.open("a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise ConfigError(
                    f"{self.root}: another batch job is writing to this directory "
                    f"({holder}); wait for it or use another --out"
                ) from None
            raise
        fh.seek(0)
        self._previous_holder = fh.read().strip()  # a clean exit clears it
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} host {socket.gethostname()}")
        fh.flush()
        self._lock_fh = fh

    def close(self) -> None:
        """Release the directory lock (and clear the holder's name from the lock file)."""
        if self._lock_fh is not None:
            try:
                self._lock_fh.seek(0)
                self._lock_fh.truncate()
                self._lock_fh.flush()
            except OSError:
                pass
            fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    def _load(self, job: dict[str, Any]) -> None:
        path = self.root / MANIFEST
        if not path.is_file():
            self.manifest = {
                "format": FORMAT,
                "job": job,
                "status": "new",
                "created": now_iso(),
                "updated": now_iso(),
                "shards": [],
                "runs": [],
            }
            return
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"not a readable JSON manifest ({exc})", path=path) from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise DataError(
                f"not a whyrec batch manifest (expected format {FORMAT!r}); "
                "use an empty directory for --out",
                path=path,
            )
        old = manifest.get("job", {})
        diffs = [
            f"{k}: {old.get(k)!r} in the directory, {job.get(k)!r} now"
            for k in sorted(set(old) | set(job))
            if old.get(k) != job.get(k)
        ]
        if diffs:
            raise ConfigError(
                f"{self.root} holds a different batch job ({'; '.join(diffs)}); "
                "resume it with the same settings or write to another --out"
            )
        manifest.setdefault("shards", [])
        manifest.setdefault("runs", [])
        if manifest.get("status") == "running":  # the last run died without a word
            held = self._previous_holder
            self.reconciled.stale_lock = _holder_label(held) if held else "an unknown process"
            manifest["status"] = "interrupted"
            last = manifest["runs"][-1] if manifest["runs"] else None
            if isinstance(last, dict) and "finished" not in last:
                last.update(interrupted=True, stale_lock=self.reconciled.stale_lock)
        self.manifest = manifest

    def _reconcile(self) -> None:
        rec = self.reconciled
        for sub in (SHARDS, FAILURES):
            (self.root / sub).mkdir(exist_ok=True)
        # 1. unfinished temporary files never become data
        for sub in (".", SHARDS, FAILURES):
            for p in (self.root / sub).iterdir():
                if p.is_file() and p.name.startswith(".") and p.name.endswith(".tmp"):
                    p.unlink(missing_ok=True)
                    rec.temp_removed.append(str(p.relative_to(self.root)))
        # 2. listed shards must exist with the recorded bytes
        kept: list[dict[str, Any]] = []
        for entry in self.manifest["shards"]:
            path = self.root / entry["file"]
            if not path.is_file():
                rec.missing.append(entry["file"])
                continue
            if sha256_file(path) != entry["sha256"]:
                self._quarantine(path)
                rec.quarantined.append(entry["file"])
                continue
            kept.append(entry)
        # 3. complete shards written just before a stop are adopted
        listed = {e["file"] for e in kept}
        for sub, kind in ((SHARDS, "data"), (FAILURES, "failures")):
            for path in sorted((self.root / sub).iterdir()):
                rel = f"{sub}/{path.name}"
                if rel in listed or not _PART.match(path.name):
                    continue
                schema = self.data_schema if kind == "data" else FAILURE_SCHEMA
                try:
                    table = pq.read_table(path)
                    if not table.schema.equals(schema, check_metadata=False):
                        raise ValueError("unexpected columns")
                except Exception:
                    self._quarantine(path)
                    rec.quarantined.append(rel)
                    continue
                kept.append(
                    ShardInfo(rel, table.num_rows, sha256_file(path), now_iso(), kind).to_dict()
                )
                rec.adopted.append(rel)
        kept.sort(key=lambda e: e["file"].rsplit("/", 1)[-1])
        self.manifest["shards"] = kept
        self._check_unique()

    def _quarantine(self, path: Path) -> None:
        qdir = self.root / QUARANTINE
        qdir.mkdir(exist_ok=True)
        os.replace(path, qdir / f"{path.parent.name}-{path.name}")

    def _check_unique(self) -> None:
        """Each key once, except fallback rows superseded by a later row (a retry)."""
        seen: dict[str, tuple[str, str]] = {}
        for entry in self.data_shards():
            for key, status in self._rows(entry):
                if key in seen and seen[key][1] != "fallback":
                    raise DataError(
                        f"item {key!r} is in two shards ({seen[key][0]} and {entry['file']}) "
                        "and the first is not a fallback row a retry replaces; were files "
                        "copied in from another job? Remove one of the shards",
                        path=self.root / entry["file"],
                        field="key",
                    )
                seen[key] = (entry["file"], status)

    # ------------------------------------------------------------------ reading

    def data_shards(self) -> list[dict[str, Any]]:
        return [e for e in self.manifest["shards"] if e.get("kind", "data") == "data"]

    def failure_shards(self) -> list[dict[str, Any]]:
        return [e for e in self.manifest["shards"] if e.get("kind") == "failures"]

    def _rows(self, entry: dict[str, Any]) -> list[tuple[str, str]]:
        """(key, status) of every row of a data shard (status "ok" without the column)."""
        cache_key = f"{entry['file']}:{entry['sha256']}"
        rows = self._key_cache.get(cache_key)
        if rows is None:
            path = self.root / entry["file"]
            has_status = "status" in pq.read_schema(path).names
            table = pq.read_table(path, columns=["key", "status"] if has_status else ["key"])
            keys = [str(k) for k in table.column("key").to_pylist()]
            statuses = (
                [str(x) for x in table.column("status").to_pylist()]
                if has_status
                else ["ok"] * len(keys)
            )
            rows = list(zip(keys, statuses, strict=True))
            self._key_cache[cache_key] = rows
        return rows

    def _keys(self, entry: dict[str, Any]) -> list[str]:
        return [k for k, _ in self._rows(entry)]

    def latest_status(self) -> dict[str, str]:
        """The status of every completed item's latest row."""
        return {k: st for e in self.data_shards() for k, st in self._rows(e)}

    def done_keys(self) -> set[str]:
        """Keys of every completed item."""
        return {k for e in self.data_shards() for k in self._keys(e)}

    def fallback_keys(self) -> set[str]:
        """Completed items whose latest row is the grounded fallback (``status="fallback"``:
        the model answered, but no reply validated); ``--retry-failed`` asks them again."""
        return {k for k, st in self.latest_status().items() if st == "fallback"}

    def failures(self) -> dict[str, dict[str, Any]]:
        """The latest failure record of every key that has not completed since."""
        done = self.done_keys()
        out: dict[str, dict[str, Any]] = {}
        for entry in self.failure_shards():  # in write order: later records win
            for row in pq.read_table(self.root / entry["file"]).to_pylist():
                out[str(row["key"])] = row
        return {k: v for k, v in out.items() if k not in done}

    # ------------------------------------------------------------------ writing

    def _next_part(self) -> int:
        nums = [-1]
        for sub in (SHARDS, FAILURES, QUARANTINE):
            d = self.root / sub
            if d.is_dir():
                for p in d.iterdir():
                    m = _PART.match(p.name.split("-", 1)[-1] if sub == QUARANTINE else p.name)
                    if m:
                        nums.append(int(m.group(1)))
        return max(nums) + 1

    def write_shard(self, rows: list[dict[str, Any]], *, failures: bool = False) -> ShardInfo:
        """Write ``rows`` durably as the next part and record it in the manifest."""
        schema = FAILURE_SCHEMA if failures else self.data_schema
        sub = FAILURES if failures else SHARDS
        table = pa.Table.from_pylist(rows, schema=schema)
        target = self.root / sub / f"part-{self._next_part():05d}.parquet"
        _write_durable(target, lambda tmp: pq.write_table(table, tmp))
        info = ShardInfo(
            f"{sub}/{target.name}",
            table.num_rows,
            sha256_file(target),
            now_iso(),
            "failures" if failures else "data",
        )
        self.manifest["shards"].append(info.to_dict())
        self.save()
        return info

    def save(self) -> None:
        """Replace the manifest atomically."""
        self.manifest["updated"] = now_iso()
        text = json.dumps(self.manifest, indent=2, ensure_ascii=False) + "\n"
        _write_durable(self.root / MANIFEST, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _holder_label(text: str) -> str:
    """``"pid N"`` (plus ``" on HOST"`` when another host wrote it) from a lock file."""
    m = re.match(r"pid (\d+)(?: host (\S+))?", text)
    if not m:
        return text[:80]
    host = m.group(2)
    return f"PID {m.group(1)}" + (f" on {host}" if host and host != socket.gethostname() else "")


def _pid_alive(pid: int) -> bool:
    """Is process ``pid`` running on this host (a zombie counts as dead)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def lock_state(root: str | Path) -> dict[str, Any]:
    """Who holds a batch directory's lock: ``{"pid", "host", "alive"}``.

    ``pid`` is ``None`` when nobody does (the lock file is cleared on a clean exit);
    ``alive`` is ``None`` when the holder is on another host (cannot be checked).
    """
    path = Path(root) / ".lock"
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        text = ""
    m = re.match(r"pid (\d+)(?: host (\S+))?", text)
    if not m:
        return {"pid": None, "host": None, "alive": False}
    pid, host = int(m.group(1)), m.group(2)
    if host and host != socket.gethostname():
        return {"pid": pid, "host": host, "alive": None}
    return {"pid": pid, "host": host, "alive": _pid_alive(pid)}


def read_manifest(root: str | Path) -> dict[str, Any]:
    """The manifest of a batch output directory (no lock taken)."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise DataError("no batch manifest here (expected the --out of 'whyrec batch')", path=path)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON ({exc})", path=path) from None
    if manifest.get("format") != FORMAT:
        raise DataError(f"not a whyrec batch manifest (expected format {FORMAT!r})", path=path)
    return manifest


def iter_shards(
    root: str | Path, *, failures: bool = False, verify: bool = True
) -> Iterator[pa.Table]:
    """The tables of the listed data (or failure) shards, each checked against its SHA-256."""
    root = Path(root)
    manifest = read_manifest(root)
    kind = "failures" if failures else "data"
    for entry in manifest["shards"]:
        if entry.get("kind", "data") != kind:
            continue
        path = root / entry["file"]
        if verify and sha256_file(path) != entry["sha256"]:
            raise DataError(
                "shard bytes do not match the manifest's SHA-256; run the batch command "
                "again to quarantine and recompute it",
                path=path,
            )
        yield pq.read_table(path)


def read_output(root: str | Path, *, failures: bool = False) -> Any:
    """Every completed item (or every failure record) as one pandas DataFrame."""
    import pandas as pd

    tables: Iterable[pa.Table] = list(iter_shards(root, failures=failures))
    if not tables:
        manifest = read_manifest(root)
        if failures:
            return FAILURE_SCHEMA.empty_table().to_pandas()
        return pd.DataFrame(columns=manifest.get("columns", []))
    df = pa.concat_tables(tables).to_pandas()
    if not failures and not df["key"].is_unique:  # a retried fallback row: the latest wins
        df = df.drop_duplicates("key", keep="last").reset_index(drop=True)
    return df
