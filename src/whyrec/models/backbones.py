"""Reusable torch parts of the sequence models: item tables, backbones, the scorer.

Conventions shared by every part:

* item index ``i`` of the dataset is row ``i + 1`` of an item table; row 0 is padding;
* sequences are left-padded with 0 to a fixed length ``L``, so the last column always
  holds the most recent item;
* a backbone maps embedded sequences ``(B, L, d)`` to per-position hidden states
  ``(B, L, d)`` where state ``t`` has seen items ``0..t`` only (causal);
* a :class:`SequentialModule` turns states into *query* vectors (identity by default;
  LANE overrides :meth:`SequentialModule.query` to align them with user preferences)
  and scores items by ``query · item vector``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


# ------------------------------------------------------------------ item tables
class ItemEmbedding(nn.Module):
    """Base of item tables: ``table()`` is the ``(n_items + 1, d)`` matrix, row 0 zero."""

    dim: int
    n_items: int

    def table(self) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, idx: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        return F.embedding(idx, self.table() if table is None else table)


class IdItemEmbedding(ItemEmbedding):
    """One free vector per item (SASRec-ID, GRU4Rec)."""

    def __init__(self, n_items: int, dim: int) -> None:
        super().__init__()
        self.n_items, self.dim = n_items, dim
        self.weight = nn.Parameter(torch.empty(n_items + 1, dim))
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(dim))
        with torch.no_grad():
            self.weight[0].zero_()

    def table(self) -> torch.Tensor:
        # multiply instead of in-place zeroing so gradients never reach the padding row
        return self.weight * _padding_mask(self.weight)


class TextItemEmbedding(ItemEmbedding):
    """Item vectors initialised from a text encoder and fine-tuned (LANE's semantic table).

    ``vectors`` is ``(n_items, d_text)`` in item-index order. If ``dim`` differs from
    ``d_text`` a learned linear projection maps the (fine-tuned) text vectors to ``dim``.
    ``center`` removes the mean vector first: sentence embeddings of titles share a big
    common component that otherwise makes every item look alike at the start.
    ``lr_scale`` multiplies the learning rate of the text table (read by the training
    loop): below 1 keeps the fine-tuned vectors near their semantic starting point.
    ``id_residual`` adds a free per-item vector, initialised at zero, so items can drift
    from their text without distorting it. ``projection="pca"`` instead reduces the text
    vectors once, at initialisation, to their top ``dim`` principal components: the
    table is then an ordinary ``dim``-wide table (same size and optimisation as an ID
    table) that merely *starts* from the text geometry.
    """

    def __init__(
        self,
        vectors: torch.Tensor,
        dim: int | None = None,
        *,
        center: bool = True,
        scale: float | None = None,
        lr_scale: float = 1.0,
        id_residual: bool = False,
        projection: str = "learned",
    ) -> None:
        super().__init__()
        if projection not in ("learned", "pca"):
            raise ValueError(f"projection must be 'learned' or 'pca', got {projection!r}")
        vectors = torch.as_tensor(vectors, dtype=torch.float32)
        if center:
            vectors = vectors - vectors.mean(dim=0, keepdim=True)
        if projection == "pca" and dim is not None and dim < vectors.shape[1]:
            # principal axes of the (centred) text vectors; signs fixed for determinism
            _, _, vt = torch.linalg.svd(vectors - vectors.mean(0), full_matrices=False)
            axes = vt[:dim] * torch.sign(vt[:dim].sum(1, keepdim=True) + 1e-12)
            vectors = vectors @ axes.T
        n, d_text = vectors.shape
        self.n_items, self.text_dim = n, d_text
        self.dim = dim or d_text
        self.lr_scale = lr_scale
        # match the scale of a freshly initialised ID table (rows of norm ~1)
        norms = vectors.norm(dim=1).mean().clamp_min(1e-8)
        vectors = vectors * ((scale if scale is not None else 1.0) / norms)
        self.weight = nn.Parameter(torch.cat([torch.zeros(1, d_text), vectors]))
        self.proj = nn.Linear(d_text, self.dim, bias=False) if self.dim != d_text else None
        if self.proj is not None:
            # an orthogonal projection keeps distances between titles at the start
            nn.init.orthogonal_(self.proj.weight)
            with torch.no_grad():
                self.proj.weight.mul_(math.sqrt(d_text / self.dim) if d_text > self.dim else 1.0)
        self.residual = nn.Parameter(torch.zeros(n + 1, self.dim)) if id_residual else None

    def table(self) -> torch.Tensor:
        table = self.weight if self.proj is None else self.proj(self.weight)
        if self.residual is not None:
            table = table + self.residual
        return table * _padding_mask(table)

    def lr_groups(self) -> list[tuple[list[nn.Parameter], float]]:
        """(parameters, learning-rate multiplier) pairs for the optimiser."""
        others = [p for n, p in self.named_parameters() if n != "weight"]
        return [([self.weight], self.lr_scale), (others, 1.0)]


def _padding_mask(table: torch.Tensor) -> torch.Tensor:
    mask = torch.ones(table.shape[0], 1, dtype=table.dtype, device=table.device)
    mask[0] = 0
    return mask


# -------------------------------------------------------------------- backbones
class SequenceBackbone(nn.Module):
    """Embedded sequences ``(B, L, d)`` + padding mask ``(B, L)`` -> causal states."""

    dim: int
    max_len: int

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def left_to_right(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Index maps between left-padded and right-padded layouts of the same rows.

    Returns ``(to_right, to_left, lengths)``: ``x.gather(1, to_right)`` moves each
    row's real items to the front, ``y.gather(1, to_left)`` moves them back.
    """
    length = mask.shape[1]
    lengths = mask.sum(1)
    ar = torch.arange(length, device=mask.device)
    offset = (length - lengths)[:, None]
    return (ar[None, :] + offset) % length, (ar[None, :] - offset) % length, lengths


def _gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return torch.gather(x, 1, index[..., None].expand(-1, -1, x.shape[-1]))


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention on right-padded rows.

    With real items first and padding last, the causal mask alone keeps every real
    position away from padding, so the fused ``is_causal`` kernel needs no extra mask.
    """

    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"hidden size {dim} is not divisible by {n_heads} heads")
        self.n_heads = n_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.n_heads, d // self.n_heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, L, dh)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(y.transpose(1, 2).reshape(b, length, d))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + Attn(LN(x)), then x + FFN(LN(x))."""

    def __init__(self, dim: int, n_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, n_heads, dropout)
        self.ln2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x)))
        return x + self.drop(self.ffn(self.ln2(x)))


