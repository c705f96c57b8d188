"""Explanations: cache -> LLM within a budget -> grounded template.

Explanations are cached by (history hash, preferences, item, model, prompt version, LLM)
in an LRU in front of SQLite. On a miss the grounded evidence and template reason are
computed with :class:`whyrec.explain.explainer.LaneExplainer` (or, for non-LANE runs, a
leave-one-out history attribution and :func:`whyrec.explain.templates.template_reason`),
stored, and an LLM job is queued. The caller waits for that job at most its time budget;
otherwise it gets the template, flagged, and the LLM reason replaces it in the cache when
ready.

Everything about explanations lives in this module (:class:`Explanations`), so that how
they are computed can change without touching the rest of the service.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from whyrec.explain.explainer import Explanation, LaneExplainer
from whyrec.explain.prompts import BASELINE_VERSION, EXPLANATION_VERSION
from whyrec.explain.templates import template_reason
from whyrec.serve.catalog import Catalog, History
from whyrec.serve.errors import InvalidInput
from whyrec.serve.llm_gate import LLMGate, RecordingClient, is_outage, now_iso
from whyrec.serve.preferences import PreferenceProvider, Preferences
from whyrec.serve.settings import ServeSettings
from whyrec.serve.store import LRU, ServeStore

#: How many recent history items the non-LANE attribution removes one at a time.
GENERIC_ATTRIBUTION_WINDOW = 20
_INTERNAL_KEYS = ("retry_at", "key", "history_hash", "item")


@dataclass
class ExplainResult:
    """One item's explanation record, where it came from, and a running LLM job if any."""

    record: dict[str, Any]
    cache: str  # memory | store | miss
    job: Future[dict[str, Any]] | None = None
    key: str = ""


class ServeExplainer(LaneExplainer):
    """LaneExplainer for an explicit (history, preferences) — e.g. a known user whose
    history grew through the API, or a history the model has never seen."""

    def explain_with(
        self, item: int, history: History, prefs: Preferences, *, use_llm: bool
    ) -> Explanation:
        return self._explain(
            int(item),
            None,
            np.asarray(history.items, dtype=np.int64),
            list(prefs.texts),
            prefs.source,
            prefs.vectors,
            history.user,
            use_llm,
        )


