"""Dry-run estimates and the ``whyrec llm`` commands."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from whyrec.cli.llm import app
from whyrec.llm import STAGE_PROFILES, LLMSettings, Throughput, estimate_stage
from whyrec.llm.errors import LLMConfigError

runner = CliRunner()


def test_estimate_arithmetic_for_an_api_model():
    settings = LLMSettings.load(backend="openai", model="gpt-4o-mini", concurrency=8)
    tp = Throughput(prefill=1000.0, decode=50.0, source="test")
    est = estimate_stage(
        "explanations",
        100,
        settings,
        prompt_tokens=1000,
        completion_tokens=100,
        retry_rate=0.5,
        throughput=tp,
    )
    assert est.calls == 100
    assert (est.prompt_tokens, est.completion_tokens) == (150_000, 15_000)
    assert est.cost_usd == pytest.approx((150_000 * 0.15 + 15_000 * 0.60) / 1e6)
    assert est.concurrency == 8
    assert est.seconds == pytest.approx(150 * (1.0 + 2.0) / 8)


def test_estimate_local_is_free_and_sequential():
    est = estimate_stage("preferences", 943, LLMSettings.load(concurrency=8), retry_rate=0)
    prof = STAGE_PROFILES["preferences"]
    assert est.prompt_tokens == 943 * prof.prompt_tokens and est.cost_usd == 0
    assert est.concurrency == 1 and est.model == "SmolLM2-135M-Instruct.Q4_1"
    speeds = LLMSettings.load(prefill_tokens_per_second=500, decode_tokens_per_second=25)
    est2 = estimate_stage("preferences", 10, speeds, retry_rate=0)
    assert est2.throughput.source == "settings"
    per_call = prof.prompt_tokens / 500 + prof.completion_tokens / 25
    assert est2.seconds == pytest.approx(10 * per_call)


def test_estimate_rejects_unknown_stages():
    with pytest.raises(ValueError, match="unknown stage 'ranking'"):
        estimate_stage("ranking", 1, LLMSettings.load())


def test_cli_estimate(tmp_path):
    r = runner.invoke(app, ["estimate", "--stage", "preferences", "--users", "943", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["calls"] == 943 and data["cost_usd"] == 0 and data["backend"] == "local"
    r = runner.invoke(
        app,
        ["estimate", "--stage", "explanations", "--users", "1000", "--backend", "openai",
         "--model", "gpt-4o", "--history-items", "20"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "openai · gpt-4o" in r.output and "cost         $" in r.output
    prof = STAGE_PROFILES["explanations"]
    per_call = prof.prompt_tokens - (prof.history_items - 20) * prof.tokens_per_item
    assert f"{per_call:,} prompt" in r.output
    cfg = tmp_path / "c.toml"
    cfg.write_text('backend = "openai"\nmodel = "my-llm"\n')
    r = runner.invoke(app, ["estimate", "--stage", "preferences", "--users", "5", "-c", str(cfg)])
    assert r.exit_code == 0 and "unknown: no price for 'my-llm'" in r.output


def test_cli_info_shows_backend_model_and_cache_without_loading(monkeypatch, tmp_path):
    r = runner.invoke(app, ["info", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["backend"] == "local" and data["model_path"].endswith(".gguf")
    assert data["loaded"] is False and data["cache"] == "on"
    assert data["cache_path"].startswith(os.environ["WHYREC_HOME"])  # per-test home
    monkeypatch.setenv("WHYREC_LLM_BACKEND", "openai")
    monkeypatch.setenv("WHYREC_LLM_MODEL", "gpt-4o-mini")
    monkeypatch.setenv("WHYREC_LLM_API_KEY_ENV", "SOME_KEY_VAR")
    monkeypatch.setenv("SOME_KEY_VAR", "sk-secret-value")
    r = runner.invoke(app, ["info"])
    assert r.exit_code == 0, r.output
    assert "gpt-4o-mini" in r.output and "SOME_KEY_VAR" in r.output
    assert "sk-secret-value" not in r.output


def test_cli_reports_bad_settings():
    r = runner.invoke(app, ["info", "--backend", "openai"])
    assert isinstance(r.exception, LLMConfigError)
    assert "needs 'model'" in str(r.exception)


def test_cli_clear_cache():
    r = runner.invoke(app, ["clear-cache"])
    assert r.exit_code == 0 and "removed 0 cached replies" in r.output


@pytest.mark.slow
def test_cli_chat_with_the_local_model(tmp_path):
    r = runner.invoke(app, ["chat", "Name a film.", "--max-tokens", "12"])
    assert r.exit_code == 0, r.output
    assert "local · SmolLM2-135M-Instruct.Q4_1" in r.output  # stats line (stderr is mixed in)
    schema = tmp_path / "s.json"
    schema.write_text(
        json.dumps(
            {
                "type": "object",
                "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
                "required": ["answer"],
            }
        )
    )
    r = runner.invoke(
        app,
        ["chat", "Is Alien a film? Reply in JSON.", "--schema", str(schema), "--max-tokens", "30",
         "--json"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    out = json.loads(r.output[: r.output.rindex("}") + 1])
    assert out["parsed"]["answer"] in ("yes", "no")
    r = runner.invoke(app, ["chat", "x", "--schema", str(tmp_path / "none.json")])
    assert r.exit_code == 2 and "cannot read a JSON schema" in r.output