class SASRecBackbone(SequenceBackbone):
    """SASRec (Kang & McAuley 2018): learned positions + causal transformer blocks.

    Position ``j`` is the j-th item of the window (oldest first), so a state never
    learns how many items follow it. Internally rows are right-padded (see
    :class:`CausalSelfAttention`); inputs and outputs stay left-padded.
    """

    def __init__(
        self,
        dim: int,
        *,
        max_len: int,
        n_blocks: int = 2,
        n_heads: int = 1,
        ffn_dim: int | None = None,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.dim, self.max_len = dim, max_len
        self.pos = nn.Embedding(max_len, dim)
        nn.init.normal_(self.pos.weight, std=0.5)  # items enter at scale ~1 (see forward)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, n_heads, ffn_dim or dim, dropout) for _ in range(n_blocks)
        )
        self.ln = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        length = x.shape[1]
        if length > self.max_len:
            raise ValueError(f"sequence length {length} exceeds max_len {self.max_len}")
        to_right, to_left, lengths = left_to_right(mask)
        keep = torch.arange(length, device=x.device)[None, :] < lengths[:, None]
        keep = keep.unsqueeze(-1).to(x.dtype)
        h = _gather_rows(x, to_right) * math.sqrt(self.dim) + self.pos.weight[:length]
        h = self.drop(h) * keep
        for block in self.blocks:
            h = block(h) * keep
        return _gather_rows(self.ln(h) * keep, to_left)


class GRU4RecBackbone(SequenceBackbone):
    """GRU4Rec (Hidasi et al. 2016) as a next-item model trained on whole sequences.

    Runs the GRU over the real items only (packed), so the amount of left padding never
    changes a state.
    """

    def __init__(self, dim: int, *, max_len: int, n_layers: int = 1, dropout: float = 0.2) -> None:
        super().__init__()
        self.dim, self.max_len = dim, max_len
        self.drop_in = nn.Dropout(dropout)
        self.gru = nn.GRU(dim, dim, num_layers=n_layers, batch_first=True)
        self.drop_out = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        length = x.shape[1]
        to_right, to_left, lengths = left_to_right(mask)
        xr = _gather_rows(self.drop_in(x), to_right)
        packed = nn.utils.rnn.pack_padded_sequence(
            xr, lengths.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False
        )
        out, _ = self.gru(packed)
        hr, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=length)
        h = _gather_rows(hr, to_left)
        return self.drop_out(h) * mask.unsqueeze(-1).to(h.dtype)


# ---------------------------------------------------------------------- module
class SequentialModule(nn.Module):
    """Item table + backbone; the object the generic trainer optimises.

    Subclasses change how states become queries by overriding :meth:`query` (LANE
    attends over per-user preference embeddings there); scoring stays
    ``query · item vector`` against :meth:`item_table`.
    """

    def __init__(self, items: ItemEmbedding, backbone: SequenceBackbone) -> None:
        super().__init__()
        if items.dim != backbone.dim:
            raise ValueError(f"item table has d={items.dim}, backbone d={backbone.dim}")
        self.items = items
        self.backbone = backbone
        # one global offset added to every logit by the sampled losses (bce/gbce): it
        # absorbs their "push every score down" pressure so the item vectors need not
        # collapse to do it; a constant cannot change any ranking, so scoring ignores it
        self.logit_bias = nn.Parameter(torch.zeros(()))

    @property
    def max_len(self) -> int:
        return self.backbone.max_len

    def item_table(self) -> torch.Tensor:
        """``(n_items + 1, d)`` item vectors; row 0 is padding (all zeros)."""
        return self.items.table()

    def hidden(self, seq: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        """Per-position backbone states ``(B, L, d)`` for left-padded ``seq`` (B, L)."""
        mask = seq != 0
        return self.backbone(self.items(seq, table), mask)

    def query(
        self,
        seq: torch.Tensor,
        users: torch.Tensor | None = None,
        table: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-position query vectors ``(B, L, d)``: state t predicts item t + 1.

        ``users`` (internal indices) is unused here; subclasses that condition on the
        user (LANE) read it. ``table`` lets the caller reuse an already computed
        :meth:`item_table` within one step.
        """
        return self.hidden(seq, table)

    def last_query(self, seq: torch.Tensor, users: torch.Tensor | None = None) -> torch.Tensor:
        """The query after the most recent item: ``(B, d)``."""
        return self.query(seq, users)[:, -1]

    def score_all(self, seq: torch.Tensor, users: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of every real item (padding column dropped): ``(B, n_items)``."""
        table = self.item_table()
        q = self.query(seq, users, table)[:, -1]
        return q @ table[1:].T
