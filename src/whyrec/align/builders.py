"""Training data for tuning-based alignment, built from a trained recommender ``f``.

Two families:

* **Alignment with f** (RecExplainer): the labels are ``f``'s *predictions*, never the
  ground truth — next-item retrieval (f's top-1), item ranking (five items shown
  shuffled, answered in f's order), interest classification (yes from f's top 20% of
  unseen items, no from its bottom 50%), item discrimination (item ↔ title, item →
  text field, most similar item by f's item vectors) and history reconstruction. Each
  comes in one of three *forms*: ``behaviour`` (users and items as titles),
  ``intention`` (``<user>``/``<item>`` placeholders whose vectors come from f) and
  ``hybrid`` (both).
* **Recommendation knowledge** (Cao et al.): ground-truth tasks in words — retrieval of
  the next title, candidate ranking, rating prediction (when the data has ratings) —
  and auxiliary tasks restating classic objectives: masked item modelling (MIM), masked
  language modelling over history titles (MLM) and BPR pairs.

Every task has its own random stream seeded by ``(seed, task)``, so the samples of one
task do not change when the mixture around it changes (a run "with auxiliary tasks"
contains exactly the recommendation samples of the run without them).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from whyrec.align.samples import Sample, SampleSet, placeholder_kinds
from whyrec.align.text import (
    LETTERS,
    MASK,
    PHRASINGS,
    PROMPT_VERSION,
    SYSTEM_ALIGN,
    SYSTEM_KNOWLEDGE,
    USER_REF,
    clean_text,
    quote,
    title_list,
)
from whyrec.data.dataset import Dataset
from whyrec.errors import ConfigError, ModelError

ALIGN_FORMS = ("behaviour", "intention", "hybrid")
ALIGN_TASKS = (
    "retrieval",
    "ranking",
    "interest",
    "item_title",
    "item_field",
    "item_similar",
    "history",
)
REC_TASKS = ("rec_retrieval", "rec_ranking", "rating")
AUX_TASKS = ("mim", "mlm", "bpr")
KNOWLEDGE_TASKS = REC_TASKS + AUX_TASKS

DEFAULT_ALIGN_MIX: dict[str, float] = {
    "retrieval": 1.0,
    "ranking": 1.0,
    "interest": 1.0,
    "item_title": 0.4,
    "item_field": 0.3,
    "item_similar": 0.3,
    "history": 0.5,
}
REC_ONLY_MIX: dict[str, float] = {t: 1.0 for t in REC_TASKS}
WITH_AUX_MIX: dict[str, float] = {t: 1.0 for t in KNOWLEDGE_TASKS}

# tasks that cannot be posed in a form: a behaviour prompt cannot hide the item's title,
# and showing the history (hybrid) would give the reconstruction answer away
_NOT_IN_FORM = {
    "behaviour": {"item_title", "history"},
    "intention": set(),
    "hybrid": set(),
}


# ------------------------------------------------------------------ f's view
def recommender_item_vectors(model: Any) -> np.ndarray | None:
    """``f``'s item vectors ``(n_items, d)``, or None when the model has none."""
    model._check_fitted()
    if hasattr(model, "item_vectors"):
        return np.asarray(model.item_vectors(), dtype=np.float32)
    module = getattr(model, "module", None)
    if module is not None and hasattr(module, "items") and hasattr(module, "users"):  # BPR-MF
        return module.items.weight.detach().numpy().astype(np.float32).copy()
    return None


def recommender_user_vectors(
    model: Any, histories: Sequence[np.ndarray], users: np.ndarray
) -> np.ndarray | None:
    """``f``'s user-side vector for each (history, user): the vector its scores dot items with.

    Sequence models: the query after the last history item; BPR-MF: the user's factor
    (a new history is folded in). None when the model has no such vector (popularity).
    """
    import torch

    from whyrec.models.sequential import SequentialRecommender, pad_left

    model._check_fitted()
    if isinstance(model, SequentialRecommender):
        out = []
        module = model.module.eval()
        for start in range(0, len(histories), 128):
            chunk = histories[start : start + 128]
            x = torch.from_numpy(pad_left(chunk, model.config.max_len))
            width = max(int((x != 0).sum(1).max()), 1)
            u = torch.as_tensor(np.asarray(users[start : start + 128]), dtype=torch.long)
            with torch.inference_mode():
                out.append(module.query(x[:, -width:], u)[:, -1].numpy())
        return np.concatenate(out).astype(np.float32)
    module = getattr(model, "module", None)
    if module is not None and hasattr(module, "users"):
        with torch.no_grad():
            return module.users.weight[torch.as_tensor(users)].numpy().astype(np.float32)
    return None


