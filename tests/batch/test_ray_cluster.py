"""``--backend ray --ray-address``: a batch job on a two-node Ray cluster, shown.

Two ``ray start`` processes on this machine form the cluster — a head and a worker,
one CPU each, each with its own Ray temp dir and its own ``$WHYREC_HOME`` (as two
machines would have). ``whyrec batch`` runs as a separate process with the head's
address, exactly as a user would start it, and its shards must hold the rows the local
backend writes for the same job. Each actor reserves 0.6 CPU, so no node fits two: the
two actors run on different nodes, and each node's own reply cache shows what it
answered.

Only processes started here are stopped (their process groups); another Ray on this
machine is left alone.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from whyrec.batch import read_output

pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'whyrec[ray]')")

RAY = Path(sys.executable).with_name("ray")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayNode:
    """One ``ray start --block`` process in its own session (so its group can be killed)."""

    def __init__(self, args: list[str], temp_dir: Path, env: dict[str, str], log: Path) -> None:
        self.temp_dir = temp_dir
        self.log = log
        cmd = [str(RAY), "start", "--block", "--temp-dir", str(temp_dir), *args]
        with log.open("wb") as fh:
            self.proc = subprocess.Popen(
                cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_started(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            if "Ray runtime started" in text:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"ray start did not come up:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        """Kill this node's process group (ray start, gcs, raylet, its workers)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def two_node_cluster(tmp_path_factory):
    """A head and a worker node on this machine (one per module: starting costs ~10 s);
    yields (address, environment, each node's WHYREC_HOME, Ray temp root)."""
    tmp_path = tmp_path_factory.mktemp("ray_cluster")
    # Ray's unix sockets must stay under ~107 characters: short temp dirs under /tmp
    root = Path(tempfile.mkdtemp(prefix="wr-ray-", dir="/tmp"))
    token = secrets.token_hex(32)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "WHYREC_LLM_"))}
    base.update(
        RAY_AUTH_MODE="token",  # Ray's default since 2.5x; the worker and driver need it
        RAY_AUTH_TOKEN=token,
        RAY_USAGE_STATS_ENABLED="0",
        OMP_NUM_THREADS="1",
    )
    homes = {"head": tmp_path / "home-head", "worker": tmp_path / "home-worker"}
    nodes: list[RayNode] = []
    try:
        port = free_port()
        head = RayNode(
            [
                "--head",
                "--port",
                str(port),
                "--num-cpus",
                "1",
                "--include-dashboard",
                "false",
                "--dashboard-agent-listen-port",
                str(free_port()),
                "--object-store-memory",
                str(80 * 1024 * 1024),
            ],  # fmt: skip
            root / "h",
            {**base, "WHYREC_HOME": str(homes["head"])},
            tmp_path / "head.log",
        )
        nodes.append(head)
        head.wait_started()
        address = f"127.0.0.1:{port}"
        worker = RayNode(
            [
                "--address",
                address,
                "--num-cpus",
                "1",
                "--dashboard-agent-listen-port",
                str(free_port()),
                "--object-store-memory",
                str(80 * 1024 * 1024),
            ],  # fmt: skip
            root / "w",
            {**base, "WHYREC_HOME": str(homes["worker"])},
            tmp_path / "worker.log",
        )
        nodes.append(worker)
        worker.wait_started()
        yield address, base, homes, root
    finally:
        for node in reversed(nodes):
            node.stop()
        shutil.rmtree(root, ignore_errors=True)


def cached_replies(home: Path) -> int:
    """Rows in a node's reply cache (0 when that node never answered)."""
    path = home / "llm" / "cache.sqlite"
    if not path.is_file():
        return 0
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
        return sum(db.execute(f"select count(*) from {t}").fetchone()[0] for t in tables)


