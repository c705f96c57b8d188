"""LANE (Zhao et al. 2024): a sequence recommender aligned with LLM-extracted preferences.

The backbone (SASRec over semantic title embeddings by default, or GRU4Rec) produces a
state per position. Multi-head attention lets each state (query) attend over the user's
``m`` preference embeddings (keys and values, from the same sentence encoder as the
items); output projection, residual and LayerNorm, then a position-wise feed-forward
block with its own residual and LayerNorm. Score = aligned state · item vector.

The attention weights of the last position are LANE's per-preference explanation
weights. :meth:`Lane.attribution` goes further and measures, for one recommended item,
how its score and rank change when each preference or each history item is removed.

Preference vectors are data, not parameters: give them with :meth:`Lane.set_preferences`
before :meth:`fit`; they are saved with the model. Users the model has never seen are
served with explicit preference vectors (``recommend(history=..., preferences=...)``).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from whyrec.data.dataset import Dataset
from whyrec.data.facts import ItemFacts
from whyrec.errors import ConfigError, ModelError
from whyrec.models.attribution import Attribution, Removal, history_effects, ranks_of
from whyrec.models.backbones import (
    GRU4RecBackbone,
    IdItemEmbedding,
    SequentialModule,
)
from whyrec.models.sasrec import SASRecText, SASRecTextConfig
from whyrec.models.sequential import SequenceTask, pad_left

PREFS_FILE = "preferences.npz"
PREF_TEXTS_FILE = "preferences.json"

#: Training interactions after each user's preference cut (see :func:`preference_cut_points`).
DEFAULT_HOLDOUT = 10
#: The fewest training interactions a preference cut keeps before it (when there are that many).
DEFAULT_MIN_HISTORY = 3


def preference_cut_points(
    train_lengths: Sequence[int] | np.ndarray,
    holdout: int = DEFAULT_HOLDOUT,
    min_history: int = DEFAULT_MIN_HISTORY,
) -> np.ndarray:
    """LANE's leak-free rule: where each user's preferences are taken from.

    User u's preferences are derived from their first ``c_u`` training interactions
    (in time order) and nothing after: ``c_u = n_u - holdout``, but at least
    ``min_history`` (and at least 1, at most ``n_u``). A training position whose target is
    interaction ``t`` (0-based) sees the preferences only when ``t >= c_u`` — the history
    the preferences were written from ends before the target; earlier positions are
    trained without preferences (the alignment's "no preference" state). Validation and
    test targets come after every training interaction, so they see them too.
    """
    if holdout < 1:
        raise ConfigError(f"holdout must be >= 1 (targets after the cut), got {holdout}")
    if min_history < 1:
        raise ConfigError(f"min_history must be >= 1, got {min_history}")
    n = np.asarray(train_lengths, dtype=np.int64)
    cut = np.maximum(n - holdout, np.minimum(min_history, n - 1))
    return np.clip(cut, np.minimum(n, 1), n)


def window_target_positions(seqs: Sequence[np.ndarray], max_len: int) -> np.ndarray:
    """For each training window (in :func:`~whyrec.models.sequential.training_windows`
    order) and column, the 0-based index of the target in its user's sequence; -1 for
    padding."""
    rows = []
    for seq in seqs:
        targets = np.arange(1, len(seq), dtype=np.int64)
        end = len(targets)
        while end > 0:
            start = max(0, end - max_len)
            rows.append(targets[start:end])
            end = start
    out = np.full((len(rows), max_len), -1, dtype=np.int64)
    for r, t in enumerate(rows):
        if len(t):
            out[r, max_len - len(t) :] = t
    return out


class LaneTask(SequenceTask):
    """SASRec's next-item task, where a position sees the user's preferences only if
    they were written from interactions before its target (``cuts``, see
    :func:`preference_cut_points`); ``cuts=None`` lets every position see them (for
    preferences that do not come from the training sequence, e.g. constant ones)."""

    def __init__(self, module: Any, dataset: Dataset, config: Any, cuts: np.ndarray | None) -> None:
        super().__init__(module, dataset, config)
        self.gate: torch.Tensor | None = None
        if cuts is not None:
            seqs = dataset.user_sequences(("train",))
            pos = window_target_positions(seqs, config.max_len)
            if pos.shape != tuple(self.targets.shape):
                raise ModelError("preference gate and training windows disagree in shape")
            users = self.users.numpy()
            self.gate = torch.from_numpy(pos >= np.asarray(cuts)[users][:, None])
            self.gated_positions = int(self.gate[self.targets != 0].sum())

    def make_batch(self, idx: torch.Tensor, width: int) -> tuple[torch.Tensor, ...]:
        batch = super().make_batch(idx, width)
        if self.gate is None:
            return batch
        return (*batch, self.gate[idx][:, -width:])

    def batch_query(self, batch: tuple[torch.Tensor, ...], table: torch.Tensor) -> torch.Tensor:
        if len(batch) < 4:
            return super().batch_query(batch, table)
        x, _, users, gate = batch
        return self.module.query(x, users, table, gate=gate)


class PreferenceAlignment(nn.Module):
    """States attend over preference embeddings (LANE's semantic alignment block).

    With ``gated=True`` the block's output is ``states + mix * (aligned - states)`` with a
    learned scalar ``mix`` that starts at 0: at initialisation LANE *is* its backbone, and
    the preferences earn their influence during training instead of reshaping every state
    from the first step. ``gated=False`` (and every model saved before the gate existed,
    loaded with ``mix`` = 1) is LANE's original block.
    """

    def __init__(
        self, dim: int, pref_dim: int, n_heads: int, dropout: float, gated: bool = True
    ) -> None:
        super().__init__()
        self.mix = nn.Parameter(torch.tensor(0.0 if gated else 1.0), requires_grad=gated)
        if dim % n_heads:
            raise ConfigError(f"dim {dim} must be divisible by pref_heads {n_heads}")
        self.attn = nn.MultiheadAttention(
            dim, n_heads, dropout=dropout, kdim=pref_dim, vdim=pref_dim, batch_first=True
        )
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim)
        )
        self.norm2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(
        self, states: torch.Tensor, prefs: torch.Tensor, keep: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``states`` (B, L, d), ``prefs`` (B, m, d_pref), ``keep`` (B, m) bool.

        Returns aligned states (B, L, d) and head-averaged weights (B, L, m).
        """
        if keep is None:
            keep = prefs.abs().sum(-1) > 0
        # a row with no usable preference would give NaN: let it attend to all (zeros)
        keep = keep | ~keep.any(dim=1, keepdim=True)
        out, weights = self.attn(
            states, prefs, prefs, key_padding_mask=~keep, need_weights=True,
            average_attn_weights=True,
        )  # fmt: skip
        x = self.norm1(states + self.drop(out))
        x = self.norm2(x + self.drop(self.ffn(x)))
        return states + self.mix * (x - states), weights

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        # models saved before the gate existed ran the block ungated: mix = 1, frozen
        if prefix + "mix" not in state_dict:
            state_dict[prefix + "mix"] = torch.tensor(1.0)
        super()._load_from_state_dict(state_dict, prefix, *args)


class TasteChannel(nn.Module):
    """Each taste adds to the score of the items that have the facts it names.

    Taste ``j`` of a user names a set of item facts (``facts[j]``, 0/1 over the fact
    vocabulary, see :class:`whyrec.data.facts.ItemFacts`). At position ``t`` it gets a
    strength ``g_tj = softplus(q(h_t) · k(p_j) / √k + b) ≥ 0`` from the sequence state and
    the taste's sentence embedding, and item ``i``'s score gains
    ``Σ_j g_tj · |facts_j ∩ facts_i| / |facts_j|``. Removing taste ``j`` therefore lowers
    exactly the items that share its facts, in proportion to how many they share, and
    moves no other item: a taste's effect *is* what it says. The strength starts small
    (``b`` = -3), so the model starts as its backbone.

    The term is written as a per-position fact-weight vector ``w_t = Σ_j g_tj facts_j /
    |facts_j|`` appended to the query, and the item table gets each item's fact row
    appended, so scoring stays ``query · item vector`` everywhere.
    """

    def __init__(self, dim: int, pref_dim: int, key_dim: int = 64) -> None:
        super().__init__()
        self.key_dim = key_dim
        self.q = nn.Linear(dim, key_dim)
        self.k = nn.Linear(pref_dim, key_dim)
        self.bias = nn.Parameter(torch.tensor(-3.0))

    def strengths(
        self, states: torch.Tensor, prefs: torch.Tensor, keep: torch.Tensor
    ) -> torch.Tensor:
        """``(B, L, m)`` non-negative strengths; removed tastes (``keep`` False) get 0."""
        logits = torch.einsum("bld,bmd->blm", self.q(states), self.k(prefs))
        g = F.softplus(logits / self.key_dim**0.5 + self.bias)
        return g * keep[:, None, :].to(g.dtype)

    def forward(
        self,
        states: torch.Tensor,
        prefs: torch.Tensor,
        facts: torch.Tensor,
        keep: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``states`` (B, L, d), ``prefs`` (B, m, d_pref), ``facts`` (B, m, F).

        Returns the fact weights (B, L, F) and the strengths (B, L, m).
        """
        if keep is None:
            keep = prefs.abs().sum(-1) > 0
        g = self.strengths(states, prefs, keep)
        share = facts / facts.sum(-1, keepdim=True).clamp(min=1.0)
        return torch.einsum("blm,bmf->blf", g, share), g


class LaneModule(SequentialModule):
    """Item table + backbone + preference channel; queries depend on the user.

    ``channel="attention"``: LANE's alignment block (states attend over the tastes).
    ``channel="additive"``: :class:`TasteChannel`; needs ``item_facts`` (n_items + 1, F)
    and ``user_facts`` (n_users, m, F), and the query and item vectors gain F columns.
    """

    def __init__(
        self,
        items: Any,
        backbone: Any,
        user_prefs: torch.Tensor,
        n_heads: int,
        dropout: float,
        gated: bool = True,
        channel: str = "attention",
        item_facts: torch.Tensor | None = None,
        user_facts: torch.Tensor | None = None,
    ) -> None:
        super().__init__(items, backbone)
        self.channel = channel
        self.register_buffer("user_prefs", user_prefs.float())
        if channel == "additive":
            if item_facts is None or user_facts is None:
                raise ModelError("the additive taste channel needs item and taste facts")
            self.register_buffer("item_facts", item_facts.float())
            self.register_buffer("user_facts", user_facts.float())
            self.taste = TasteChannel(backbone.dim, user_prefs.shape[-1])
        else:
            self.align = PreferenceAlignment(
                backbone.dim, user_prefs.shape[-1], n_heads, dropout, gated=gated
            )

    @property
    def additive(self) -> bool:
        return self.channel == "additive"

    @property
    def n_facts(self) -> int:
        return int(self.item_facts.shape[1]) if self.additive else 0

    def item_table(self) -> torch.Tensor:
        """Item vectors; with the additive channel each row ends with the item's facts."""
        table = self.items.table()
        if not self.additive:
            return table
        return torch.cat([table, self.item_facts], dim=1)

    def hidden(self, seq: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        if table is not None and self.additive:
            table = table[:, : self.backbone.dim]
        return super().hidden(seq, table)

    def user_inputs(self, users: torch.Tensor) -> torch.Tensor:
        """The preference inputs of known users: vectors, then fact rows (additive)."""
        if not self.additive:
            return self.user_prefs[users]
        return torch.cat([self.user_prefs[users], self.user_facts[users]], dim=-1)

    def _channel(
        self, states: torch.Tensor, prefs: torch.Tensor, keep: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.additive:
            return self.align(states, prefs, keep)
        d = self.user_prefs.shape[-1]
        vec, facts = prefs[..., :d], prefs[..., d:]
        if keep is None:
            keep = vec.abs().sum(-1) > 0
        w, g = self.taste(states, vec, facts, keep)
        return torch.cat([states, w], dim=-1), g

    def query(
        self,
        seq: torch.Tensor,
        users: torch.Tensor | None = None,
        table: torch.Tensor | None = None,
        gate: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Queries (B, L, d [+ F]); ``gate`` (B, L) bool says which positions see the
        users' preferences (default: all)."""
        if users is None:
            raise ModelError(
                "LANE needs the user's preferences: pass known users, or explicit "
                "preference vectors (recommend(history=..., preferences=...))"
            )
        states = self.hidden(seq, table)
        prefs = self.user_inputs(users)
        out = self._channel(states, prefs, None)[0]
        if gate is not None and not bool(gate.all()):
            # positions whose target precedes the preferences' history: no preferences
            none = torch.zeros(prefs.shape[:2], dtype=torch.bool, device=prefs.device)
            bare = self._channel(states, torch.zeros_like(prefs), none)[0]
            out = torch.where(gate[..., None], out, bare)
        return out

    def query_with(
        self,
        seq: torch.Tensor,
        prefs: torch.Tensor,
        keep: torch.Tensor | None = None,
        table: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries and per-taste weights (attention weights, or additive strengths) for
        explicit preference inputs (B, m, d_pref [+ F])."""
        return self._channel(self.hidden(seq, table), prefs, keep)


@dataclass
class LaneConfig(SASRecTextConfig):
    backbone: str = "sasrec"  # or "gru4rec"
    item_table: str = "text"  # "text" (semantic, LANE) or "id"
    pref_heads: int = 4
    #: the alignment starts as the identity and learns how much to mix in (see
    #: PreferenceAlignment); False is LANE's original, always-on block
    pref_gate: bool = True
    #: how tastes reach the scores: "additive" (each taste raises the items that have the
    #: facts it names, see TasteChannel) or "attention" (LANE's alignment block)
    pref_channel: str = "additive"
    n_preferences: int = 5
    n_layers: int = 1  # gru4rec backbone only

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.backbone not in ("sasrec", "gru4rec"):
            raise ConfigError(f"unknown backbone {self.backbone!r}; expected sasrec or gru4rec")
        if self.item_table not in ("text", "id"):
            raise ConfigError(f"unknown item_table {self.item_table!r}; expected text or id")
        if self.pref_channel not in ("additive", "attention"):
            raise ConfigError(
                f"unknown pref_channel {self.pref_channel!r}; expected additive or attention"
            )


class Lane(SASRecText):
    """LANE: semantic-title sequence model + alignment with per-user preferences."""

    name = "lane"
    has_preferences = True
    config_class = LaneConfig
    config: LaneConfig

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self._pref_vectors: np.ndarray | None = None
        self.preference_texts: list[list[str]] = []
        self.preference_sources: list[str] = []
        #: per user, how many training interactions the preferences were written from
        self.preference_cuts: np.ndarray | None = None
        #: the fact vocabulary the additive channel reads tastes with (set at fit/load)
        self.facts: ItemFacts | None = None
        self._override = threading.local()

    # ----------------------------------------------------------- preferences
    def set_preferences(
        self,
        vectors: np.ndarray,
        texts: Sequence[Sequence[str]] | None = None,
        sources: Sequence[str] | None = None,
        cuts: Sequence[int] | np.ndarray | None = None,
    ) -> Lane:
        """Per-user preference vectors ``(n_users, m, d)`` in user-index order.

        ``cuts[u]`` is how many of user u's training interactions (in time order) the
        preferences were written from (:func:`preference_cut_points`): training positions
        whose target comes before the cut do not see them, so no preference describes a
        target it is trained to predict. Without ``cuts`` every position sees them — only
        right for preferences that do not come from the training sequence.
        """
        v = np.asarray(vectors, dtype=np.float32)
        if v.ndim != 3:
            raise ModelError(f"preference vectors must be (n_users, m, d), got shape {v.shape}")
        if cuts is not None:
            c = np.asarray(cuts, dtype=np.int64)
            if c.shape != (v.shape[0],) or (c < 0).any():
                raise ModelError(
                    f"preference cuts must be {v.shape[0]} non-negative counts (one per user), "
                    f"got shape {c.shape}"
                )
            self.preference_cuts = c
        else:
            self.preference_cuts = None
        self._pref_vectors = v
        self.preference_texts = [list(t) for t in texts] if texts is not None else []
        self.preference_sources = list(sources) if sources is not None else []
        return self

    def _fit(self, dataset: Dataset, **kwargs: Any) -> None:
        if self._pref_vectors is None:
            raise ModelError(
                "LANE needs user preferences before fit: extract them with "
                "whyrec.explain.PreferenceExtractor and call model.set_preferences(...)"
            )
        if self._pref_vectors.shape[0] != dataset.n_users:
            raise ModelError(
                f"preferences cover {self._pref_vectors.shape[0]} users but dataset "
                f"{dataset.name!r} has {dataset.n_users}"
            )
        if self.preference_cuts is not None:
            lengths = np.array([len(s) for s in dataset.user_sequences(("train",))])
            over = np.flatnonzero(self.preference_cuts > lengths)
            if over.size:
                u = int(over[0])
                raise ModelError(
                    f"user {dataset.users['user_id'].iloc[u]!r}: preferences written from "
                    f"{int(self.preference_cuts[u])} training interactions, but the user has "
                    f"{int(lengths[u])}"
                )
        super()._fit(dataset, **kwargs)
        # training positions that saw preferences (None: all of them, no cut given)
        self.training["preference_positions"] = getattr(self, "_gated_positions", None)

    def make_task(self, dataset: Dataset) -> SequenceTask:
        task = LaneTask(self.module, dataset, self.config, self.preference_cuts)
        self._gated_positions = getattr(task, "gated_positions", None)
        return task

    def build_module(
        self, dataset: Dataset | None, state: dict[str, Any] | None = None
    ) -> SequentialModule:
        if state is not None and "taste.bias" not in state:
            # saved before the additive channel existed (or with attention): attention
            self.config = replace(self.config, pref_channel="attention")
        if state is not None and "align.mix" not in state and "taste.bias" not in state:
            # saved before the gate existed: the block it was trained with is the ungated one
            self.config = replace(self.config, pref_gate=False)
        c = self.config
        item_facts = user_facts = None
        if state is not None:
            prefs = state["user_prefs"]
            if c.pref_channel == "additive":
                item_facts, user_facts = state["item_facts"], state["user_facts"]
        else:
            assert self._pref_vectors is not None
            prefs = torch.from_numpy(self._pref_vectors)
            if c.pref_channel == "additive":
                assert dataset is not None
                item_facts, user_facts = self._fact_tables(dataset)
        if c.item_table == "text":
            items: Any = self.text_item_table(dataset, state)
        else:
            items = IdItemEmbedding(self.n_items, c.dim)
        if c.backbone == "sasrec":
            backbone: Any = self._backbone()
        else:
            backbone = GRU4RecBackbone(
                c.dim, max_len=c.max_len, n_layers=c.n_layers, dropout=c.dropout
            )
        return LaneModule(
            items, backbone, prefs, c.pref_heads, c.dropout, gated=c.pref_gate,
            channel=c.pref_channel, item_facts=item_facts, user_facts=user_facts,
        )  # fmt: skip

    def _fact_tables(self, dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
        """The item fact table (padding row first) and every user's taste facts."""
        assert self._pref_vectors is not None
        n_users, m = self._pref_vectors.shape[:2]
        if len(self.preference_texts) != n_users:
            raise ModelError(
                "the additive taste channel reads the facts each taste names from its text: "
                f"give set_preferences(texts=...) for all {n_users} users "
                f"(got {len(self.preference_texts)})"
            )
        self.facts = ItemFacts.from_dataset(dataset)
        f = self.facts
        user_facts = np.zeros((n_users, m, f.n_facts), dtype=np.float32)
        for u, texts in enumerate(self.preference_texts):
            rows = f.parse_matrix(list(texts)[:m])
            user_facts[u, : len(rows)] = rows
        items = np.vstack([np.zeros((1, f.n_facts), np.float32), f.matrix])
        return torch.from_numpy(items), torch.from_numpy(user_facts)

    # ------------------------------------------------------------ tastes
    @property
    def has_taste_facts(self) -> bool:
        """Tastes act through the item facts they name (the additive channel)."""
        return self.config.pref_channel == "additive"

    def taste_facts(self, texts: Sequence[str]) -> list[list[str]]:
        """The item facts each taste text names (empty lists without a fact vocabulary)."""
        if self.facts is None:
            return [[] for _ in texts]
        return [self.facts.parse(t) for t in texts]

    def preference_inputs(self, texts: Sequence[str], vectors: np.ndarray) -> np.ndarray:
        """What ``preferences=`` takes for a new history: the taste vectors ``(m, d)``,
        followed (additive channel) by the facts each taste text names ``(m, F)``."""
        v = np.asarray(vectors, dtype=np.float32)
        if not self.has_taste_facts or v.shape[-1] == self.module.user_prefs.shape[-1] + (
            self.module.n_facts
        ):
            return v  # the attention channel, or inputs that already carry their facts
        if self.facts is None:
            raise ModelError("the model has no fact vocabulary yet (fit or load it first)")
        if len(texts) != len(v):
            raise ModelError(f"{len(texts)} taste texts for {len(v)} taste vectors")
        return np.concatenate([v, self.facts.parse_matrix(list(texts))], axis=1)

    # ------------------------------------------------------ serving new users
    @contextlib.contextmanager
    def using_preferences(self, vectors: np.ndarray) -> Iterator[None]:
        """Within the block, histories without a user are scored with ``vectors`` (m, d)."""
        v = np.asarray(vectors, dtype=np.float32)
        if v.ndim != 2:
            raise ModelError(f"preference vectors must be (m, d), got shape {v.shape}")
        if getattr(self, "module", None) is not None:
            v = self._checked_inputs(v)
        self._override.vectors = v
        try:
            yield
        finally:
            self._override.vectors = None

    def recommend(
        self, user: int | None = None, *, preferences: np.ndarray | None = None, **kw: Any
    ) -> Any:
        """As :meth:`Recommender.recommend`; ``preferences`` (m, d) serves a new history."""
        if preferences is None:
            return super().recommend(user, **kw)
        with self.using_preferences(preferences):
            return super().recommend(None, **kw)

    def score_batch(
        self, histories: Sequence[np.ndarray], users: np.ndarray | None = None
    ) -> np.ndarray:
        override = getattr(self._override, "vectors", None)
        if users is not None or override is None:
            return super().score_batch(histories, users)
        prefs = torch.from_numpy(
            np.broadcast_to(override, (len(histories), *override.shape)).copy()
        )
        scores, _ = self._forward(histories, prefs)
        return scores

    def user_preference_vectors(self, user: int) -> np.ndarray:
        """A known user's preference inputs: the ``(m, d)`` taste vectors, followed (additive
        channel) by the ``(m, F)`` facts each taste names — what ``preferences=`` takes."""
        self._check_fitted()
        u = self._check_user(user)
        with torch.inference_mode():
            return self.module.user_inputs(torch.tensor([u]))[0].numpy().copy()

    # --------------------------------------------------------- explanations
    def _forward(
        self,
        histories: Sequence[np.ndarray],
        prefs: torch.Tensor,
        keep: torch.Tensor | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """All-item scores (B, n_items) and last-position weights (B, m)."""
        self.module.eval()
        x = torch.from_numpy(pad_left(histories, self.config.max_len))
        width = max(int((x != 0).sum(1).max()), 1)
        with torch.inference_mode():
            table = self.module.item_table()
            q, w = self.module.query_with(x[:, -width:], prefs, keep, table)
            scores = q[:, -1] @ table[1:].T
            w = w[:, -1]
            if self.has_taste_facts:  # strengths → each taste's share of the total
                w = w / w.sum(-1, keepdim=True).clamp(min=1e-12)
        return scores.numpy(), w.numpy()

    def _checked_inputs(self, preferences: np.ndarray) -> np.ndarray:
        """Explicit preference inputs, shape-checked against the model."""
        p = np.asarray(preferences, dtype=np.float32)
        want = self.module.user_prefs.shape[-1] + self.module.n_facts
        if p.ndim != 2 or p.shape[1] != want:
            hint = (
                " (the additive taste channel also needs the facts each taste names: "
                "pass model.preference_inputs(texts, vectors))"
                if self.has_taste_facts
                else ""
            )
            raise ModelError(f"preferences must be (m, {want}), got shape {p.shape}{hint}")
        return p

    def _prefs_for(self, user: int | None, preferences: np.ndarray | None) -> np.ndarray:
        if preferences is not None:
            return self._checked_inputs(preferences)
        if user is None:
            raise ModelError("give a known user or explicit preference vectors")
        return self.user_preference_vectors(user)

    def preference_weights(
        self,
        user: int | None = None,
        *,
        history: Sequence[int] | None = None,
        preferences: np.ndarray | None = None,
    ) -> np.ndarray:
        """LANE's weights: softmax over the m preferences for the last-position query."""
        self._check_fitted()
        u, hist = self._resolve(user, history)
        prefs = torch.from_numpy(self._prefs_for(u, preferences)[None])
        return self._forward([hist], prefs)[1][0]

    def counterfactual(
        self,
        item: int,
        user: int | None = None,
        *,
        history: Sequence[int] | None = None,
        removals: Sequence[Removal] = (),
        preferences: np.ndarray | None = None,
        **context: Any,
    ) -> list[tuple[float, int]]:
        """As :meth:`Recommender.counterfactual`; a removal's ``preferences`` are masked
        out of the alignment attention (the remaining ones are attended over)."""
        from whyrec.models.attribution import drop_positions

        self._check_fitted()
        item = int(self._check_items([item], "item")[0])
        u, hist = self._resolve(user, history)
        pv = self._prefs_for(u, preferences)
        m = pv.shape[0]
        variants = [Removal(), *removals]
        hists = [drop_positions(hist, r.history) for r in variants]
        keep = torch.ones((len(variants), m), dtype=torch.bool)
        for i, r in enumerate(variants):
            for j in r.preferences:
                keep[i, int(j)] = False
        scores, _ = self._forward(hists, torch.from_numpy(np.repeat(pv[None], len(hists), 0)), keep)
        ranks = ranks_of(scores, item, np.unique(hist))
        return [(float(scores[i, item]), int(ranks[i])) for i in range(len(hists))]

    def attribution(
        self,
        item: int,
        user: int | None = None,
        *,
        history: Sequence[int] | None = None,
        preferences: np.ndarray | None = None,
        top_history: int = 5,
        window: int | None = None,
        **context: Any,
    ) -> Attribution:
        """Item-specific evidence: the score and rank of ``item`` without each preference
        and without each history item (the most recent ``max_len`` items), plus LANE's
        user-level weights (labelled as such: the same for every item of the user)."""
        self._check_fitted()
        item = int(self._check_items([item], "item")[0])
        u, hist = self._resolve(user, history)
        pv = self._prefs_for(u, preferences)
        m = pv.shape[0]
        win = window or self.config.max_len
        positions = list(range(max(0, len(hist) - win), len(hist))) if len(hist) > 1 else []
        removals = [Removal(preferences=(j,)) for j in range(m)]
        removals += [Removal(history=(p,)) for p in positions]
        res = self.counterfactual(item, u, history=hist, preferences=pv, removals=removals)
        (score, rank), p_res, h_res = res[0], res[1 : m + 1], res[m + 1 :]
        weights = self._forward([hist], torch.from_numpy(pv[None]))[1][0]
        return Attribution(
            item=item,
            score=score,
            rank=rank,
            weights=[float(x) for x in weights],
            preferences=[
                {
                    "index": j,
                    "weight": float(weights[j]),
                    "score_drop": score - p_res[j][0],
                    "rank_without": int(p_res[j][1]),
                }
                for j in range(m)
            ],
            history=history_effects(hist, score, h_res, positions, top_history),
        )

    # -------------------------------------------------------------------- io
    def _save_state(self, directory: Path) -> None:
        super()._save_state(directory)
        (directory / PREF_TEXTS_FILE).write_text(
            json.dumps(
                {
                    "texts": self.preference_texts,
                    "sources": self.preference_sources,
                    "cuts": None if self.preference_cuts is None else self.preference_cuts.tolist(),
                    "facts": None if self.facts is None else self.facts.to_dict(),
                },
                ensure_ascii=False,
            )
        )

    def _load_state(self, directory: Path) -> None:
        super()._load_state(directory)
        f = directory / PREF_TEXTS_FILE
        if f.is_file():
            data = json.loads(f.read_text())
            self.preference_texts = data.get("texts", [])
            self.preference_sources = data.get("sources", [])
            cuts = data.get("cuts")
            self.preference_cuts = None if cuts is None else np.asarray(cuts, dtype=np.int64)
            fdict = data.get("facts")
            if fdict and self.module.additive:
                matrix = self.module.item_facts[1:].numpy()
                self.facts = ItemFacts(list(fdict["names"]), matrix, fdict.get("field"))
        self._pref_vectors = self.module.user_prefs.numpy()
