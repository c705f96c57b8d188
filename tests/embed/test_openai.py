import json

import httpx
import numpy as np
import pytest

from whyrec.embed import OpenAIEncoder, encoder_from_config, get_encoder
from whyrec.errors import ConfigError, ModelError


def fake_server(requests):
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        requests.append((request, body))
        if body["model"] == "broken":
            return httpx.Response(400, json={"error": {"message": "no such model"}})
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(t)), float(i), 1.0]}
            for i, t in enumerate(body["input"])
        ]
        data.reverse()  # servers may return any order; the index field decides
        return httpx.Response(
            200,
            json={
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": 1, "total_tokens": 1},
            },
        )

    return httpx.Client(transport=httpx.MockTransport(handler))


def test_embeddings_endpoint_roundtrip_and_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("MY_EMBED_KEY", "sk-test")
    requests = []
    enc = OpenAIEncoder(
        "text-embed-x",
        base_url="http://embed.local/v1",
        api_key_env="MY_EMBED_KEY",
        http_client=fake_server(requests),
        batch_size=2,
    )
    out = enc.encode(["a", "bbb", "cc"], progress=False)
    assert out.dtype == np.float32
    assert out[:, 0].tolist() == [1.0, 3.0, 2.0]
    assert len(requests) == 2  # batches of 2
    req, body = requests[0]
    assert str(req.url) == "http://embed.local/v1/embeddings"
    assert req.headers["authorization"] == "Bearer sk-test"
    assert body["model"] == "text-embed-x" and body["input"] == ["a", "bbb"]
    assert enc.dim == 3
    again = OpenAIEncoder(
        "text-embed-x",
        base_url="http://embed.local/v1",
        api_key_env="MY_EMBED_KEY",
        http_client=fake_server(requests),
    )
    np.testing.assert_array_equal(again.encode(["cc", "a"], progress=False), out[[2, 0]])
    assert len(requests) == 2  # served from the cache


def test_key_comes_from_the_named_variable(monkeypatch):
    monkeypatch.delenv("MISSING_KEY", raising=False)
    enc = OpenAIEncoder("m", api_key_env="MISSING_KEY", cache=False)
    with pytest.raises(ConfigError, match="MISSING_KEY"):
        enc.encode(["x"], progress=False)
    cfg = enc.config()
    assert cfg["api_key_env"] == "MISSING_KEY" and "sk-" not in json.dumps(cfg)
    assert isinstance(encoder_from_config(cfg), OpenAIEncoder)
    assert get_encoder("openai:m", api_key_env="X").model == "m"


def test_server_errors_become_model_errors(monkeypatch):
    monkeypatch.setenv("K", "k")
    enc = OpenAIEncoder(
        "broken", api_key_env="K", cache=False, max_retries=0, http_client=fake_server([])
    )
    with pytest.raises(ModelError, match="embedding request"):
        enc.encode(["x"], progress=False)
