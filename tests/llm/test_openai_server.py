"""The openai backend against a real OpenAI-compatible server: llama-cpp-python's own
server running the packaged SmolLM2 model on 127.0.0.1."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import pytest
from pydantic import BaseModel, Field

from whyrec.llm import LLMClient, LLMSettings

pytestmark = pytest.mark.slow


class Films(BaseModel):
    films: list[str] = Field(min_length=1, max_length=3)


@pytest.fixture
def client(llama_server):
    settings = LLMSettings.load(
        backend="openai", base_url=llama_server, model="smollm2", cache=False, timeout=120
    )
    with LLMClient(settings) as c:
        yield c


def test_chat_through_the_endpoint(client):
    res = client.complete("Name a famous film.", max_tokens=20, stage="chat")
    assert res.text.strip() and res.backend == "openai" and res.model == "smollm2"
    assert res.prompt_tokens > 5 and 0 < res.completion_tokens <= 20
    assert client.info()["base_url"] == client.backend.base_url


def test_structured_output_finds_the_servers_json_mode(client):
    msgs = [
        {"role": "system", "content": "You are a helpful assistant. Reply in JSON."},
        {"role": "user", "content": "Name three famous films."},
    ]
    res = client.complete(msgs, schema=Films, max_tokens=100)
    assert isinstance(res.parsed, Films) and 1 <= len(res.parsed.films) <= 3
    # llama-cpp-python's server has no json_schema response_format, but takes
    # json_object with a schema: the client steps down once and stays there.
    assert client.backend.structured_mode == "json_object"


def test_batch_against_the_endpoint(client):
    out = client.complete_many(
        [{"messages": f"Say {w}.", "max_tokens": 8, "tag": w} for w in ("yes", "no", "maybe")],
        concurrency=2,
    )
    assert [o.ok for o in out] == [True, True, True]
    assert [o.tag for o in out] == ["yes", "no", "maybe"]


def test_whyrec_llm_serve_exposes_the_packaged_model(tmp_path):
    """`whyrec llm serve` becomes llama-cpp-python's server on 127.0.0.1; the openai
    backend talks to it under the announced model name."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "whyrec.cli",
            "llm",
            "serve",
            "--port",
            str(port),
            "--n-ctx",
            "1024",
        ],  # fmt: skip
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            try:
                models = httpx.get(f"{base}/models", timeout=2).json()
                break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server not ready after 120 s"
            time.sleep(0.25)
        assert models["data"][0]["id"] == "SmolLM2-135M-Instruct.Q4_1"
        settings = LLMSettings.load(
            backend="openai", base_url=base, model=models["data"][0]["id"], cache=False
        )
        with LLMClient(settings) as client:
            assert client.complete("Say hi.", max_tokens=8).text.strip()
    finally:
        proc.terminate()  # the server itself (serve exec'd into it), not a wrapper
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()
    assert (
        "serving SmolLM2-135M-Instruct.Q4_1 at http://127.0.0.1"
        in (tmp_path / "serve.log").read_text()
    )
