"""LANE end to end, as functions the CLI, the demo and users call.

``extract_preferences`` → ``train_lane`` → :class:`~whyrec.explain.LaneExplainer`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from whyrec.data.dataset import Dataset
from whyrec.data.facts import ItemFacts, fact_baseline
from whyrec.explain.personal import check_tastes
from whyrec.explain.preferences import (
    PREFERENCES_VERSION,
    ExtractionReport,
    Mode,
    PreferenceExtractor,
    PreferenceStore,
    UserPreferences,
    embed_preferences,
)
from whyrec.models.lane import DEFAULT_HOLDOUT, preference_cut_points
from whyrec.paths import cache_dir


@dataclass
class PreferenceSet:
    """Every user's preferences, their vectors and how they were obtained."""

    prefs: dict[int, UserPreferences]
    vectors: np.ndarray  # (n_users, m, d)
    report: ExtractionReport
    llm_users: list[int] = field(default_factory=list)
    model: str = ""
    prompt_version: str = PREFERENCES_VERSION
    mode: str = "json"
    #: boilerplate LLM sentences replaced (whyrec.explain.personal)
    personal: dict[str, Any] = field(default_factory=dict)
    #: per user, how many training interactions the preferences were written from
    #: (whyrec.models.lane.preference_cut_points); None: the whole training sequence
    cuts: np.ndarray | None = None
    holdout: int | None = None

    @property
    def llm_failed(self) -> bool:
        """Users were asked and every one hit an outage (the LLM stage failed entirely)."""
        return self.report.llm_failed

    @property
    def texts(self) -> list[list[str]]:
        return [self.prefs[u].preferences for u in sorted(self.prefs)]

    @property
    def sources(self) -> list[str]:
        return [self.prefs[u].source for u in sorted(self.prefs)]

    def summary(self) -> dict[str, Any]:
        """Counts for printing and for the benchmark."""
        sampled = [self.prefs[u] for u in self.llm_users]
        return {
            "users": len(self.prefs),
            "llm_users": len(self.llm_users),
            "llm_model": self.model,
            "prompt_version": self.prompt_version,
            "mode": self.mode,
            "asked_now": self.report.asked,
            "reused": self.report.reused,
            # asked now but some call hit an outage (endpoint down, key refused): these
            # users' fallback records are asked again on the next run
            "outage_now": self.report.outage,
            "seconds": round(self.report.seconds, 1),
            "sampled_llm_complete": sum(p.source == "llm" for p in sampled),
            "sampled_partial": sum(p.source == "partial" for p in sampled),
            "sampled_fallback": sum(p.source == "fallback" for p in sampled),
            # users whose preferences are all grounded fallback (the LLM gave nothing usable)
            "sampled_fallback_rate": (
                round(sum(p.source == "fallback" for p in sampled) / len(sampled), 3)
                if sampled
                else None
            ),
            "llm_sentences": sum(p.llm_count for p in sampled),
            "boilerplate_replaced": self.personal.get("boilerplate_replaced", 0),
            # the extraction-time checks (whyrec.explain.personal): specific = names a genre,
            # decade or title of the user's history; paraphrases written for 3+ users go
            "specific_share": self.personal.get("specific_share"),
            "replaced_unspecific": self.personal.get("replaced_unspecific"),
            "replaced_boilerplate": self.personal.get("replaced_boilerplate"),
            "paraphrase_clusters": self.personal.get("paraphrase_clusters"),
            "distinct_llm_sentences": self.personal.get("distinct_llm_sentences"),
            # share of the LLM's sentences that survive the boilerplate detector
            "llm_sentences_kept_share": self.personal.get("kept_share"),
            # share of all preference sentences that are grounded fallback, not LLM-written
            "fallback_sentence_rate": (
                round(
                    1
                    - sum(p.llm_count for p in sampled) / sum(len(p.preferences) for p in sampled),
                    3,
                )
                if sampled
                else None
            ),
        }


