"""The preferences a LANE model is served with, for known users and for new histories.

Known users keep the preferences they were trained with. A history the model has not
seen gets the LLM's earlier preferences for the same titles (``history_preferences`` in
the store), or grounded fallback preferences at once while the LLM extracts them in the
background; later requests use the LLM's preferences when they validate.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from whyrec.errors import ModelError
from whyrec.explain.fallback import fallback_preferences
from whyrec.explain.preferences import PreferenceExtractor, history_hash
from whyrec.serve.catalog import History
from whyrec.serve.llm_gate import RecordingClient, is_outage
from whyrec.serve.parts import ServicePart, ServiceParts
from whyrec.serve.store import LRU, StoreUnavailable


@dataclass
class Preferences:
    """The preferences a LANE model is served with for one history."""

    texts: list[str]
    source: str  # llm | partial | fallback (as in whyrec.explain)
    vectors: np.ndarray | None
    pending: bool = False  # an LLM extraction for this history is running
    retry_at: float = 0.0  # after a failed extraction: not before this time

    @property
    def tag(self) -> str:
        return hashlib.sha256("\n".join(self.texts).encode("utf-8")).hexdigest()[:16]


class PreferenceProvider(ServicePart):
    """Preferences per history (LANE runs), new histories' extraction in the background."""

    def __init__(self, parts: ServiceParts) -> None:
        super().__init__(parts)
        model = self.model
        self.m = int(getattr(model.config, "n_preferences", 0)) if model.has_preferences else 0
        self._encoder: Any = None
        self._encoder_lock = threading.Lock()
        self._hist_prefs = LRU(4096)

    def encoder(self) -> Any:
        """The encoder the LANE model's preferences were embedded with (loaded lazily)."""
        with self._encoder_lock:
            if self._encoder is None:
                from whyrec.embed import encoder_from_config

                enc = encoder_from_config(getattr(self.model.config, "encoder", None))
                want = int(self.model.module.user_prefs.shape[-1])
                if int(enc.dim) != want:
                    raise ModelError(
                        f"the run's encoder ({enc.id}) gives {enc.dim}-d vectors but the LANE "
                        f"model's preferences are {want}-d; new histories cannot be served"
                    )
                self._encoder = enc
            return self._encoder

    def _inputs(self, texts: list[str]) -> Any:
        """What the model takes as preferences for ``texts``: their vectors, and (LANE's
        additive channel) the facts each names."""
        vectors = self.encoder().encode(texts)
        inputs = getattr(self.model, "preference_inputs", None)
        return inputs(texts, vectors) if inputs is not None else vectors

    def preferences_for(self, history: History) -> Preferences:
        """A LANE model's preferences for ``history``.

        Known users keep the preferences they were trained with. Other histories get the
        stored LLM preferences for the same titles, or grounded fallback preferences now
        while the LLM extracts them in the background (never blocking the request).
        """
        model = self.model
        if history.index is not None:
            u = history.index
            texts = list(model.preference_texts[u]) if model.preference_texts else []
            source = model.preference_sources[u] if model.preference_sources else "unknown"
            if not texts:
                texts = [f"preference {j + 1}" for j in range(self.m)]
            return Preferences(texts, source, model.user_preference_vectors(u))
        cat = self.catalog
        titles = [cat.item_titles[i] for i in history.items[-self.settings.pref_window :]]
        seq = history.items[-self.settings.pref_window :]
        fields = [cat.item_fields[i] for i in seq] if cat.item_fields else [""] * len(seq)
        key = "h:" + history_hash(titles, self.m)
        hit = self._hist_prefs.get(key)
        if hit is None:
            reachable = True
            try:
                rec = self.store.get_history_preferences(key)
            except StoreUnavailable:  # a shared store is down: fallback, not remembered
                rec, reachable = None, False
            if rec is not None:
                texts, source = list(rec["preferences"]), str(rec["source"])
                hit = Preferences(texts, source, self._inputs(texts))
            else:
                vecs = None if cat.item_fields else self.encoder().encode(titles)
                texts = fallback_preferences(titles, fields, self.m, vecs, cat.field_name or "tag")
                hit = Preferences(texts, "fallback", self._inputs(texts))
            if not reachable:
                return hit
            self._hist_prefs.put(key, hit)
        if (
            hit.source == "fallback"
            and not hit.pending
            and time.time() >= hit.retry_at
            and self.llm.usable()
        ):
            job = self.llm.submit(key, lambda: self._extract_job(key, titles, fields, hit))
            hit.pending = job is not None
        return hit

    def _extract_job(
        self, key: str, titles: list[str], fields: list[str], current: Preferences
    ) -> None:
        """Background: the LLM's preferences for a new history. Kept when some sentences
        validate; otherwise the fallback stays and the LLM is asked again after
        ``llm_retry_s``."""
        client = RecordingClient(self.llm.client)
        prefs = None
        try:
            extractor = PreferenceExtractor(
                client, m=self.m, window=self.settings.pref_window, store=None
            )
            prefs = extractor.extract_history(titles, fields, user=key)
            outage = is_outage(client.last_error)
            problems = "; ".join(prefs.problems)[:500] or None
        except Exception as exc:
            outage, problems = True, f"{type(exc).__name__}: {exc}"
        self.llm.record(not outage, problems, outage)
        if prefs is not None and prefs.source in ("llm", "partial"):
            try:
                self.store.put_history_preferences(key, asdict(prefs))
            except StoreUnavailable:
                pass  # kept in memory; asked again by another replica or after a restart
            vectors = self._inputs(list(prefs.preferences))
            self._hist_prefs.put(key, Preferences(list(prefs.preferences), prefs.source, vectors))
        else:
            current.retry_at = time.time() + self.settings.llm_retry_s
        current.pending = False

    def user_preferences(self, history: History) -> dict[str, Any]:
        """Preferences with LANE's weights for the history's last position."""
        if not self.model.has_preferences:
            return {
                "user": history.user,
                "model": self.model.name,
                "model_has_preferences": False,
                "preferences": [],
                "note": f"{_described(self.model)} has no preferences: each reason cites the "
                "history items whose removal lowers that item's score most, and the facts "
                "they share with it (a LANE model, whyrec train --model lane, adds "
                "preferences and weights)",
            }
        prefs = self.preferences_for(history)
        weights = self.model.preference_weights(history=history.items, preferences=prefs.vectors)
        order = np.argsort(-weights, kind="stable")
        return {
            "user": history.user,
            "model": self.model.name,
            "model_has_preferences": True,
            "source": prefs.source,
            "pending": prefs.pending,
            "preferences": [
                {"index": int(j), "text": prefs.texts[j], "weight": float(weights[j])}
                for j in range(len(prefs.texts))
            ],
            "order": [int(j) for j in order],
        }


__all__ = ["PreferenceProvider", "Preferences"]


def _described(model: Any) -> str:
    """``This sasrec model`` / ``This outside model (implicit-als)``, for notes."""
    adapter = getattr(model, "adapter", None)
    return f"This {model.name} model" + (f" ({adapter})" if adapter else "")
