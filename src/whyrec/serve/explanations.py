"""Explanations: cache -> LLM within a budget -> grounded template.

Every explanation comes from the one explanation pipeline
(:class:`whyrec.explain.explainer.ExplanationPipeline`), exactly as ``whyrec explain``
and batch jobs make it: ``plan`` gives the item-specific evidence and the template at
once; the LLM job asks the planned request and ``finish`` verifies the reply. Records
are the pipeline's record (:meth:`Explanation.to_dict`) plus the service's own status
fields, cached by (history hash, preferences, item, model, prompt and evidence versions,
LLM) in an LRU in front of the store. The caller waits for an LLM job at most its time
budget; otherwise it gets the template, flagged, and the LLM's reason replaces it in the
cache when ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from whyrec.explain.asking import ask
from whyrec.explain.evidence import EVIDENCE_VERSION
from whyrec.explain.explainer import ExplanationPipeline
from whyrec.explain.gathering import fact_label_of
from whyrec.explain.prompts import EXPLANATION_VERSION
from whyrec.explain.record import Explanation, Subject, written_by_llm
from whyrec.serve.catalog import History
from whyrec.serve.errors import InvalidInput
from whyrec.serve.llm_gate import is_outage, now_iso
from whyrec.serve.parts import ServicePart, ServiceParts
from whyrec.serve.preferences import PreferenceProvider, Preferences
from whyrec.serve.store import LRU, StoreUnavailable

_INTERNAL_KEYS = ("retry_at", "key", "history_hash", "item")


@dataclass
class ExplainResult:
    """One item's explanation record, where it came from, and a running LLM job if any."""

    record: dict[str, Any]
    cache: str  # memory | store | miss
    job: Future[dict[str, Any]] | None = None
    key: str = ""
    #: another replica (shared store) is writing the LLM's reason for this record
    elsewhere: bool = False