@dataclass
class UserState:
    """A user at one point of their history: what ``f`` sees and scores."""

    user: int
    history: np.ndarray


@dataclass
class RecommenderView:
    """``f``'s scores and vectors for a list of user states (labels of the alignment tasks)."""

    model: Any
    states: list[UserState]
    scores: np.ndarray  # (n_states, n_items), float64, history items set to -inf
    user_vectors: np.ndarray | None
    item_vectors: np.ndarray | None
    titles: list[str]

    def ranking(self, s: int) -> np.ndarray:
        """Unseen items of state ``s`` in f's order, best first (ties by index)."""
        row = self.scores[s]
        finite = np.flatnonzero(np.isfinite(row))
        return finite[np.lexsort((finite, -row[finite]))]

    def describe(self) -> dict[str, Any]:
        m = self.model
        return {
            "recommender": m.name,
            "recommender_config": m.config.to_dict(),
            "dataset": m.dataset_info.get("name"),
            "dataset_fingerprint": m.dataset_info.get("fingerprint"),
            "has_vectors": self.user_vectors is not None and self.item_vectors is not None,
        }


def recommender_view(model: Any, states: Sequence[UserState]) -> RecommenderView:
    """Score every state with ``f`` (seen items excluded) and read its vectors."""
    if not states:
        raise ConfigError("no user states to build samples from")
    histories = [np.asarray(s.history, dtype=np.int64) for s in states]
    if any(len(h) == 0 for h in histories):
        raise ModelError("a user state has an empty history")
    users = np.array([s.user for s in states], dtype=np.int64)
    parts = []
    for start in range(0, len(histories), 256):
        parts.append(
            model.score_batch(histories[start : start + 256], users[start : start + 256]).astype(
                np.float64
            )
        )
    scores = np.concatenate(parts)
    for row, h in enumerate(histories):
        scores[row, h] = -np.inf
    items = recommender_item_vectors(model)
    user_vecs = recommender_user_vectors(model, histories, users) if items is not None else None
    return RecommenderView(
        model=model,
        states=list(states),
        scores=scores,
        user_vectors=user_vecs,
        item_vectors=items,
        titles=[str(t) for t in model.item_titles],
    )


def user_states(
    dataset: Dataset,
    users: Sequence[int] | np.ndarray,
    *,
    split: str = "train",
    states_per_user: int = 1,
    min_history: int = 3,
    seed: int = 0,
) -> list[UserState]:
    """States for ``users``: their history before ``split``'s target, or the train sequence.

    ``split="train"``: the whole training sequence (plus ``states_per_user - 1`` random
    earlier prefixes); ``"valid"``/``"test"``: the history before that split's target, as
    the ranking evaluation uses it. Users with fewer than ``min_history`` items are left out.
    """
    if split not in ("train", "valid", "test"):
        raise ConfigError(f"split must be train, valid or test, got {split!r}")
    rng = np.random.default_rng([seed, 7])
    if split == "train":
        seqs = dataset.user_sequences(("train",))
        by_user = {int(u): seqs[int(u)] for u in users}
    else:
        us, hists, _ = dataset.histories_for(split)
        lookup = {int(u): h for u, h in zip(us, hists, strict=True)}
        by_user = {int(u): lookup[int(u)] for u in users if int(u) in lookup}
    out = []
    for u in users:
        seq = by_user.get(int(u))
        if seq is None or len(seq) < min_history:
            continue
        out.append(UserState(int(u), np.asarray(seq, dtype=np.int64)))
        if split == "train":
            for _ in range(max(states_per_user - 1, 0)):
                if len(seq) <= min_history:
                    break
                cut = int(rng.integers(min_history, len(seq)))
                out.append(UserState(int(u), np.asarray(seq[:cut], dtype=np.int64)))
    return out


# ------------------------------------------------------------------ helpers
@dataclass
class _Slot:
    """Text that fills one template slot and the placeholder vectors inside it."""

    text: str
    vectors: list[tuple[str, int]] = field(default_factory=list)


def _task_rng(seed: int, task: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(task.encode())])