def default_store(dataset: Dataset) -> Path:
    """Per-dataset preference store in the cache (shared by runs on the same data)."""
    return cache_dir("preferences") / f"{dataset.name}-{dataset.fingerprint()}.sqlite"


def dataset_baseline(dataset: Dataset) -> dict[str, float]:
    """Fact → share of all training interactions that have it (what most users pick)."""
    facts = ItemFacts.from_dataset(dataset)
    inter = dataset.interactions
    items = inter.loc[inter["split"] == "train", "item_idx"].to_numpy()
    share = fact_baseline(facts, items)
    return {name: float(x) for name, x in zip(facts.names, share, strict=True)}


def extract_preferences(
    dataset: Dataset,
    *,
    client: Any,
    encoder: Any,
    m: int = 5,
    window: int = 200,
    llm_users: int | None = None,
    seed: int = 0,
    store: str | Path | None = None,
    concurrency: int | None = None,
    progress: bool = True,
    mode: Mode = "auto",
    holdout: int | None = DEFAULT_HOLDOUT,
    grounded_only: bool = False,
) -> PreferenceSet:
    """Preferences for every user: from the LLM for all users (``llm_users=None``) or a
    seeded sample of ``llm_users``; the others get grounded fallback preferences.
    ``mode`` picks the prompting style (see :class:`PreferenceExtractor`).

    Leak-free by default: each user's preferences are written from their training
    interactions before a cut ``holdout`` interactions from the end
    (:func:`whyrec.models.lane.preference_cut_points`), and LANE trains the preference
    channel only on the targets after it. ``holdout=None`` reads the whole training
    sequence (right for serving an existing model, wrong for training one).
    ``grounded_only`` skips the LLM (every user gets grounded fallback preferences).
    """
    store_path = Path(store) if store else default_store(dataset)
    pstore = PreferenceStore(store_path)
    baseline = dataset_baseline(dataset)
    extractor = PreferenceExtractor(
        client, m=m, window=window, store=pstore, concurrency=concurrency, mode=mode,
        baseline=baseline,
    )  # fmt: skip
    titles_vec = encoder.encode(dataset.titles, progress=progress)
    n = dataset.n_users
    cuts = None
    if holdout is not None:
        lengths = [len(s) for s in dataset.user_sequences(("train",))]
        cuts = preference_cut_points(lengths, holdout)
    if grounded_only:
        sample: list[int] = []
    elif llm_users is None or llm_users >= n:
        sample = list(range(n))
    else:
        rng = np.random.default_rng(seed)
        sample = sorted(int(u) for u in rng.choice(n, size=llm_users, replace=False))
    prefs = extractor.extract_dataset(
        dataset, None, title_vectors=titles_vec, progress=progress, ask=sample, cuts=cuts
    )
    # an LLM taste that names nothing checkable in the history, or that is one of a
    # paraphrase cluster written for many users, is replaced by a grounded one
    personal = check_tastes(
        prefs, dataset, encoder, m=m, window=window, cuts=cuts, baseline=baseline
    )
    vectors = embed_preferences(prefs, encoder, n, m)
    pstore.close()
    return PreferenceSet(
        prefs=prefs,
        vectors=vectors,
        report=extractor.last_report,
        llm_users=sample,
        model=extractor.model_name,
        prompt_version=extractor.prompt_version,
        mode=extractor.mode,
        personal=personal,
        cuts=cuts,
        holdout=holdout,
    )


def train_lane(
    dataset: Dataset,
    preferences: PreferenceSet,
    *,
    out: str | Path | None = None,
    progress: bool | None = None,
    **config: Any,
) -> Any:
    """Fit LANE on ``dataset`` with ``preferences``; save to ``out`` when given."""
    from whyrec.models.lane import Lane

    model = Lane(n_preferences=preferences.vectors.shape[1], **config)
    model.set_preferences(
        preferences.vectors, preferences.texts, preferences.sources, cuts=preferences.cuts
    )
    checkpoint = Path(out).with_name(Path(out).name + ".ckpt") if out else None
    model.fit(dataset, progress=progress, checkpoint_dir=checkpoint)
    if out:
        model.save(out)
    return model