class Explanations:
    """Explanation records per (history, item): cached, stored, written by the LLM in the
    background. Thread-safe; ``explain_items`` blocks (run it off the event loop)."""

    def __init__(
        self,
        model: Any,
        settings: ServeSettings,
        store: ServeStore,
        catalog: Catalog,
        preferences: PreferenceProvider,
        llm: LLMGate,
        model_id: str,
    ) -> None:
        self.model = model
        self.settings = settings
        self.store = store
        self.catalog = catalog
        self.preferences = preferences
        self.llm = llm
        self.model_id = model_id
        self.is_lane = model.name == "lane"
        self.prompt_version = EXPLANATION_VERSION if self.is_lane else BASELINE_VERSION
        self.explanations = LRU(settings.explanation_cache_size)

    def explanation_key(self, history: History, item: int, prefs: Preferences | None) -> str:
        parts = [
            history.digest,
            prefs.tag if prefs is not None else "-",
            self.catalog.item_ids[item],
            self.model_id,
            self.prompt_version,
            self.llm.author,
        ]
        return hashlib.sha256("|".join(parts).encode("utf-8")).hexdigest()[:32]

    def cached_explanation(self, key: str) -> dict[str, Any] | None:
        """The in-memory explanation (no I/O: safe on the event loop)."""
        return self.explanations.get(key)

    def needs_llm(self, rec: dict[str, Any]) -> bool:
        """Should an LLM job (re)start for this record now?"""
        status = rec.get("llm_status")
        if status in ("done", "disabled") or not self.llm.usable():
            return False
        if status == "failed":
            return time.time() >= float(rec.get("retry_at") or 0)
        return True  # pending (e.g. after a restart) or unavailable earlier

    def explain_items(
        self, history: History, items: Sequence[int], *, with_llm: bool = True
    ) -> list[ExplainResult]:
        """Explanation records for ``items`` (blocking: run it in :attr:`pool`)."""
        prefs = self.preferences.preferences_for(history) if self.is_lane else None
        out = []
        for item in items:
            key = self.explanation_key(history, int(item), prefs)
            cache = "memory"
            rec = self.explanations.get(key)
            if rec is None:
                cache = "store"
                rec = self.store.get_explanation(key)
            if rec is None:
                cache = "miss"
                rec = self._template_record(history, int(item), prefs, key)
                self.store.put_explanation(key, rec)
            self.explanations.put(key, rec)
            job = self.llm.running(key)
            if job is None and with_llm and self.needs_llm(rec):
                job = self.llm.submit(
                    key, lambda k=key, i=int(item): self._llm_job(k, history, i, prefs)
                )
            out.append(ExplainResult(rec, cache, job, key))
        return out

    def _template_record(
        self, history: History, item: int, prefs: Preferences | None, key: str
    ) -> dict[str, Any]:
        """Grounded evidence and the template reason for one item."""
        if self.is_lane:
            assert prefs is not None
            exp = ServeExplainer(
                self.model,
                None,
                item_texts=self.catalog.item_fields,
                history_window=self.settings.history_window,
            ).explain_with(item, history, prefs, use_llm=False)
        else:
            exp = self._generic_explanation(history, item)
        rec = self._record(exp, key, history)
        if not self.llm.enabled:
            rec["llm_status"] = "disabled"
        elif self.llm.client is None:
            rec["llm_status"] = "unavailable"
            rec["problems"] = [self.llm.error or "LLM unavailable"]
        else:
            rec["llm_status"] = "pending"
        return rec

    def _generic_explanation(self, history: History, item: int) -> Explanation:
        """Non-LANE runs: score, rank and a leave-one-out attribution over recent history."""
        hist = np.asarray(history.items, dtype=np.int64)
        if len(hist) == 0:
            raise InvalidInput(["body"], "empty history: nothing to explain from")
        win = GENERIC_ATTRIBUTION_WINDOW
        offset = max(0, len(hist) - win)
        variants = [np.delete(hist, p) for p in range(offset, len(hist))] if len(hist) > 1 else []
        scores = self.model.score_batch([hist, *variants], None).astype(np.float64)
        seen = np.unique(hist)
        scores[:, seen] = -np.inf
        finite = np.isfinite(scores[:, item])
        base = float(scores[0, item]) if finite[0] else float("nan")
        rank = int((scores[0] > scores[0, item]).sum()) + 1 if finite[0] else 0
        effects = []
        for v, p in enumerate(range(offset, len(hist)), start=1):
            if not finite[v]:
                continue
            effects.append(
                {
                    "item": int(hist[p]),
                    "position": int(p),
                    "score_drop": base - float(scores[v, item]),
                    "rank_without": int((scores[v] > scores[v, item]).sum()) + 1,
                    "title": self.catalog.item_titles[int(hist[p])],
                }
            )
        effects.sort(key=lambda e: -e["score_drop"])
        effects = effects[:5]
        influential = [e["title"] for e in effects if e["score_drop"] > 0][:3]
        title = self.catalog.item_titles[item]
        return Explanation(
            item=item,
            item_id=self.catalog.item_ids[item],
            title=title,
            rank=rank,
            score=base,
            preferences=[],
            preference_source="none",
            weights=[],
            preference_effects=[],
            history_effects=effects,
            reason=template_reason(title, [], [], influential),
            reason_source="template",
            user=history.user,
        )

    def _record(self, exp: Explanation, key: str, history: History) -> dict[str, Any]:
        d = exp.to_dict()
        pref_effects = [
            {
                "index": int(p["index"]),
                "preference": p["preference"],
                "weight": float(p["weight"]),
                "score_drop": float(p["score_drop"]),
                "rank_without": int(p["rank_without"]),
            }
            for p in d["preference_effects"]
        ]
        hist_effects = [
            {
                "item_id": self.catalog.item_ids[int(h["item"])],
                "title": h.get("title") or self.catalog.item_titles[int(h["item"])],
                "position": int(h["position"]),
                "score_drop": float(h["score_drop"]),
                "rank_without": int(h["rank_without"]),
            }
            for h in d["history_effects"]
        ]
        score = d["score"]
        return {
            "key": key,
            "item": int(d["item"]),
            "item_id": d["item_id"],
            "title": d["title"],
            "user": history.user,
            "rank": int(d["rank"]),
            "score": None if score is None or not np.isfinite(score) else float(score),
            "reason": d["reason"],
            "reason_source": d["reason_source"],
            "llm_status": "done" if d["reason_source"] != "template" else "pending",
            "preferences": list(d["preferences"]),
            "preference_source": d["preference_source"],
            "weights": [float(w) for w in d["weights"]],
            "attribution": {"preferences": pref_effects, "history": hist_effects},
            "steps": d.get("steps"),
            "llm_model": d.get("model") or "",
            "prompt_version": d.get("prompt_version") or "",
            "problems": list(d.get("problems") or []),
            "history_length": int(len(history.items)),
            "history_hash": history.digest,
            "model": self.model.name,
            "created": now_iso(),
            "retry_at": None,
        }

    def _llm_job(
        self, key: str, history: History, item: int, prefs: Preferences | None
    ) -> dict[str, Any]:
        """Background: the LLM's reason for one item; the record in cache and store is
        replaced by the LLM's version, or marked failed (template kept, retried later)."""
        base = self.explanations.get(key) or self.store.get_explanation(key)
        client = RecordingClient(self.llm.client)
        try:
            if self.is_lane:
                assert prefs is not None
                exp = ServeExplainer(
                    self.model,
                    client,
                    item_texts=self.catalog.item_fields,
                    history_window=self.settings.history_window,
                ).explain_with(item, history, prefs, use_llm=True)
                ok = exp.reason_source == "llm"
                problems = list(exp.problems)
                rec = self._record(exp, key, history)
            else:
                explainer = LaneExplainer(
                    self.model, client, history_window=self.settings.history_window
                )
                reason = explainer.baseline(item, history=history.items)
                ok = reason is not None
                err = client.last_error
                problems = [] if ok else [f"{type(err).__name__}: {err}" if err else "no reply"]
                if base is None:
                    base = self._record(self._generic_explanation(history, item), key, history)
                rec = dict(base)
                if ok:
                    rec.update(
                        reason=reason,
                        reason_source="baseline-llm",
                        llm_model=str(getattr(client, "model", "")),
                        prompt_version=BASELINE_VERSION,
                        problems=[],
                    )
        except Exception as exc:  # anything unexpected: keep the template, say why
            ok, problems = False, [f"{type(exc).__name__}: {exc}"]
            client.last_error = client.last_error or exc
            rec = dict(base) if base is not None else {}
        outage = not ok and is_outage(client.last_error)
        if not rec:
            return {}
        if ok:
            rec["llm_status"] = "done"
            rec["retry_at"] = None
        else:
            if base is not None:  # keep the original template text and evidence
                rec = {**base, "problems": problems}
            rec["llm_status"] = "failed"
            wait = self.settings.llm_outage_cooldown_s if outage else self.settings.llm_retry_s
            rec["retry_at"] = time.time() + wait
        rec["created"] = now_iso()
        self.llm.record(ok, None if ok else "; ".join(problems)[:500], outage)
        self.store.put_explanation(key, rec)
        self.explanations.put(key, rec)
        return rec

    # -------------------------------------------------------------- output
    def public(self, result: ExplainResult | dict[str, Any], cache: str | None = None) -> dict:
        """The API view of a record: internal fields dropped, ``pending`` and ``cache`` set."""
        if isinstance(result, ExplainResult):
            rec, cache, job = result.record, result.cache, result.job
            pending = job is not None and not job.done()
        else:
            rec, pending = result, False
        out = {k: v for k, v in rec.items() if k not in _INTERNAL_KEYS}
        out["pending"] = bool(pending)
        out["cache"] = cache or "memory"
        if out["reason_source"] == "template":
            out["reason_note"] = (
                "grounded template reason (built only from the model's evidence)"
                + (
                    "; the LLM's reason is being written"
                    if pending
                    else {
                        "disabled": "; the LLM is disabled",
                        "failed": "; the LLM's attempt failed",
                        "unavailable": "; the LLM is unavailable",
                    }.get(str(rec.get("llm_status")), "")
                )
            )
        return out

    def is_final(self, rec: dict[str, Any]) -> bool:
        """A record that will not change any more (safe to cache whole responses)."""
        return rec.get("llm_status") in ("done", "disabled")

    async def wait_jobs(self, results: list[ExplainResult], budget: float) -> None:
        """Wait up to ``budget`` seconds for the results' LLM jobs; take finished ones."""
        pending = {
            asyncio.wrap_future(r.job): r for r in results if r.job is not None and budget > 0
        }
        if not pending:
            return
        done, _ = await asyncio.wait(set(pending), timeout=budget)
        for fut in done:
            r = pending[fut]
            try:
                rec = fut.result()
            except Exception:  # the job recorded its own failure
                rec = None
            if rec:
                r.record = rec
            r.job = None


__all__ = ["ExplainResult", "Explanations", "GENERIC_ATTRIBUTION_WINDOW", "ServeExplainer"]
