"""``backend="ray"``: the LLM stage on Ray Data actors, on a local Ray started here.

Both actor kinds are checked against the local backend: actors holding the embedded
SmolLM2 model (preferences), and actors calling an OpenAI-compatible endpoint with a
QPS limit (explanations). Same rows, same schema.
"""

from __future__ import annotations

import time

import pytest

from whyrec.batch import BatchOptions, ExplanationJob, PreferenceJob, read_output, run_batch
from whyrec.llm import LLMClient, LLMSettings

pytestmark = pytest.mark.slow

ray = pytest.importorskip("ray", reason="the ray extra is not installed")


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    home = tmp_path_factory.mktemp("ray_home")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=100 * 1024 * 1024,
        runtime_env={"env_vars": {"WHYREC_HOME": str(home), "OMP_NUM_THREADS": "1"}},
        log_to_driver=False,
    )
    yield
    ray.shutdown()


def _same(a, b, cols):
    a = a[cols].sort_values("key").reset_index(drop=True).astype(str)
    b = b[cols].sort_values("key").reset_index(drop=True).astype(str)
    return a.equals(b)


def test_ray_actors_with_the_embedded_model_match_the_local_backend(
    local_ray, tiny_data_dir, tmp_path
):
    settings = LLMSettings.load(
        backend="local", n_threads=1, n_ctx=1024, max_reasks=0, cache=False, n_parallel=3
    )
    users = tmp_path / "users.txt"
    users.write_text("u0\nu4\nu8\n")
    client = LLMClient(settings)
    # per-aspect prompts (the small-model mode): two LLM calls per user, m=2
    job = PreferenceJob(tiny_data_dir, client=client, m=2, max_tokens=24)
    assert job.extractor.mode == "aspects"
    local = run_batch(
        job, tmp_path / "local", str(users), client=client,
        options=BatchOptions(shard_size=2, progress=False),
    )  # fmt: skip
    on_ray = BatchOptions(backend="ray", shard_size=2, progress=False, ray_batch_size=3)
    via_ray = run_batch(job, tmp_path / "ray", str(users), settings=settings, options=on_ray)
    client.close()
    assert local.status == via_ray.status == "complete" and via_ray.computed_now == 3
    a, b = read_output(tmp_path / "local"), read_output(tmp_path / "ray")
    assert list(a.columns) == list(b.columns)  # identical shard schema
    assert _same(a, b, [c for c in a.columns if c != "raw_reply"] + ["raw_reply"])
    assert set(b["model"]) == {"SmolLM2-135M-Instruct.Q4_1"} and b["prompt_tokens"].min() > 0


def test_ray_actors_calling_an_endpoint_respect_the_qps_limit(
    local_ray, endpoint, tiny_lane_run, tmp_path
):
    settings = LLMSettings.load(
        backend="openai", model="stub-1", base_url=endpoint.base_url, max_retries=2,
        backoff_base=0.01, cache=False,
    )  # fmt: skip
    client = LLMClient(settings)
    job = ExplanationJob(tiny_lane_run, client=client, k=1)
    users = tmp_path / "users.txt"
    users.write_text("u0\nu1\nu2\nu3\nu5\nu7\n")
    run_batch(
        job, tmp_path / "local", str(users), client=client, options=BatchOptions(progress=False)
    )
    calls = iter(range(1000))
    endpoint.fail = lambda body: next(calls) % 4 == 1  # transient 500s: the actors retry
    endpoint.log.clear()
    start = time.monotonic()
    report = run_batch(
        job, tmp_path / "ray", str(users), settings=settings,
        options=BatchOptions(
            backend="ray", progress=False, actors=2, cpus_per_actor=0.5, qps=8.0, ray_batch_size=2,
            concurrency=3,
        ),
    )  # fmt: skip
    elapsed = time.monotonic() - start
    assert report.status == "complete" and report.done == 6
    attempts = len(endpoint.log)
    assert attempts > 6  # some calls were retried after a 500
    # 2 actors x 4 qps each: the limiter spaces each actor's *sends* by 0.25 s. The server
    # sees arrivals, and an actor's first request also opens its connection, so its arrival
    # can come late and close to the second one (seen in CI: 0.595 s span for 8 attempts,
    # against 0.75 s of sends). So: the busiest actor sent at least half the attempts, and
    # the arrivals of its second to last send are at least (k - 2) x 0.25 s apart, less
    # some scheduling jitter. Without a limiter all of them arrive within a few ms.
    stamps = endpoint.times[-attempts:]
    busiest = -(-attempts // 2)
    assert (stamps[-1] - stamps[0]) >= (busiest - 2) / 4.0 - 0.1
    assert elapsed > 0
    a, b = read_output(tmp_path / "local"), read_output(tmp_path / "ray")
    assert list(a.columns) == list(b.columns)
    assert _same(a, b, list(a.columns))