def allocate(n: int, weights: dict[str, float]) -> dict[str, int]:
    """Split ``n`` samples over tasks in proportion to ``weights`` (largest remainder)."""
    for task, w in weights.items():
        if not isinstance(w, int | float) or isinstance(w, bool) or w < 0:
            raise ConfigError(f"mixture weight of {task!r} must be a number >= 0, got {w!r}")
    active = {t: float(w) for t, w in weights.items() if w > 0}
    if not active:
        raise ConfigError("the task mixture is empty: give at least one task a weight > 0")
    total = sum(active.values())
    exact = {t: n * w / total for t, w in active.items()}
    counts = {t: int(v) for t, v in exact.items()}
    rest = n - sum(counts.values())
    for t in sorted(exact, key=lambda t: (-(exact[t] - counts[t]), t))[:rest]:
        counts[t] += 1
    return counts


def _letters(n: int) -> str:
    if n > len(LETTERS):
        raise ConfigError(f"at most {len(LETTERS)} candidates, got {n}")
    return LETTERS[:n]


def _candidates(refs: Sequence[str]) -> str:
    return "\n".join(f"{LETTERS[i]}: {r}" for i, r in enumerate(refs))


def parse_mix(spec: str | dict[str, float] | None, default: dict[str, float]) -> dict[str, float]:
    """``"retrieval=1,ranking=0.5"`` (or a dict, or None for ``default``) as task weights."""
    if spec is None:
        return dict(default)
    if isinstance(spec, dict):
        return {str(k): float(v) for k, v in spec.items()}
    out: dict[str, float] = {}
    for part in str(spec).split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        try:
            out[name.strip()] = float(value) if sep else 1.0
        except ValueError:
            raise ConfigError(
                f"mixture entry {part.strip()!r}: expected task=weight with a number"
            ) from None
    return out


# --------------------------------------------------------- alignment builder
@dataclass
class AlignmentConfig:
    """What :func:`build_alignment` produces. ``tasks`` maps task -> mixture weight."""

    form: str = "behaviour"
    tasks: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_ALIGN_MIX))
    n_samples: int = 1000
    per_state: bool = False  # True: each user task once per state (evaluation sets)
    max_history: int = 10  # titles shown per user
    n_rank: int = 5
    n_recon: int = 5
    n_similar: int = 4
    top_k: int = 5  # f's top items kept as the retrieval label set
    interest_top: float = 0.2
    interest_bottom: float = 0.5
    item_field: str | None = None  # default: the dataset's first text field
    seed: int = 0

    def __post_init__(self) -> None:
        if self.form not in ALIGN_FORMS:
            raise ConfigError(f"form must be one of {list(ALIGN_FORMS)}, got {self.form!r}")
        unknown = sorted(set(self.tasks) - set(ALIGN_TASKS))
        if unknown:
            raise ConfigError(f"unknown alignment task(s) {unknown}; known: {list(ALIGN_TASKS)}")
        if not 0 < self.interest_top <= 1 or not 0 < self.interest_bottom <= 1:
            raise ConfigError("interest_top and interest_bottom must be in (0, 1]")
        if self.interest_top + self.interest_bottom > 1:
            raise ConfigError("interest_top + interest_bottom must not exceed 1")
        if self.n_rank < 2 or self.n_similar < 2 or self.max_history < 1 or self.n_recon < 1:
            raise ConfigError("n_rank and n_similar need >= 2; max_history and n_recon >= 1")
        _letters(max(self.n_rank, self.n_similar))


