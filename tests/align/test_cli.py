"""``whyrec align build | train | evaluate | explain`` end to end on tiny data and a tiny LLM."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from whyrec.cli import app
from whyrec.errors import ConfigError

pytest.importorskip("peft")
runner = CliRunner()


def run(*args):
    res = runner.invoke(app, ["align", *map(str, args)])
    assert res.exit_code == 0, (res.output, res.exception)
    return res.stdout


@pytest.fixture(scope="module")
def dirs(tmp_path_factory, ring_ds, f_model, smol_tokenizer):
    import copy

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from whyrec.data.dataset import Dataset

    root = tmp_path_factory.mktemp("align-cli")
    Dataset(ring_ds.interactions, ring_ds.items, ring_ds.users, dict(ring_ds.manifest)).save(
        root / "ds"
    )
    f_model.save(root / "f")
    torch.manual_seed(0)
    tok = copy.deepcopy(smol_tokenizer)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(cfg).save_pretrained(root / "tiny")
    tok.save_pretrained(root / "tiny")
    return root


def test_build_train_evaluate_explain(dirs, tmp_path):
    d = dirs
    out = json.loads(
        run(
            "build",
            "--model",
            d / "f",
            "--data",
            d / "ds",
            "--form",
            "hybrid",
            "-n",
            16,
            "--users",
            12,
            "--max-history",
            4,
            "--out",
            tmp_path / "train",
        )  # fmt: skip
    )
    assert out["samples"] == 16
    assert (tmp_path / "train" / "openai.jsonl").is_file()
    assert (tmp_path / "train" / "hf").is_dir()
    out = json.loads(
        run(
            "build",
            "--model",
            d / "f",
            "--data",
            d / "ds",
            "--form",
            "hybrid",
            "--eval",
            "--users",
            3,
            "--users-offset",
            12,
            "--max-history",
            4,
            "--out",
            tmp_path / "ev",
        )  # fmt: skip
    )
    train_users = json.loads((tmp_path / "train" / "manifest.json").read_text())["users"]
    eval_users = json.loads((tmp_path / "ev" / "manifest.json").read_text())["users"]
    assert len(eval_users) == 3 and not set(train_users) & set(eval_users)
    assert out["counts"]["hybrid/interest"] == 6  # one yes and one no per user

    out = json.loads(
        run(
            "train",
            tmp_path / "train",
            "--out",
            tmp_path / "run",
            "--base",
            d / "tiny",
            "--steps",
            2,
            "--batch-size",
            2,
            "--lora-r",
            2,
            "--no-progress",
        )  # fmt: skip
    )
    assert out["steps"] == 2
    report = json.loads(
        run(
            "evaluate",
            tmp_path / "run",
            "--samples",
            tmp_path / "ev",
            "--format",
            "json",
            "--out",
            tmp_path / "rep.json",
        )  # fmt: skip
    )
    al = report["alignment"]
    assert al["form"] == "hybrid" and al["interest"]["n"] == 6 and al["history"]["n"] == 3
    assert al["retrieval_trie"]["valid_title_rate"] == 1.0
    assert json.loads((tmp_path / "rep.json").read_text())["alignment"]["ranking"]["n"] == 3

    run("build", "--data", d / "ds", "--knowledge", "eval", "--users", 3, "--out", tmp_path / "k")
    report = json.loads(
        run(
            "evaluate",
            "untuned",
            "--base",
            d / "tiny",
            "--samples",
            tmp_path / "k",
            "--model",
            d / "f",
            "--beams",
            3,
            "--format",
            "json",
        )  # fmt: skip
    )
    assert report["knowledge"]["n"] == 3 and report["recommender"]["n"] == 3
    assert "Recall@10" in report["knowledge"] and "NDCG@10" in report["recommender"]

    explained = json.loads(run("explain", tmp_path / "run", "--model", d / "f", "--user", "u0",
                               "-k", 2, "--max-new-tokens", 8))  # fmt: skip
    assert len(explained) == 2
    for e in explained:
        assert e["reason_source"] in ("surrogate", "template") and e["reason"]
        assert e["model"].startswith("surrogate:") and e["rank"] >= 1


def test_knowledge_mixture_and_errors(dirs, tmp_path):
    d = dirs
    out = json.loads(
        run(
            "build",
            "--data",
            d / "ds",
            "--knowledge",
            "rec+aux",
            "-n",
            12,
            "--mix",
            "mim=1,bpr=1",
            "--out",
            tmp_path / "k",
        )  # fmt: skip
    )
    assert set(out["counts"]) == {"text/mim", "text/bpr"}
    res = runner.invoke(app, ["align", "build", "--data", str(d / "ds"), "--out", str(tmp_path)])
    assert isinstance(res.exception, ConfigError) and "--model" in str(res.exception)
    res = runner.invoke(
        app,
        [
            "align",
            "build",
            "--data",
            str(d / "ds"),
            "--knowledge",
            "rec",
            "--users",
            "x",
            "--out",
            str(tmp_path / "x"),
        ],  # fmt: skip
    )
    assert isinstance(res.exception, ConfigError) and "--users" in str(res.exception)
