"""Settings: defaults, config file, environment, explicit values, and their precedence."""

from __future__ import annotations

import json

import pytest

from whyrec.llm.errors import LLMConfigError
from whyrec.llm.settings import BUILTIN_PRICES, LLMSettings, Price


def test_defaults_need_no_network_and_no_key():
    s = LLMSettings.load()
    assert s.backend == "local" and s.model is None and s.n_threads == 2
    assert s.cache is True and s.config_file is None
    assert s.resolved_cache_path().name == "cache.sqlite"


def test_precedence_explicit_over_env_over_file_over_default(tmp_path, monkeypatch):
    cfg = tmp_path / "whyrec.toml"
    cfg.write_text("[llm]\nn_threads = 3\nn_ctx = 1024\nmax_reasks = 5\n")
    s = LLMSettings.load(cfg)
    assert (s.n_threads, s.n_ctx, s.max_reasks, s.config_file) == (3, 1024, 5, cfg)
    monkeypatch.setenv("WHYREC_LLM_N_THREADS", "4")
    s = LLMSettings.load(cfg)
    assert (s.n_threads, s.n_ctx) == (4, 1024)
    s = LLMSettings.load(cfg, n_threads=6, n_ctx=None)  # None means "not given"
    assert (s.n_threads, s.n_ctx) == (6, 1024)


def test_config_file_from_environment_and_json(tmp_path, monkeypatch):
    cfg = tmp_path / "llm.json"
    cfg.write_text(json.dumps({"backend": "openai", "model": "m", "base_url": "http://x/v1"}))
    monkeypatch.setenv("WHYREC_LLM_CONFIG", str(cfg))
    s = LLMSettings.load()
    assert (s.backend, s.model, s.base_url) == ("openai", "m", "http://x/v1")


def test_prices_extend_the_builtin_table(tmp_path, monkeypatch):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[prices.my-model]\ninput = 1.5\noutput = 4\n")
    s = LLMSettings.load(cfg)
    assert s.price_for("my-model") == Price(input=1.5, output=4)
    assert s.price_for("gpt-4o-mini") == BUILTIN_PRICES["gpt-4o-mini"]
    # dated snapshots find their family; unknown models have no price
    assert s.price_for("gpt-4o-mini-2024-07-18") == BUILTIN_PRICES["gpt-4o-mini"]
    assert s.price_for("llama3") is None
    monkeypatch.setenv("WHYREC_LLM_PRICES", '{"gpt-4o": {"input": 9, "output": 9}}')
    assert LLMSettings.load().price_for("gpt-4o") == Price(input=9, output=9)


def test_errors_name_the_field_the_variable_and_the_file(tmp_path, monkeypatch):
    bad = tmp_path / "bad.toml"
    bad.write_text("n_thread = 2\n")
    with pytest.raises(LLMConfigError, match=r"config file .*bad.toml.*n_thread: unknown setting"):
        LLMSettings.load(bad)
    monkeypatch.setenv("WHYREC_LLM_TIMEOUT", "soon")
    with pytest.raises(LLMConfigError, match=r"timeout \(env WHYREC_LLM_TIMEOUT\)"):
        LLMSettings.load()
    monkeypatch.delenv("WHYREC_LLM_TIMEOUT")
    with pytest.raises(LLMConfigError, match="backend 'openai' needs 'model'"):
        LLMSettings.load(backend="openai")
    with pytest.raises(LLMConfigError, match="not found"):
        LLMSettings.load(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("backend = \n")
    with pytest.raises(LLMConfigError, match="broken.toml: not valid TOML"):
        LLMSettings.load(broken)


def test_secrets_are_refused(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('api_key = "sk-live-123"\n')
    with pytest.raises(LLMConfigError, match="secrets never go in config files"):
        LLMSettings.load(cfg)
    with pytest.raises(LLMConfigError, match="NAME of an environment variable"):
        LLMSettings.load(api_key_env="sk-live-123")
    s = LLMSettings.load(api_key_env="MY_KEY")
    assert "MY_KEY" in repr(s) and s.api_key_env == "MY_KEY"