class AlignmentBuilder:
    """Builds RecExplainer-style samples for one form from a :class:`RecommenderView`."""

    def __init__(
        self, view: RecommenderView, config: AlignmentConfig, dataset: Dataset | None = None
    ):
        self.view, self.c = view, config
        self.titles = view.titles
        needs_vectors = config.form in ("intention", "hybrid")
        if needs_vectors and (view.user_vectors is None or view.item_vectors is None):
            raise ModelError(
                f"the {config.form} form needs user and item vectors from the recommender; "
                f"{view.model.name} has none (use a sequence model or bpr-mf)"
            )
        self.field_name, self.field_values = self._item_field(dataset)
        n_items = len(self.titles)
        # items the discrimination tasks ask about: those in some history (known to f)
        seen = np.unique(np.concatenate([s.history for s in view.states]))
        self.pool = seen if len(seen) else np.arange(n_items)
        self._sims: np.ndarray | None = None

    def _item_field(self, dataset: Dataset | None) -> tuple[str | None, list[str] | None]:
        if dataset is None:
            return None, None
        name = self.c.item_field
        if name is None:
            name = dataset.text_fields[0] if dataset.text_fields else None
        if name is None:
            return None, None
        if name not in dataset.items.columns:
            raise ConfigError(f"item_field {name!r} not in the items; have {dataset.text_fields}")
        values = [clean_text(v) for v in dataset.items[name].fillna("").astype(str)]
        return name, values

    # ------------------------------------------------------------- references
    def user_ref(self, s: int, form: str | None = None) -> tuple[str, list[tuple[str, int]]]:
        form = form or self.c.form
        hist = self.view.states[s].history[-self.c.max_history :]
        text = USER_REF[form].format(titles=title_list([self.titles[i] for i in hist]))
        return text, ([("user", s)] if form != "behaviour" else [])

    def item_ref(self, i: int, form: str | None = None) -> tuple[str, list[tuple[str, int]]]:
        form = form or self.c.form
        if form == "behaviour":
            return quote(self.titles[i]), []
        if form == "intention":
            return "<item>", [("item", int(i))]
        return f"<item> {quote(self.titles[i])}", [("item", int(i))]

    def _sample(
        self,
        task: str,
        rng: np.random.Generator,
        answer: str,
        meta: dict[str, Any],
        **slots: _Slot,
    ) -> Sample:
        k = int(rng.integers(len(PHRASINGS[task])))
        template = PHRASINGS[task][k]
        prompt = template.format(**{name: slot.text for name, slot in slots.items()})
        # placeholders are numbered in the order the template uses the slots
        used = sorted(
            (template.index("{" + name + "}"), name)
            for name in slots
            if "{" + name + "}" in template
        )
        vectors = [v for _, name in used for v in slots[name].vectors]
        kinds = placeholder_kinds(prompt)
        if kinds != [kind for kind, _ in vectors]:  # a bug, never bad input: titles are cleaned
            raise AssertionError(f"placeholders {kinds} do not match vectors {vectors}")
        return Sample(
            task=task,
            form=self.c.form,
            system=SYSTEM_ALIGN,
            prompt=prompt,
            answer=answer,
            vectors=vectors,
            meta={**meta, "phrasing": k},
        )

    # ------------------------------------------------------------------ tasks
    def retrieval(self, s: int, rng: np.random.Generator) -> Sample:
        ranking = self.view.ranking(s)
        top = ranking[: self.c.top_k]
        user, vecs = self.user_ref(s)
        return self._sample(
            "retrieval",
            rng,
            clean_text(self.titles[top[0]]),
            {
                "state": s,
                "user": self.view.states[s].user,
                "f_top": top.tolist(),
                "f_top_titles": [clean_text(self.titles[i]) for i in top],
            },
            user=_Slot(user, vecs),
        )

    def ranking(self, s: int, rng: np.random.Generator) -> Sample:
        ranking = self.view.ranking(s)
        n = self.c.n_rank
        if len(ranking) < n:
            raise ModelError(f"state {s} has fewer than {n} unseen items to rank")
        # ranks drawn log-uniformly over f's whole list: near pairs and far pairs both occur
        ranks: set[int] = set()
        while len(ranks) < n:
            r = int(np.exp(rng.uniform(0, np.log(len(ranking)))) - 1)
            ranks.add(min(max(r, 0), len(ranking) - 1))
        items_f_order = ranking[sorted(ranks)]
        shown = items_f_order[rng.permutation(n)]
        refs, vecs = zip(*(self.item_ref(int(i)) for i in shown), strict=True)
        letter_of = {int(i): LETTERS[k] for k, i in enumerate(shown)}
        order = [letter_of[int(i)] for i in items_f_order]
        user, uvecs = self.user_ref(s)
        example = ", ".join(_letters(n)[::-1])
        return self._sample(
            "ranking",
            rng,
            ", ".join(order),
            {
                "state": s,
                "user": self.view.states[s].user,
                "items": [int(i) for i in shown],
                "order": order,
                "f_ranks": sorted(ranks),
            },
            user=_Slot(user, uvecs),
            candidates=_Slot(_candidates(refs), [v for vs in vecs for v in vs]),
            n=_Slot(str(n), []),
            example=_Slot(example, []),
        )

    def interest(self, s: int, rng: np.random.Generator, label: bool | None = None) -> Sample:
        ranking = self.view.ranking(s)
        n = len(ranking)
        n_top = max(1, int(np.floor(n * self.c.interest_top)))
        n_bottom = max(1, int(np.floor(n * self.c.interest_bottom)))
        if label is None:
            label = bool(rng.random() < 0.5)
        pos = int(rng.integers(n_top)) if label else int(n - n_bottom + rng.integers(n_bottom))
        item = int(ranking[pos])
        user, uvecs = self.user_ref(s)
        ref, ivecs = self.item_ref(item)
        return self._sample(
            "interest",
            rng,
            "Yes" if label else "No",
            {
                "state": s,
                "user": self.view.states[s].user,
                "item": item,
                "label": label,
                "f_rank": pos,
                "n_unseen": n,
            },
            user=_Slot(user, uvecs),
            item=_Slot(ref, ivecs),
        )

    def item_title(self, rng: np.random.Generator) -> Sample:
        item = int(rng.choice(self.pool))
        ref, vecs = self.item_ref(item, "intention")
        return self._sample(
            "item_title",
            rng,
            clean_text(self.titles[item]),
            {"item": item},
            item=_Slot(ref, vecs),
        )

    def item_field(self, rng: np.random.Generator) -> Sample:
        assert self.field_values is not None and self.field_name is not None
        pool = [i for i in self.pool if self.field_values[int(i)]]
        if not pool:
            raise ModelError(f"no item has a value in text field {self.field_name!r}")
        item = int(pool[int(rng.integers(len(pool)))])
        ref, vecs = self.item_ref(item)
        return self._sample(
            "item_field",
            rng,
            self.field_values[item],
            {"item": item, "field": self.field_name},
            item=_Slot(ref, vecs),
            field=_Slot(self.field_name.replace("_", " "), []),
        )

    def similarities(self) -> np.ndarray:
        if self._sims is None:
            v = self.view.item_vectors
            if v is None:
                raise ModelError(f"{self.view.model.name} has no item vectors to compare")
            v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
            self._sims = (v @ v.T).astype(np.float32)
        return self._sims

    def item_similar(self, rng: np.random.Generator) -> Sample:
        sims = self.similarities()
        item = int(rng.choice(self.pool))
        row = sims[item].astype(np.float64).copy()
        same_title = np.array([t == self.titles[item] for t in self.titles])
        row[same_title] = -np.inf  # itself and duplicates of its title
        order = np.argsort(-row, kind="stable")
        finite = order[np.isfinite(row[order])]
        best = int(finite[0])
        bottom = finite[len(finite) // 2 :]
        distractors = rng.choice(bottom, size=self.c.n_similar - 1, replace=False)
        shown = np.array([best, *distractors.tolist()])[rng.permutation(self.c.n_similar)]
        refs, vecs = zip(*(self.item_ref(int(i)) for i in shown), strict=True)
        answer = LETTERS[int(np.flatnonzero(shown == best)[0])]
        ref, ivecs = self.item_ref(item)
        return self._sample(
            "item_similar",
            rng,
            answer,
            {"item": item, "items": [int(i) for i in shown], "most_similar": best},
            item=_Slot(ref, ivecs),
            candidates=_Slot(_candidates(refs), [v for vs in vecs for v in vs]),
        )

    def history(self, s: int, rng: np.random.Generator) -> Sample:
        hist = self.view.states[s].history
        target = hist[-self.c.n_recon :][::-1]
        user, uvecs = self.user_ref(s, "intention")
        return self._sample(
            "history",
            rng,
            "\n".join(clean_text(self.titles[i]) for i in target),
            {
                "state": s,
                "user": self.view.states[s].user,
                "items": [int(i) for i in target],
                "titles": [clean_text(self.titles[i]) for i in target],
            },
            user=_Slot(user, uvecs),
            n=_Slot(str(len(target)), []),
        )

    # ------------------------------------------------------------------ build
    def applicable(self) -> list[str]:
        out = []
        for task in ALIGN_TASKS:
            if task in _NOT_IN_FORM[self.c.form]:
                continue
            if task == "item_field" and self.field_values is None:
                continue
            if task == "item_similar" and self.view.item_vectors is None:
                continue
            out.append(task)
        return out

    def build(self) -> SampleSet:
        c = self.c
        usable = self.applicable()
        weights = {t: w for t, w in c.tasks.items() if t in usable}
        skipped = sorted(t for t, w in c.tasks.items() if w > 0 and t not in usable)
        n_states = len(self.view.states)
        samples: list[Sample] = []
        if c.per_state:
            user_tasks = [
                t for t in ("retrieval", "ranking", "interest", "history") if weights.get(t, 0)
            ]
            for task in user_tasks:
                rng = _task_rng(c.seed, task)
                for s in range(n_states):
                    if task == "interest":  # one of each label per state: balanced
                        samples.append(self.interest(s, rng, True))
                        samples.append(self.interest(s, rng, False))
                    else:
                        samples.append(getattr(self, task)(s, rng))
            for task in ("item_title", "item_field", "item_similar"):
                if weights.get(task, 0):
                    rng = _task_rng(c.seed, task)
                    samples.extend(getattr(self, task)(rng) for _ in range(n_states))
        else:
            for task, count in allocate(c.n_samples, weights).items():
                rng = _task_rng(c.seed, task)
                for _ in range(count):
                    if task.startswith("item_"):
                        samples.append(getattr(self, task)(rng))
                    else:
                        samples.append(getattr(self, task)(int(rng.integers(n_states)), rng))
            order = np.random.default_rng([c.seed, 99]).permutation(len(samples))
            samples = [samples[i] for i in order]
        dim = self.view.item_vectors.shape[1] if self.view.item_vectors is not None else 0
        users = self.view.user_vectors
        info = {
            "builder": "alignment",
            "prompt_version": PROMPT_VERSION,
            "config": {**c.__dict__},
            "skipped_tasks": skipped,
            "n_states": n_states,
            "states": [{"user": st.user, "length": len(st.history)} for st in self.view.states],
            **self.view.describe(),
        }
        return SampleSet(
            samples,
            users if users is not None else np.zeros((n_states, dim), np.float32),
            (
                self.view.item_vectors
                if self.view.item_vectors is not None
                else np.zeros((len(self.titles), 0), np.float32)
            ),
            info,
        )


def build_alignment(
    model: Any,
    dataset: Dataset,
    users: Sequence[int] | np.ndarray,
    config: AlignmentConfig | None = None,
    *,
    split: str = "train",
    states_per_user: int = 1,
) -> SampleSet:
    """Alignment samples for ``users`` in ``config.form``, labelled by ``model`` (f)."""
    config = config or AlignmentConfig()
    model.check_dataset(dataset)
    states = user_states(
        dataset, users, split=split, states_per_user=states_per_user, seed=config.seed
    )
    if not states:
        raise ConfigError("none of the given users has enough history to build samples")
    view = recommender_view(model, states)
    return AlignmentBuilder(view, config, dataset).build()


# --------------------------------------------------------- knowledge builder
@dataclass
class KnowledgeConfig:
    """Recommendation-knowledge mixture (Cao et al.); ``tasks`` maps task -> weight."""

    tasks: dict[str, float] = field(default_factory=lambda: dict(WITH_AUX_MIX))
    n_samples: int = 1000
    max_history: int = 10
    min_history: int = 3
    n_candidates: int = 5
    mlm_rate: float = 0.15
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.tasks) - set(KNOWLEDGE_TASKS))
        if unknown:
            raise ConfigError(
                f"unknown knowledge task(s) {unknown}; known: {list(KNOWLEDGE_TASKS)}"
            )
        if not 0 < self.mlm_rate < 1:
            raise ConfigError(f"mlm_rate must be in (0, 1), got {self.mlm_rate}")
        if self.min_history < 1 or self.max_history < self.min_history:
            raise ConfigError("need 1 <= min_history <= max_history")
        _letters(self.n_candidates)


