"""Kill ``whyrec batch`` with SIGKILL mid-run, twice, then rerun: nothing lost, nothing twice.

The job runs as a real subprocess against a real HTTP endpoint whose replies are a pure
function of the prompt, slowed down so the kills land mid-run. A separate slow test
does the same with the embedded SmolLM2 model.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from whyrec.batch import BatchOptions, PreferenceJob, read_manifest, read_output, run_batch
from whyrec.llm import LLMClient, LLMSettings

from .conftest import request_user

CONTENT = ["key", "user_id", "status", "preferences", "source", "history_hash", "model"]


def keys_on_disk(out: Path) -> list[str]:
    """Keys in every complete shard file present (what a rerun will find)."""
    keys: list[str] = []
    for part in sorted((out / "shards").glob("part-*.parquet")):
        keys += pq.read_table(part, columns=["key"]).column("key").to_pylist()
    return keys


def start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(cond, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(
                f"job ended before the kill: {proc.stderr.read().decode()[-2000:]}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("the job made no progress in time")
        time.sleep(0.01)


def kill(proc: subprocess.Popen, endpoint=None) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    if endpoint is not None:  # let the server finish (and log) what the dead job had sent
        deadline = time.monotonic() + 10
        while endpoint.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)


def test_sigkill_twice_then_rerun_computes_each_item_exactly_once(
    endpoint, tiny_data_dir, tmp_path
):
    endpoint.delay = 0.1
    out = tmp_path / "out"
    env = {**os.environ, **endpoint.env()}
    cmd = [
        sys.executable, "-m", "whyrec", "batch", "preferences", str(tiny_data_dir),
        "--out", str(out), "--shard-size", "2", "--no-progress",
    ]  # fmt: skip

    # kill 1: right after the first shard became durable
    proc = start(cmd, env)
    wait_for(lambda: len(keys_on_disk(out)) >= 2, proc)
    kill(proc, endpoint)
    done1 = keys_on_disk(out)
    assert 2 <= len(done1) < 12 and len(set(done1)) == len(done1)

    # kill 2: at an arbitrary point (three more replies in), wherever the writer is
    proc = start(cmd, env)
    seen = len(endpoint.log)
    wait_for(lambda: len(endpoint.log) >= seen + 3, proc)
    kill(proc, endpoint)
    done2 = keys_on_disk(out)
    assert set(done1) <= set(done2) and len(set(done2)) == len(done2) < 12

    # the rerun completes the job and asks only for items not yet in a shard
    seen = len(endpoint.log)
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["status"] == "complete"
    assert report["computed_now"] == 12 - len(done2) and report["skipped"] == len(done2)

    settings = LLMSettings.load(
        backend="openai", model="stub-1", base_url=endpoint.base_url, max_retries=0, cache=False
    )
    client = LLMClient(settings)
    job = PreferenceJob(tiny_data_dir, client=client)
    asked = {
        request_user({"messages": it.requests[0]["messages"]}): it.key
        for it in job.prepare(range(12))
    }
    rerun_keys = [asked[h] for h, _ in endpoint.log[seen:]]
    assert sorted(rerun_keys) == sorted(set(asked.values()) - set(done2))  # each once, none done

    df = read_output(out)  # every shard verified against the manifest's checksums
    assert sorted(df["key"]) == sorted(f"u{u}" for u in range(12))
    manifest = read_manifest(out)
    assert manifest["status"] == "complete" and manifest["counts"]["rows_total"] == 12
    assert not list(out.rglob("*.tmp"))

    ref = tmp_path / "ref"  # the same job, never interrupted
    run_batch(job, ref, client=client, options=BatchOptions(shard_size=2, progress=False))
    a = df[CONTENT].sort_values("key").reset_index(drop=True).astype(str)
    b = read_output(ref)[CONTENT].sort_values("key").reset_index(drop=True).astype(str)
    assert a.equals(b)


@pytest.mark.slow
def test_sigkill_and_resume_with_the_embedded_model(tiny_data_dir, tmp_path):
    """The same guarantee with SmolLM2 doing the work (few users, short JSON replies;
    m=2 so the grounded completion needs no sentence encoder)."""
    out = tmp_path / "out"
    users = tmp_path / "users.txt"
    users.write_text("u0\nu1\nu2\nu3\n")
    env = {
        **os.environ,
        "WHYREC_LLM_N_THREADS": "1",
        "WHYREC_LLM_MAX_REASKS": "0",
        "WHYREC_LLM_CACHE": "false",
        "WHYREC_LLM_N_CTX": "1024",
    }
    cmd = [
        sys.executable, "-m", "whyrec", "batch", "preferences", str(tiny_data_dir),
        "--users", str(users), "--out", str(out), "--shard-size", "1", "-m", "2",
        "--mode", "json", "--max-tokens", "40", "--n-parallel", "2", "--no-progress",
    ]  # fmt: skip
    proc = start(cmd, env)
    wait_for(lambda: len(keys_on_disk(out)) >= 1, proc, timeout=300)
    kill(proc)
    done = keys_on_disk(out)
    assert 1 <= len(done) < 4
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["computed_now"] == 4 - len(done) and report["status"] == "complete"
    df = read_output(out)
    assert sorted(df["key"]) == ["u0", "u1", "u2", "u3"]
    assert all(len(p) == 2 for p in df["preferences"])
    assert set(df["model"]) == {"SmolLM2-135M-Instruct.Q4_1"}
    assert all(isinstance(r, str) and r.strip() for r in df["raw_reply"])  # the model answered

    # an uninterrupted run gives the same rows (temperature 0, same prompts)
    ref = tmp_path / "ref"
    i = cmd.index("--out")
    res = subprocess.run(
        [*cmd[: i + 1], str(ref), *cmd[i + 2 :]], env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    a = df[CONTENT].sort_values("key").reset_index(drop=True).astype(str)
    b = read_output(ref)[CONTENT].sort_values("key").reset_index(drop=True).astype(str)
    assert a.equals(b)
