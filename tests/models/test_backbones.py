"""Properties the backbones must have: causal, padding-invariant, LANE-ready."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from whyrec.models.backbones import (
    GRU4RecBackbone,
    IdItemEmbedding,
    SASRecBackbone,
    SequentialModule,
    TextItemEmbedding,
)
from whyrec.models.defaults import dataset_profile, defaults_for
from whyrec.models.losses import gbce_beta, next_item_loss, sample_negatives


def module(kind, n_items=20, dim=16, max_len=10):
    torch.manual_seed(0)
    if kind == "sasrec":
        bb = SASRecBackbone(dim, max_len=max_len, n_blocks=2, n_heads=2, dropout=0.0)
    else:
        bb = GRU4RecBackbone(dim, max_len=max_len, dropout=0.0)
    return SequentialModule(IdItemEmbedding(n_items, dim), bb).eval()


@pytest.mark.parametrize("kind", ["sasrec", "gru4rec"])
def test_states_are_causal(kind):
    m = module(kind)
    seq = torch.tensor([[0, 0, 3, 5, 7, 9, 2]])
    changed = seq.clone()
    changed[0, 5] = 11  # change the item at position 5
    with torch.no_grad():
        a, b = m.query(seq), m.query(changed)
    assert torch.allclose(a[0, :5], b[0, :5], atol=1e-6)  # the past does not see the future
    assert not torch.allclose(a[0, 5:], b[0, 5:])


@pytest.mark.parametrize("kind", ["sasrec", "gru4rec"])
def test_left_padding_does_not_change_states(kind):
    m = module(kind)
    short = torch.tensor([[4, 8, 1]])
    padded = torch.tensor([[0, 0, 0, 0, 4, 8, 1]])
    batch = torch.tensor([[0, 0, 0, 0, 4, 8, 1], [3, 3, 2, 6, 5, 4, 1]])
    with torch.no_grad():
        a = m.query(short)[0]
        b = m.query(padded)[0, -3:]
        c = m.query(batch)[0, -3:]
        assert (m.query(padded)[0, :4] == 0).all()  # padding positions hold no state
    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(a, c, atol=1e-5)


def test_item_tables_keep_padding_row_zero_and_shape():
    ids = IdItemEmbedding(7, 4)
    assert ids.table().shape == (8, 4) and (ids.table()[0] == 0).all()
    vecs = torch.randn(7, 12)
    text = TextItemEmbedding(vecs, 4)
    t = text.table()
    assert t.shape == (8, 4) and (t[0] == 0).all()
    t.sum().backward()
    assert text.weight.grad is not None
    same_dim = TextItemEmbedding(vecs, None, center=False)
    assert same_dim.proj is None and same_dim.dim == 12
    # without centring the table is the text vectors, rescaled to mean norm 1
    cos = F.cosine_similarity(same_dim.table()[1:], vecs, dim=1)
    assert torch.allclose(cos, torch.ones(7), atol=1e-5)


def test_pca_projection_keeps_the_text_geometry():
    torch.manual_seed(0)
    low_rank = torch.randn(40, 6) @ torch.randn(6, 32)  # 32-d vectors spanning 6 dims
    emb = TextItemEmbedding(low_rank, 8, projection="pca")
    assert emb.proj is None and emb.weight.shape == (41, 8)
    table = emb.table()[1:].detach()
    centred = low_rank - low_rank.mean(0)
    d_text = torch.cdist(centred, centred)
    d_pca = torch.cdist(table, table)
    off = ~torch.eye(40, dtype=torch.bool)
    ratio = d_pca[off] / d_text[off]
    assert torch.allclose(ratio, ratio.mean().expand_as(ratio), rtol=1e-3)  # only rescaled
    with pytest.raises(ValueError, match="projection"):
        TextItemEmbedding(low_rank, 8, projection="random")


def test_score_all_is_query_dot_items():
    m = module("sasrec")
    seq = torch.tensor([[0, 2, 3], [1, 4, 5]])
    with torch.no_grad():
        scores = m.score_all(seq)
        q = m.query(seq)[:, -1]
        table = m.item_table()[1:]
    assert scores.shape == (2, 20)
    assert torch.allclose(scores, q @ table.T, atol=1e-5)


def test_losses():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    table = torch.randn(11, 4)
    q = torch.randn(6, 4)
    tgt = torch.tensor([1, 2, 3, 4, 5, 10])
    ce = next_item_loss("ce", q, tgt, table, gen)
    logits = q @ table.T
    assert torch.allclose(ce, F.cross_entropy(logits[:, 1:], tgt - 1))  # padding never predicted
    bce = next_item_loss("bce", q, tgt, table, gen)
    assert bce > 0 and torch.isfinite(bce)
    g = next_item_loss("gbce", q, tgt, table, gen, n_negatives=5, gbce_t=0.5)
    assert torch.isfinite(g)
    neg = sample_negatives(tgt, 10, 50, torch.Generator().manual_seed(1))
    assert (neg != tgt[:, None]).all() and neg.min() >= 1 and neg.max() <= 10
    assert gbce_beta(5, 11, 0.0) == pytest.approx(1.0)  # t=0: plain BCE
    assert gbce_beta(5, 11, 1.0) == pytest.approx(0.5)  # t=1: beta = alpha = k/(n-1)
    with pytest.raises(ValueError):
        next_item_loss("hinge", q, tgt, table, gen)


def test_gbce_with_t0_equals_bce_with_many_negatives_scaled():
    table = torch.randn(9, 3)
    q = torch.randn(4, 3)
    tgt = torch.tensor([1, 2, 3, 4])
    g = next_item_loss(
        "gbce", q, tgt, table, torch.Generator().manual_seed(3), n_negatives=3, gbce_t=0.0
    )
    neg = sample_negatives(tgt, 8, 3, torch.Generator().manual_seed(3))
    pos = (q * table[tgt]).sum(-1)
    negl = torch.einsum("nd,nkd->nk", q, table[neg])
    manual = ((F.softplus(-pos) + F.softplus(negl).sum(-1)) / 4).mean()
    assert torch.allclose(g, manual, atol=1e-6)


def test_dataset_profiles(seq_ds):
    assert dataset_profile(seq_ds) == "sparse"  # ~11 interactions per user
    assert defaults_for("sasrec", seq_ds) == {"max_len": 50, "dropout": 0.5}
    seq_ds.manifest["name"] = "movielens-100k"
    try:
        assert dataset_profile(seq_ds) == "dense"
    finally:
        seq_ds.manifest["name"] = "tiny-seq"


def test_constructor_values_beat_dataset_defaults(seq_ds):
    from whyrec.models import create_model

    m = create_model("gru4rec", dim=8, epochs=1, dropout=0.05).fit(seq_ds, progress=False)
    assert m.config.dropout == 0.05 and m.config.max_len == 50  # given / profile default
    assert np.isfinite(m.training["valid_ndcg10"])


def test_logit_bias_starts_at_the_loss_optimum_and_never_changes_rankings():
    from whyrec.models.losses import initial_logit_bias

    b = initial_logit_bias("gbce", 256, 1682, 0.75)
    beta = gbce_beta(256, 1682, 0.75)
    # the derivative of beta*softplus(-b) + k*softplus(b) vanishes there
    assert -beta * torch.sigmoid(torch.tensor(-b)) + 256 * torch.sigmoid(torch.tensor(b)) == (
        pytest.approx(0.0, abs=1e-6)
    )
    assert initial_logit_bias("ce", 256, 1682, 0.75) == 0.0
    m = module("sasrec")
    seq = torch.tensor([[0, 2, 3]])
    with torch.no_grad():
        before = m.score_all(seq)
        m.logit_bias.fill_(-5.0)
        assert torch.equal(before, m.score_all(seq))


@pytest.mark.parametrize("loss", ["bce", "gbce"])
def test_sampled_losses_learn_without_a_plateau(seq_ds, loss):
    # gBCE with many negatives used to sit at popularity level for dozens of epochs
    # until the global logit bias absorbed its push on every score
    from whyrec.evaluate import evaluate
    from whyrec.models import create_model

    model = create_model(
        "sasrec", dim=32, max_len=16, epochs=15, patience=15, batch_size=32, lr=0.005,
        dropout=0.1, loss=loss, n_negatives=16,
    ).fit(seq_ds, progress=False)  # fmt: skip
    assert evaluate(model, seq_ds, protocols="full")["full"]["HR@5"] > 0.8
