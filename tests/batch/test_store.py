"""Crash states of a batch directory and how the next run repairs them."""

from __future__ import annotations

import json

import pytest

from whyrec.batch import BatchOptions, JobStore, PreferenceJob, read_output, run_batch
from whyrec.batch.jobs import PREFERENCE_SCHEMA
from whyrec.errors import ConfigError, DataError
from whyrec.llm import LLMClient, LLMSettings


@pytest.fixture
def setup(endpoint, tiny_data_dir, tmp_path):
    client = LLMClient(
        LLMSettings.load(
            backend="openai", model="stub-1", base_url=endpoint.base_url, max_retries=0,
            cache=False, concurrency=1,
        )
    )  # fmt: skip
    job = PreferenceJob(tiny_data_dir, client=client)
    out = tmp_path / "out"

    def run(**kw):
        options = BatchOptions(shard_size=4, progress=False, **kw)
        return run_batch(job, out, client=client, options=options)

    first = run()
    assert first.done == 12 and first.shards_written == 3
    return out, run, endpoint, read_output(out).sort_values("key").reset_index(drop=True)


def _manifest(out):
    return json.loads((out / "manifest.json").read_text())


def test_a_shard_written_but_not_yet_listed_is_adopted(setup):
    out, run, endpoint, before = setup
    manifest = _manifest(out)
    dropped = manifest["shards"].pop()  # as if killed between the rename and the manifest
    (out / "manifest.json").write_text(json.dumps(manifest))
    endpoint.log.clear()
    report = run()
    assert report.computed_now == 0 and endpoint.log == []
    assert any("adopted 1 complete shard" in n for n in report.notes)
    assert dropped["file"] in {e["file"] for e in _manifest(out)["shards"]}
    assert read_output(out).sort_values("key").reset_index(drop=True).equals(before)


def test_unfinished_temporary_files_are_removed_never_read(setup):
    out, run, endpoint, before = setup
    tmp = out / "shards" / ".part-00007.parquet.4242.tmp"
    tmp.write_bytes(b"PAR1 half a shard")
    (out / ".manifest.json.4242.tmp").write_text("{")
    report = run()
    assert not tmp.exists() and not (out / ".manifest.json.4242.tmp").exists()
    assert report.computed_now == 0
    assert any("removed 2 unfinished temporary file" in n for n in report.notes)
    assert read_output(out).sort_values("key").reset_index(drop=True).equals(before)


def test_a_corrupt_shard_is_quarantined_and_its_items_recomputed(setup):
    out, run, endpoint, before = setup
    victim = out / _manifest(out)["shards"][1]["file"]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(DataError, match="do not match the manifest"):
        read_output(out)
    endpoint.log.clear()
    report = run()
    assert report.computed_now == 4 and len(endpoint.log) == 4
    assert any("quarantined 1 shard" in n for n in report.notes)
    assert (out / "quarantine" / f"shards-{victim.name}").is_file()
    after = read_output(out).sort_values("key").reset_index(drop=True)
    assert after.equals(before)


def test_a_garbage_part_file_is_quarantined(setup):
    out, run, endpoint, before = setup
    (out / "shards" / "part-00042.parquet").write_bytes(b"not parquet at all")
    report = run()
    assert report.computed_now == 0
    assert (out / "quarantine" / "shards-part-00042.parquet").is_file()


def test_a_missing_shard_is_recomputed(setup):
    out, run, endpoint, before = setup
    (out / _manifest(out)["shards"][0]["file"]).unlink()
    report = run()
    assert report.computed_now == 4 and any("missing" in n for n in report.notes)
    assert read_output(out).sort_values("key").reset_index(drop=True).equals(before)


def test_two_jobs_cannot_write_the_same_directory(setup):
    out, run, endpoint, before = setup
    job = _manifest(out)["job"]
    with JobStore.open(out, job, PREFERENCE_SCHEMA):
        with pytest.raises(ConfigError, match="another batch job is writing to this directory"):
            run()
    assert run().computed_now == 0  # the lock is released when the holder closes


def test_a_foreign_manifest_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"model": "sasrec"}))
    with pytest.raises(DataError, match="not a whyrec batch manifest"):
        JobStore.open(out, {"kind": "preferences"}, PREFERENCE_SCHEMA)
