"""Re-encoding the packaged GGUF's weights (``weights`` / WHYREC_LLM_WEIGHTS) with llama.cpp's
own quantiser, on the real packaged SmolLM2 model."""

from __future__ import annotations

import pytest

from whyrec.llm import LLMClient, LLMSettings
from whyrec.llm.backends.batched import BatchedLocalBackend
from whyrec.llm.backends.local import LocalBackend, converted_model_path, packaged_model_path
from whyrec.llm.errors import LLMConfigError

pytestmark = pytest.mark.slow


def test_unknown_format_is_a_settings_error():
    with pytest.raises(LLMConfigError, match="WHYREC_LLM_WEIGHTS"):
        LLMSettings.load(weights="q9_9")
    with pytest.raises(LLMConfigError, match="not a known format"):
        converted_model_path(packaged_model_path(), "q9_9")


def test_conversion_runs_once_and_is_keyed_by_the_source(tmp_path):
    src = packaged_model_path()
    out = converted_model_path(src, "f16", tmp_path)
    assert out.parent == tmp_path and out.name.startswith(f"{src.stem}.f16.")
    # F16 holds every Q4_1 weight exactly: about 2 bytes per weight (the model has ~135M)
    assert 250e6 < out.stat().st_size < 300e6
    stamp = out.stat().st_mtime_ns
    assert converted_model_path(src, "F16", tmp_path) == out  # found, not converted again
    assert out.stat().st_mtime_ns == stamp
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    # a different source file gets its own converted file
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(src.read_bytes())
    assert converted_model_path(copy, "f16", tmp_path).name.startswith("copy.f16.")


def test_a_broken_source_file_is_named(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 4096)
    with pytest.raises(LLMConfigError, match=r"broken\.gguf.*could not re-encode"):
        converted_model_path(bad, "q8_0", tmp_path / "out")
    assert not list((tmp_path / "out").glob("*"))  # nothing half-written is left behind


def test_f16_backend_replies_and_keeps_its_own_cache_identity(tmp_path, monkeypatch):
    monkeypatch.setenv("WHYREC_HOME", str(tmp_path))
    packaged = LocalBackend(LLMSettings.load())
    backend = LocalBackend(LLMSettings.load(weights="f16", n_threads=1))
    try:
        # replies of re-encoded weights are not the packaged file's: never share cache rows
        assert backend.identity() != packaged.identity()
        assert backend.identity()["weights"] == "f16" and "weights" not in packaged.identity()
        assert backend.model.endswith(".f16")
        client = LLMClient(LLMSettings.load(weights="f16", cache=False), backend=backend)
        res = client.complete("Name a famous film.", max_tokens=16, stage="chat")
        assert res.text.strip() and res.model == backend.model
        assert backend.loaded_path is not None
        assert backend.loaded_path.parent == tmp_path / "llm" / "models"
        assert backend.describe()["weights"] == "f16"
    finally:
        backend.close()
        packaged.close()


def test_batched_f16_matches_sequential_f16_on_short_replies(tmp_path, monkeypatch):
    """Batched decoding on re-encoded weights gives the sequential replies (short greedy
    replies; longer ones may part at a near-tie, see docs/batch.md)."""
    monkeypatch.setenv("WHYREC_HOME", str(tmp_path))
    settings = LLMSettings.load(weights="f16", n_threads=1, cache=False)
    local = LocalBackend(settings)
    batched = BatchedLocalBackend(settings, n_parallel=3, local=local)
    try:
        prompts = [f"Name one film about {t}." for t in ("space", "dogs", "the sea")]
        seq = LLMClient(settings, backend=local)
        par = LLMClient(settings, backend=batched)
        a = [seq.complete(p, max_tokens=12, stage="t").text for p in prompts]
        reqs = [{"messages": [{"role": "user", "content": p}], "max_tokens": 12} for p in prompts]
        b = [r.text for r in par.complete_many(reqs, concurrency=3)]
        assert all(a) and sum(x == y for x, y in zip(a, b, strict=True)) >= 2
        assert batched.engine.max_active >= 2  # they really were decoded together
    finally:
        batched.close()
        local.close()
