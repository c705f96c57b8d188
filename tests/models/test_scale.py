"""What keeps sequence-model training cheap at production size: the loss chosen by
catalogue size, gBCE with shared negatives, and validation streamed over users."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from whyrec.data.build import build_dataset
from whyrec.data.raw import RawData
from whyrec.errors import ConfigError
from whyrec.models import create_model, defaults
from whyrec.models.backbones import IdItemEmbedding, SASRecBackbone, SequentialModule
from whyrec.models.losses import gbce_beta, gbce_window_loss, next_item_loss
from whyrec.models.sequential import SequenceTask, SequentialConfig

FAST = {"dim": 16, "max_len": 12, "epochs": 1, "batch_size": 32}


def wide_dataset(n_users: int, n_items: int, length: int = 6):
    """Users walk a ring of ``n_items`` items (every item used), ``length`` steps each."""
    rows = [
        (f"u{u}", f"i{(u * 3 + t) % n_items}", t) for u in range(n_users) for t in range(length)
    ]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    inter["rating"] = np.nan
    items = pd.DataFrame(
        {"item_id": [f"i{i}" for i in range(n_items)], "title": [f"T{i}" for i in range(n_items)]}
    )
    return build_dataset(RawData(inter, items), name="wide", split="loo")


def tiny_module(n_items: int) -> SequentialModule:
    torch.manual_seed(0)
    return SequentialModule(IdItemEmbedding(n_items, 8), SASRecBackbone(8, max_len=8)).eval()


# ---------------------------------------------------------------- loss by catalogue
def test_default_loss_follows_the_catalogue_and_a_given_loss_wins(seq_ds, monkeypatch):
    assert defaults.default_loss(1_682) == "ce"  # ML-100k
    assert defaults.default_loss(3_706) == "ce"  # ML-1M
    assert defaults.default_loss(27_278) == "gbce"  # ML-20M
    small = create_model("sasrec", **FAST).fit(seq_ds, progress=False)
    assert small.config.loss == "ce" and small.training["loss"] == "ce"
    assert small.training["loss_choice"] == "automatic: 30 items < 5,000"

    monkeypatch.setattr(defaults, "AUTO_GBCE_MIN_ITEMS", 30)  # seq_ds's catalogue
    auto = create_model("sasrec", **FAST).fit(seq_ds, progress=False)
    assert auto.config.loss == "gbce" and auto.training["loss"] == "gbce"
    assert auto.training["loss_choice"] == "automatic: 30 items >= 30"
    given = create_model("gru4rec", loss="ce", **FAST).fit(seq_ds, progress=False)
    assert given.config.loss == "ce" and given.training["loss_choice"] == "given"
    assert defaults.defaults_for("bpr-mf", seq_ds).get("loss") is None


def test_gbce_negatives_option_is_checked():
    with pytest.raises(ConfigError, match="gbce_negatives"):
        SequentialConfig(loss="gbce", gbce_negatives="user")
    with pytest.raises(ConfigError, match="max_valid_users"):
        SequentialConfig(max_valid_users=0)


# ------------------------------------------------------------- shared negatives
def test_shared_gbce_matches_the_formula_and_skips_a_negative_equal_to_the_positive():
    torch.manual_seed(1)
    table = torch.randn(6, 4)  # 5 items + padding: collisions are certain with k = 12
    q = torch.randn(7, 4, requires_grad=True)
    tgt = torch.tensor([1, 2, 3, 4, 5, 1, 2])
    bias = torch.tensor(-0.5)
    k, t = 12, 0.75
    got = next_item_loss(
        "gbce", q, tgt, table, torch.Generator().manual_seed(4), n_negatives=k,
        gbce_t=t, bias=bias, shared=True,
    )  # fmt: skip
    neg = torch.randint(1, 6, (k,), generator=torch.Generator().manual_seed(4))
    assert (neg[None, :] == tgt[:, None]).any()  # the case under test occurs
    pos = (q * table[tgt]).sum(-1) + bias
    negl = q @ table[neg].T + bias
    keep = (neg[None, :] != tgt[:, None]).float()
    beta = gbce_beta(k, 5, t)
    manual = ((beta * F.softplus(-pos) + (F.softplus(negl) * keep).sum(-1)) / (k + 1)).mean()
    assert torch.allclose(got, manual, atol=1e-6)
    got.backward()
    assert torch.isfinite(q.grad).all()


def test_shared_negatives_cost_does_not_hold_positions_times_negatives():
    # per-position negatives gather an (N, k, d) tensor; shared ones only (k, d)
    n, k, d, items = 4_000, 256, 16, 50_000
    table = torch.randn(items + 1, d)
    q = torch.randn(n, d)
    tgt = torch.randint(1, items + 1, (n,))
    # torch's allocator is invisible to tracemalloc: compare autograd-saved sizes instead
    saved: list[int] = []

    def pack(x):
        saved.append(x.numel())
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        qq = q.clone().requires_grad_()
        next_item_loss("gbce", qq, tgt, table, torch.Generator(), n_negatives=k, shared=True)
    assert max(saved) < n * k * d / 8
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        qq = q.clone().requires_grad_()
        next_item_loss("gbce", qq, tgt, table, torch.Generator(), n_negatives=k, shared=False)
    assert max(saved) >= n * k * d  # the per-position draw does hold it


def test_window_gbce_matches_the_formula_per_window():
    torch.manual_seed(2)
    table = torch.cat([torch.zeros(1, 4), torch.randn(5, 4)])  # row 0: padding
    q = torch.randn(3, 4, 4, requires_grad=True)
    tgt = torch.tensor([[0, 1, 2, 3], [0, 0, 4, 5], [1, 2, 3, 4]])
    k, t = 9, 0.5
    got = gbce_window_loss(q, tgt, table, torch.Generator().manual_seed(5), n_negatives=k, gbce_t=t)
    neg = torch.randint(1, 6, (3, k), generator=torch.Generator().manual_seed(5))
    beta = gbce_beta(k, 5, t)
    rows = []
    for b in range(3):
        for pos in range(4):
            y = int(tgt[b, pos])
            if y == 0:
                continue
            s_pos = q[b, pos] @ table[y]
            s_neg = table[neg[b]] @ q[b, pos]
            keep = (neg[b] != y).float()
            rows.append((beta * F.softplus(-s_pos) + (F.softplus(s_neg) * keep).sum()) / (k + 1))
    assert len(rows) == 9
    assert torch.allclose(got, torch.stack(rows).mean(), atol=1e-6)
    got.backward()
    assert torch.isfinite(q.grad).all() and (q.grad[1, :2] == 0).all()  # padding: no gradient


@pytest.mark.parametrize("negatives", ["shared", "window"])
def test_sasrec_learns_with_cheap_gbce(seq_ds, negatives):
    from whyrec.evaluate import evaluate

    model = create_model(
        "sasrec", dim=32, max_len=16, epochs=15, patience=15, batch_size=32, lr=0.005,
        dropout=0.1, loss="gbce", n_negatives=16, gbce_negatives=negatives,
    ).fit(seq_ds, progress=False)  # fmt: skip
    assert evaluate(model, seq_ds, protocols="full")["full"]["HR@5"] > 0.8


# ------------------------------------------------------------ streamed validation
@pytest.fixture(scope="module")
def wide_ds():
    return wide_dataset(n_users=4_000, n_items=3_000)


def test_validation_streams_over_users_and_agrees_with_one_batch(wide_ds):
    task = SequenceTask(tiny_module(wide_ds.n_items), wide_ds, SequentialConfig(max_len=8))
    assert len(task.val_users) == 4_000
    one = task.validate(batch_size=100_000)
    assert task.validate(batch_size=37) == pytest.approx(one, abs=1e-12)
    assert 0.0 <= one < 1.0

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        task.validate()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    full_matrix = len(task.val_users) * wide_ds.n_items * 4  # 48 MB of float32 scores
    assert peak < full_matrix, f"validation peak {peak / 1e6:.1f} MB"


def test_validation_users_are_a_seeded_sample_above_the_cap(wide_ds):
    cfg = SequentialConfig(max_len=8, max_valid_users=500)
    a = SequenceTask(tiny_module(wide_ds.n_items), wide_ds, cfg)
    b = SequenceTask(tiny_module(wide_ds.n_items), wide_ds, cfg)
    c = SequenceTask(tiny_module(wide_ds.n_items), wide_ds, SequentialConfig(max_len=8, seed=1))
    assert len(a.val_users) == 500 and np.array_equal(a.val_users, b.val_users)
    assert np.all(np.diff(a.val_users) > 0)
    assert len(c.val_users) == 4_000
    users, _, targets = wide_ds.histories_for("valid")
    lookup = dict(zip(users.tolist(), targets.tolist(), strict=True))
    assert [lookup[u] for u in a.val_users.tolist()] == a.val_targets.tolist()