class Explanations(ServicePart):
    """Explanation records per (history, item): cached, stored, written by the LLM in the
    background. Thread-safe; ``explain_items`` blocks (run it off the event loop)."""

    def __init__(self, parts: ServiceParts, preferences: PreferenceProvider, model_id: str) -> None:
        super().__init__(parts)
        self.preferences = preferences
        self.model_id = model_id
        self.prompt_version = EXPLANATION_VERSION
        self.pipeline = ExplanationPipeline(
            self.model,
            None,
            item_texts=self.catalog.item_fields,
            fact_label=fact_label_of(self.catalog.field_name),
            history_window=self.settings.history_window,
        )
        #: final explanation records by key (memory; the store keeps them durably)
        self.cache = LRU(self.settings.explanation_cache_size)
        #: this replica's name on the LLM claims of a shared store
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def explanation_key(self, history: History, item: int, prefs: Preferences | None) -> str:
        parts = [
            history.digest,
            prefs.tag if prefs is not None else "-",
            self.catalog.item_ids[item],
            self.model_id,
            self.prompt_version,
            EVIDENCE_VERSION,
            self.llm.author,
        ]
        return hashlib.sha256("|".join(parts).encode("utf-8")).hexdigest()[:32]

    def cached_explanation(self, key: str) -> dict[str, Any] | None:
        """The in-memory explanation (no I/O: safe on the event loop)."""
        return self.cache.get(key)

    def needs_llm(self, rec: dict[str, Any]) -> bool:
        """Should an LLM job (re)start for this record now?"""
        status = rec.get("llm_status")
        if status in ("done", "disabled") or not self.llm.usable():
            return False
        if status == "failed":
            return time.time() >= float(rec.get("retry_at") or 0)
        return True  # pending (e.g. after a restart) or unavailable earlier

    def subject(self, history: History, prefs: Preferences | None) -> Subject:
        """The pipeline's subject: a trained user as the CLI sees them, or an explicit
        history with its preferences."""
        if len(history.items) == 0:
            raise InvalidInput(["body"], "empty history: nothing to explain from")
        if history.index is not None and history.version == 0:
            return self.pipeline.subject(history.index)
        if not self.model.has_preferences:
            return Subject(None, history.user, np.asarray(history.items, np.int64), [], "none")
        assert prefs is not None
        return self.pipeline.subject(
            None, history=history.items, preferences=prefs.texts, vectors=prefs.vectors,
            preference_source=prefs.source, user_id=history.user,
        )  # fmt: skip

    def explain_items(
        self, history: History, items: Sequence[int], *, with_llm: bool = True
    ) -> list[ExplainResult]:
        """Explanation records for ``items`` (blocking: run it in :attr:`pool`)."""
        prefs = self.preferences.preferences_for(history) if self.model.has_preferences else None
        out = []
        for item in items:
            key = self.explanation_key(history, int(item), prefs)
            cache = "memory"
            rec = self.cache.get(key)
            if rec is None:
                cache = "store"
                try:
                    rec = self.store.get_explanation(key)
                except StoreUnavailable:
                    # the store is down: serve what this replica last held, if anything
                    # (uncached explanations are refused: 503, nothing is computed)
                    last_seen = getattr(self.cache, "last_seen", None)
                    rec = last_seen(key) if last_seen is not None else None
                    if rec is None:
                        raise
                    out.append(ExplainResult(rec, "memory", None, key, False))
                    continue
            if rec is None:
                cache = "miss"
                rec = self._template_record(history, int(item), prefs, key)
                self.store.put_explanation(key, rec)
            self.cache.put(key, rec)
            job = self.llm.running(key)
            elsewhere = False
            if job is None and with_llm and self.needs_llm(rec):
                claimed = self._try_claim(key)
                if claimed:
                    job = self.llm.submit(
                        key, lambda k=key, i=int(item): self._claimed_job(k, history, i, prefs)
                    )
                elif claimed is not None:
                    elsewhere = True
            out.append(ExplainResult(rec, cache, job, key, elsewhere))
        return out

    def _claim(self, key: str) -> bool:
        """With replicas sharing the store, only the one holding the claim asks the LLM."""
        if not self.store.shared:
            return True
        return self.store.claim_llm(key, self.owner, self.settings.llm_claim_s)

    def _try_claim(self, key: str) -> bool | None:
        """:meth:`_claim`, or None when the store cannot be reached (no job starts)."""
        try:
            return self._claim(key)
        except StoreUnavailable:
            return None

    def _claimed_job(
        self, key: str, history: History, item: int, prefs: Preferences | None
    ) -> dict[str, Any]:
        try:
            return self._llm_job(key, history, item, prefs)
        finally:
            if self.store.shared:
                # a claim that cannot be given up now expires after llm_claim_s; the
                # reason the job stored stands either way
                with contextlib.suppress(StoreUnavailable):
                    self.store.release_llm(key, self.owner)

    def _template_record(
        self, history: History, item: int, prefs: Preferences | None, key: str
    ) -> dict[str, Any]:
        """Grounded evidence and the template reason for one item (the pipeline's plan)."""
        plan = self.pipeline.plan(self.subject(history, prefs), item, use_llm=False)
        rec = self._record(plan.fallback, key, history)
        if not self.llm.enabled:
            rec["llm_status"] = "disabled"
        elif self.llm.client is None:
            rec["llm_status"] = "unavailable"
            rec["problems"] = [self.llm.error or "LLM unavailable"]
        else:
            rec["llm_status"] = "pending"
        return rec

    def _record(self, exp: Explanation, key: str, history: History) -> dict[str, Any]:
        """The pipeline's record plus the service's fields (``model`` is the recommender,
        ``llm_model`` the LLM that wrote the reason)."""
        rec = exp.to_dict()
        score = rec["score"]
        rec.update(
            key=key,
            score=None if score is None or not np.isfinite(score) else float(score),
            llm_model=rec.pop("model") or "",
            llm_status="done" if exp.reason_source != "template" else "pending",
            history_length=int(len(history.items)),
            history_hash=history.digest,
            model=self.model.name,
            created=now_iso(),
            retry_at=None,
        )
        for h in rec["history_effects"]:
            h["item_id"] = self.catalog.item_ids[int(h["item"])]
        return rec

    def _llm_job(
        self, key: str, history: History, item: int, prefs: Preferences | None
    ) -> dict[str, Any]:
        """Background: the LLM's reason for one item; the record in cache and store is
        replaced by the LLM's version, or marked failed (template kept, retried later)."""
        base = self.cache.get(key) or self.store.get_explanation(key)
        client = self.llm.client
        error: BaseException | None = None
        try:
            pipeline = _with_client(self.pipeline, client)
            plan = pipeline.plan(self.subject(history, prefs), item)
            outcomes = [ask(client, r) for r in plan.requests]
            error = next((o for o in outcomes if isinstance(o, BaseException)), None)
            exp = pipeline.finish(plan, outcomes)
            ok = written_by_llm(exp.reason_source)
            problems = list(exp.problems)
            rec = self._record(exp, key, history)
        except Exception as exc:  # anything unexpected: keep the template, say why
            ok, problems, error = False, [f"{type(exc).__name__}: {exc}"], exc
            rec = dict(base) if base is not None else {}
        outage = not ok and error is not None and is_outage(error)
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
        with contextlib.suppress(StoreUnavailable):  # the store is down: memory keeps it
            self.store.put_explanation(key, rec)
        self.cache.put(key, rec)
        return rec

    # -------------------------------------------------------------- output
    def public(self, result: ExplainResult | dict[str, Any], cache: str | None = None) -> dict:
        """The API view of a record: internal fields dropped, ``pending`` and ``cache`` set."""
        if isinstance(result, ExplainResult):
            rec, cache, job = result.record, result.cache, result.job
            pending = (job is not None and not job.done()) or result.elsewhere
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


__all__ = ["ExplainResult", "Explanations"]


def _with_client(pipeline: ExplanationPipeline, client: Any) -> ExplanationPipeline:
    """The shared pipeline with the gate's current client (a shallow copy: the verifier
    and everything else are shared)."""
    import copy

    p = copy.copy(pipeline)
    p.client = client
    return p