_WORD = re.compile(r"[^\W\d_][\w'-]*[^\W_]|[^\W\d_]{2,}", re.UNICODE)


class KnowledgeBuilder:
    """Ground-truth recommendation tasks and auxiliary tasks over the training split."""

    def __init__(
        self, dataset: Dataset, users: Sequence[int] | np.ndarray, config: KnowledgeConfig
    ):
        self.ds, self.c = dataset, config
        self.titles = dataset.titles
        train = dataset.interactions[dataset.interactions["split"] == "train"]
        seqs = dataset.user_sequences(("train",))
        ratings: list[np.ndarray] = [np.empty(0) for _ in range(dataset.n_users)]
        if len(train):
            u = train["user_idx"].to_numpy()
            r = train["rating"].to_numpy(dtype=np.float64)
            bounds = np.flatnonzero(np.diff(u)) + 1
            for start, chunk in zip(np.r_[0, bounds], np.split(r, bounds), strict=True):
                ratings[int(u[start])] = chunk
        self.seqs, self.ratings = seqs, ratings
        self.has_ratings = bool(len(train)) and bool(np.isfinite(train["rating"]).any())
        self.users = np.array(
            [int(u) for u in users if len(seqs[int(u)]) > config.min_history], dtype=np.int64
        )
        if not len(self.users):
            raise ConfigError(
                f"no given user has more than {config.min_history} training interactions"
            )
        self.all_seen = [set(s.tolist()) for s in dataset.user_sequences()]

    def _draw(self, rng: np.random.Generator) -> tuple[int, int]:
        """A user and a cut point ``t``: history ``seq[:t]``, target ``seq[t]``."""
        u = int(self.users[int(rng.integers(len(self.users)))])
        t = int(rng.integers(self.c.min_history, len(self.seqs[u])))
        return u, t

    def _window(self, u: int, t: int) -> np.ndarray:
        return self.seqs[u][max(0, t - self.c.max_history) : t]

    def _negatives(self, u: int, n: int, rng: np.random.Generator) -> list[int]:
        out: list[int] = []
        while len(out) < n:
            i = int(rng.integers(len(self.titles)))
            if i not in self.all_seen[u] and i not in out:
                out.append(i)
        return out

    def _sample(self, task: str, rng: np.random.Generator, answer: str, meta: dict, **slots: str):
        k = int(rng.integers(len(PHRASINGS[task])))
        return Sample(
            task=task,
            form="text",
            system=SYSTEM_KNOWLEDGE,
            prompt=PHRASINGS[task][k].format(**slots),
            answer=answer,
            meta={**meta, "phrasing": k},
        )

    def rec_retrieval(self, rng: np.random.Generator) -> Sample:
        u, t = self._draw(rng)
        target = int(self.seqs[u][t])
        return self._sample(
            "rec_retrieval",
            rng,
            clean_text(self.titles[target]),
            {"user": u, "target": target},
            history=title_list([self.titles[i] for i in self._window(u, t)]),
        )

    def rec_ranking(self, rng: np.random.Generator) -> Sample:
        u, t = self._draw(rng)
        target = int(self.seqs[u][t])
        cands = np.array([target, *self._negatives(u, self.c.n_candidates - 1, rng)])
        cands = cands[rng.permutation(len(cands))]
        answer = LETTERS[int(np.flatnonzero(cands == target)[0])]
        return self._sample(
            "rec_ranking",
            rng,
            answer,
            {"user": u, "target": target, "items": cands.tolist()},
            history=title_list([self.titles[i] for i in self._window(u, t)]),
            candidates=_candidates([quote(self.titles[i]) for i in cands]),
        )

    def rating(self, rng: np.random.Generator) -> Sample:
        u, t = self._draw(rng)
        lo = max(0, t - self.c.max_history)
        hist = ", ".join(
            f"{quote(self.titles[i])} ({_fmt_rating(r)})"
            for i, r in zip(self.seqs[u][lo:t], self.ratings[u][lo:t], strict=True)
        )
        target = int(self.seqs[u][t])
        return self._sample(
            "rating",
            rng,
            _fmt_rating(self.ratings[u][t]),
            {"user": u, "target": target, "rating": float(self.ratings[u][t])},
            history=hist,
            item=quote(self.titles[target]),
        )

    def mim(self, rng: np.random.Generator) -> Sample:
        u, t = self._draw(rng)
        window = self.seqs[u][max(0, t + 1 - self.c.max_history) : t + 1]
        pos = int(rng.integers(len(window)))
        shown = [MASK if k == pos else quote(self.titles[i]) for k, i in enumerate(window)]
        return self._sample(
            "mim",
            rng,
            clean_text(self.titles[window[pos]]),
            {"user": u, "target": int(window[pos]), "position": pos},
            history=", ".join(shown),
        )

    def mlm(self, rng: np.random.Generator) -> Sample:
        u, t = self._draw(rng)
        titles = [clean_text(self.titles[i]) for i in self._window(u, t)]
        spans = [(k, m) for k, title in enumerate(titles) for m in _WORD.finditer(title)]
        chosen = np.flatnonzero(rng.random(len(spans)) < self.c.mlm_rate)
        if not len(chosen):
            chosen = np.array([int(rng.integers(len(spans)))])
        hidden: list[str] = []
        by_title: dict[int, list[re.Match[str]]] = {}
        for c in sorted(chosen.tolist()):
            k, m = spans[c]
            by_title.setdefault(k, []).append(m)
            hidden.append(m.group(0))
        masked = []
        for k, title in enumerate(titles):
            for m in reversed(by_title.get(k, [])):
                title = title[: m.start()] + MASK + title[m.end() :]
            masked.append(f"«{title}»")
        return self._sample(
            "mlm",
            rng,
            ", ".join(hidden),
            {"user": u, "words": hidden},
            history=", ".join(masked),
        )

    def bpr(self, rng: np.random.Generator) -> Sample:
        u, t = self._draw(rng)
        pos = int(self.seqs[u][t])
        neg = self._negatives(u, 1, rng)[0]
        pair = [pos, neg] if rng.random() < 0.5 else [neg, pos]
        return self._sample(
            "bpr",
            rng,
            "A" if pair[0] == pos else "B",
            {"user": u, "positive": pos, "negative": neg, "items": pair},
            history=title_list([self.titles[i] for i in self._window(u, t)]),
            candidates=_candidates([quote(self.titles[i]) for i in pair]),
        )

    def build(self) -> SampleSet:
        c = self.c
        weights = dict(c.tasks)
        skipped = []
        if weights.get("rating", 0) > 0 and not self.has_ratings:
            weights.pop("rating")
            skipped.append("rating")
        samples: list[Sample] = []
        for task, count in allocate(c.n_samples, weights).items():
            rng = _task_rng(c.seed, task)
            samples.extend(getattr(self, task)(rng) for _ in range(count))
        order = np.random.default_rng([c.seed, 98]).permutation(len(samples))
        info = {
            "builder": "knowledge",
            "prompt_version": PROMPT_VERSION,
            "config": {**c.__dict__},
            "skipped_tasks": skipped,
            "dataset": self.ds.name,
            "dataset_fingerprint": self.ds.fingerprint(),
            "n_users": len(self.users),
        }
        return SampleSet(
            [samples[i] for i in order],
            np.zeros((0, 0), np.float32),
            np.zeros((self.ds.n_items, 0), np.float32),
            info,
        )