def run_both(cmd: list[str], env: dict[str, str], address: str, tmp_path: Path) -> float:
    """The same job with the local backend, then on the cluster (two actors, 0.6 CPU
    each: no node holds both); returns the cluster run's seconds."""
    local = subprocess.run(
        [*cmd, "--out", str(tmp_path / "local")],
        env={**env, "WHYREC_HOME": str(tmp_path / "home-local")},
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert local.returncode == 0, local.stderr[-3000:]
    start = time.monotonic()
    on_ray = subprocess.run(
        [
            *cmd, "--out", str(tmp_path / "ray"), "--backend", "ray", "--ray-address", address,
            "--actors", "2", "--cpus-per-actor", "0.6",
        ],
        env={**env, "WHYREC_HOME": str(tmp_path / "home-driver")},
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    elapsed = time.monotonic() - start
    assert on_ray.returncode == 0, on_ray.stderr[-3000:]
    report = json.loads(on_ray.stdout.strip().splitlines()[-1])
    assert report["status"] == "complete" and report["backend"] == "ray"
    a, b = read_output(tmp_path / "local"), read_output(tmp_path / "ray")
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    a = a.sort_values("key").reset_index(drop=True).astype(str)
    b = b.sort_values("key").reset_index(drop=True).astype(str)
    assert a.equals(b)  # every column, raw replies and token counts included
    return elapsed


@pytest.mark.slow
def test_preferences_on_a_two_node_cluster_match_the_local_backend(
    two_node_cluster, endpoint, tiny_data_dir, tmp_path
):
    address, base, homes, root = two_node_cluster
    before = {name: cached_replies(home) for name, home in homes.items()}
    env = {**base, **endpoint.env(), "WHYREC_LLM_CACHE": "true"}
    users = tmp_path / "users.txt"
    users.write_text("".join(f"u{i}\n" for i in range(12)))
    cmd = [
        sys.executable, "-m", "whyrec", "batch", "preferences", str(tiny_data_dir),
        "--users", str(users), "--shard-size", "3", "--no-progress",
    ]  # fmt: skip
    elapsed = run_both(cmd, env, address, tmp_path)
    # each node's reply cache lives under its own WHYREC_HOME: what it holds, it answered
    per_node = {name: cached_replies(home) - before[name] for name, home in homes.items()}
    print(f"stub endpoint: cluster run {elapsed:.1f} s; replies cached per node: {per_node}")
    assert all(n > 0 for n in per_node.values()), per_node
    assert sum(per_node.values()) == 12  # one preference call per user, each asked once
    # Ray's view: each node's own logs name an LLMStage actor that ran there
    for node in ("h", "w"):
        logs = (root / node).glob("session_*/logs/worker-*.out")
        assert any("MapBatches(LLMStage)" in f.read_text(errors="replace") for f in logs), node


@pytest.mark.slow
def test_the_embedded_model_on_a_two_node_cluster_matches_the_local_backend(
    two_node_cluster, tiny_data_dir, tmp_path
):
    address, base, homes, root = two_node_cluster
    before = {name: cached_replies(home) for name, home in homes.items()}
    env = {
        **base,
        "WHYREC_LLM_BACKEND": "local",  # each actor loads the packaged SmolLM2 on its node
        "WHYREC_LLM_N_THREADS": "1",
        "WHYREC_LLM_N_CTX": "1024",
        "WHYREC_LLM_MAX_REASKS": "0",
    }
    users = tmp_path / "users.txt"
    users.write_text("u0\nu4\n")  # one per node
    cmd = [
        sys.executable, "-m", "whyrec", "batch", "preferences", str(tiny_data_dir),
        "--users", str(users), "-m", "2", "--max-tokens", "24", "--mode", "aspects",
        "--shard-size", "2", "--no-progress",
    ]  # fmt: skip
    elapsed = run_both(cmd, env, address, tmp_path)
    per_node = {name: cached_replies(home) - before[name] for name, home in homes.items()}
    print(f"SmolLM2: cluster run {elapsed:.1f} s; replies cached per node: {per_node}")
    assert all(n > 0 for n in per_node.values()), per_node
    rows = read_output(tmp_path / "ray")
    assert set(rows["model"]) == {"SmolLM2-135M-Instruct.Q4_1"}


# ------------------------------------------------------------------ what actors receive


def test_actor_settings_are_the_drivers_whatever_the_node_has(monkeypatch, tmp_path):
    from whyrec.batch.ray_backend import actor_settings, settings_from_values
    from whyrec.llm import LLMSettings

    driver = LLMSettings(  # seed=None: as a config file's "seed": null gives it
        backend="openai", model="m", base_url="http://127.0.0.1:1/v1", seed=None,
        cache_path="rel/cache.sqlite",
    )  # fmt: skip
    assert driver.seed is None
    values = actor_settings(driver, local_ray=False, cwd=tmp_path)
    assert values["cache_path"] == str(tmp_path / "rel" / "cache.sqlite")
    assert values["workers"] == 1 and "config_file" not in values
    # a worker node's own variables must not fill what the driver left unset
    monkeypatch.setenv("WHYREC_LLM_SEED", "7")
    monkeypatch.setenv("WHYREC_LLM_CHAT_FORMAT", "chatml")
    actor = settings_from_values(values)
    assert actor.seed is None and actor.chat_format is None
    assert actor.model_dump(exclude={"cache_path", "workers", "config_file"}) == driver.model_dump(
        exclude={"cache_path", "workers", "config_file"}
    )


def test_relative_model_path_is_made_absolute_but_home_paths_stay_per_node(tmp_path):
    from whyrec.batch.ray_backend import actor_settings
    from whyrec.llm import LLMSettings

    rel = LLMSettings.load(model_path="models/x.gguf", cache_path="~/c.sqlite")
    values = actor_settings(rel, local_ray=False, cwd=tmp_path)
    assert values["model_path"] == str(tmp_path / "models" / "x.gguf")
    assert values["cache_path"] == "~/c.sqlite"  # each node's own home
    # a local Ray started by the job shares the driver's cache, as an absolute path
    values = actor_settings(LLMSettings.load(cache_path="c.sqlite"), local_ray=True, cwd=tmp_path)
    assert values["cache_path"] == str(tmp_path / "c.sqlite")


def test_batches_are_cut_so_every_actor_can_get_one():
    from whyrec.batch.ray_backend import actors_that_fit, batch_plan

    # 12 rows, batch 8, 2 actors: two blocks of 6 would be joined into one task
    assert batch_plan(12, 8, 2) == (6, 2)
    assert batch_plan(1000, 8, 4) == (8, 125)
    assert batch_plan(3, 8, 5) == (1, 3)
    assert actors_that_fit([1.0, 1.0], 0.6) == 2
    assert actors_that_fit([1.0, 1.0], 1.5) == 0
    assert actors_that_fit([1.0], 1 / 3) == 3


def test_an_actor_with_another_whyrec_refuses_to_start():
    import whyrec
    from whyrec.batch.ray_backend import check_same_whyrec
    from whyrec.errors import ConfigError

    check_same_whyrec(whyrec.__version__)
    check_same_whyrec(None)
    with pytest.raises(ConfigError, match=r"whyrec .* installed, the driver runs 0\.0\.0-other"):
        check_same_whyrec("0.0.0-other")


def test_the_original_error_is_found_inside_rays_wrapping():
    from whyrec.batch.ray_backend import _root_cause

    inner = RuntimeError("")
    outer = ValueError(
        "The actor died because of an error raised in its creation task, \x1b[36mray::X\x1b[39m\n"
        '  File "x.py", line 1, in f\n'
        "whyrec.errors.ConfigError: Ray node n1: whyrec 0.1.0 is installed\n"
    )
    outer.__cause__ = inner
    try:
        raise RuntimeError("wrapper") from outer
    except RuntimeError as exc:
        found = _root_cause(exc)
    assert found == "whyrec.errors.ConfigError: Ray node n1: whyrec 0.1.0 is installed"