def _fmt_rating(r: float) -> str:
    if not np.isfinite(r):
        return "?"
    return str(int(r)) if float(r).is_integer() else f"{r:.1f}"


def build_knowledge(
    dataset: Dataset, users: Sequence[int] | np.ndarray, config: KnowledgeConfig | None = None
) -> SampleSet:
    """Recommendation-knowledge samples (ground truth of the training split) for ``users``."""
    return KnowledgeBuilder(dataset, users, config or KnowledgeConfig()).build()


def knowledge_eval_samples(
    dataset: Dataset, users: Sequence[int] | np.ndarray, *, max_history: int = 10, seed: int = 0
) -> SampleSet:
    """Next-title retrieval prompts for the test split: history = train + valid, target = test.

    ``meta`` holds the target and every item of the history (excluded from ranking).
    """
    us, hists, targets = dataset.histories_for("test")
    lookup = {int(u): (h, int(t)) for u, h, t in zip(us, hists, targets, strict=True)}
    titles = dataset.titles
    rng = _task_rng(seed, "rec_retrieval-eval")
    samples = []
    for u in users:
        if int(u) not in lookup:
            continue
        hist, target = lookup[int(u)]
        k = int(rng.integers(len(REC_RETRIEVAL_EVAL)))
        samples.append(
            Sample(
                task="rec_retrieval",
                form="text",
                system=SYSTEM_KNOWLEDGE,
                prompt=REC_RETRIEVAL_EVAL[k].format(
                    history=title_list([titles[i] for i in hist[-max_history:]])
                ),
                answer=clean_text(titles[target]),
                meta={"user": int(u), "target": target, "seen": sorted(set(hist.tolist()))},
            )
        )
    return SampleSet(
        samples,
        np.zeros((0, 0), np.float32),
        np.zeros((dataset.n_items, 0), np.float32),
        {"builder": "knowledge-eval", "dataset": dataset.name, "prompt_version": PROMPT_VERSION},
    )


REC_RETRIEVAL_EVAL = PHRASINGS["rec_retrieval"]
