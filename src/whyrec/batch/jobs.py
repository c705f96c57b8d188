"""What a batch job computes: work items, their LLM requests, and the rows they become.

A job kind splits into three steps so the LLM stage can run anywhere (threads here, Ray
actors elsewhere) while preparation and finishing stay in the driver:

1. :meth:`prepare` turns users into :class:`WorkItem` objects: a key, a JSON-ready LLM
   request and the driver-side context needed later;
2. the LLM stage turns each request into an *outcome record* (:func:`outcome_record`), a
   plain dict that crosses process boundaries unchanged;
3. :meth:`finish` turns (item, outcome records) into a Parquet row or, when the item
   could not be completed (endpoint down, rate limited, crash), a failure record.
   Explanations are the explanation pipeline's own ``plan`` (in ``prepare``) and pure
   ``finish``; preferences run ``PreferenceExtractor`` again with a *replay client* that
   hands it the recorded replies — so validation, verification and fallback are exactly
   what ``whyrec explain`` and ``whyrec preferences`` do.

A reply that never validates is not a failure: like ``whyrec preferences`` and
``whyrec explain``, the item completes with the grounded fallback and the problems,
``status="fallback"``. Failures are the items worth retrying (``--retry-failed``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from whyrec.batch.store import now_iso
from whyrec.errors import ConfigError, DataError

# ---------------------------------------------------------------------------- items


@dataclass
class WorkItem:
    """One output row to compute: its LLM ``requests`` are JSON-ready (usually one; m in
    the per-aspect preference mode), ``context`` stays in the driver."""

    key: str
    user_id: str
    requests: list[dict[str, Any]]
    context: Any = None

    @property
    def stage(self) -> str:
        return str(self.requests[0].get("stage", "")) if self.requests else ""


@dataclass
class Failure:
    """An item that could not be completed, and why."""

    key: str
    user_id: str
    stage: str
    error_type: str
    reason: str
    attempts: int = 0
    last_reply: str | None = None

    def to_row(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "user_id": self.user_id,
            "stage": self.stage,
            "error_type": self.error_type,
            "reason": self.reason,
            "attempts": self.attempts,
            "last_reply": self.last_reply,
            "failed_at": now_iso(),
        }


#: Errors after which the item still completes, with the grounded fallback.
OUTPUT_ERRORS = ("LLMOutputError",)


def _written_by_llm(source: str) -> bool:
    from whyrec.explain.record import written_by_llm

    return written_by_llm(source)


def resolve_schema(ref: dict[str, Any] | None) -> Any:
    """The pydantic schema a request names (``{"name": ..., "m": ...}``)."""
    if ref is None:
        return None
    from whyrec.explain import schemas

    name, m = ref.get("name"), ref.get("m")
    if name == "preferences":
        return schemas.preference_schema(int(m))
    if name == "explanation":
        return schemas.explanation_schema(int(m))
    if name == "baseline":
        return schemas.BaselineExplanation
    raise ValueError(f"unknown schema reference {ref!r}")


def as_llm_request(request: dict[str, Any], tag: Any = None) -> Any:
    """A JSON-ready request (as made by :meth:`prepare`) as an :class:`LLMRequest`."""
    from whyrec.llm import LLMRequest

    return LLMRequest(
        messages=request["messages"],
        schema=resolve_schema(request.get("schema")),
        max_tokens=request.get("max_tokens"),
        temperature=request.get("temperature"),
        seed=request.get("seed"),
        stage=request.get("stage", "default"),
        prompt_version=request.get("prompt_version", "0"),
        tag=tag,
    )


def outcome_record(outcome: Any) -> dict[str, Any]:
    """An :class:`LLMResult` / :class:`LLMFailure` as a plain, JSON-serialisable dict."""
    if outcome.ok:
        parsed = outcome.parsed
        plain = parsed.model_dump(mode="json") if hasattr(parsed, "model_dump") else parsed
        return {
            "ok": True,
            "text": outcome.text,
            "json": plain,
            "model": outcome.model,
            "prompt_tokens": int(outcome.prompt_tokens),
            "completion_tokens": int(outcome.completion_tokens),
            "attempts": int(outcome.attempts),
            "cached": bool(outcome.cached),
            "latency_s": float(outcome.latency_s),
        }
    from whyrec.llm.errors import redact

    err = outcome.error
    raw = getattr(err, "raw", None)
    try:
        json.dumps(raw)
    except (TypeError, ValueError):
        raw = None
    text = getattr(err, "text", None)
    return {  # LLM errors are redacted when made; anything else is redacted here
        "ok": False,
        "error_type": type(err).__name__,
        "error": redact(err),
        "problems": [redact(p) for p in (getattr(err, "problems", None) or [])],
        "text": redact(text) if text else text,
        "raw": raw,
        "attempts": int(getattr(err, "attempts", 0) or 0),
        "cached": bool(getattr(err, "cached", False)),
    }


def outcome_from_record(
    request: dict[str, Any], rec: dict[str, Any], *, tag: Any = None, model: str = ""
) -> Any:
    """A recorded outcome (:func:`outcome_record`) as an ``LLMResult`` / ``LLMFailure``
    again, its reply validated against the request's schema once more."""
    from whyrec.llm import LLMFailure, LLMResult
    from whyrec.llm.errors import LLMOutputError
    from whyrec.llm.parse import Schema

    stage = str(request.get("stage", "default"))
    if not rec.get("ok"):
        err = LLMOutputError(
            rec.get("error", ""),
            text=rec.get("text") or "",
            problems=list(rec.get("problems") or []),
            attempts=int(rec.get("attempts", 0) or 0),
            raw=rec.get("raw"),
        )
        return LLMFailure(error=err, stage=stage, tag=tag)
    parsed = None
    schema = resolve_schema(request.get("schema"))
    if schema is not None:
        parsed, problems = Schema.of(schema).validate(rec.get("json"))
        if problems:
            raise RuntimeError(f"a recorded reply no longer validates: {problems}")
    return LLMResult(
        text=rec["text"],
        parsed=parsed,
        prompt_tokens=int(rec.get("prompt_tokens", 0) or 0),
        completion_tokens=int(rec.get("completion_tokens", 0) or 0),
        latency_s=float(rec.get("latency_s", 0.0) or 0.0),
        model=str(rec.get("model") or model),
        backend="replay",
        cached=bool(rec.get("cached", False)),
        attempts=int(rec.get("attempts", 0) or 0),
        stage=stage,
        tag=tag,
    )


def _blocking(recs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first outcome that makes the item a failure (not just an invalid reply)."""
    return next(
        (r for r in recs if not r.get("ok") and r.get("error_type") not in OUTPUT_ERRORS), None
    )


def _failure(item: WorkItem, rec: dict[str, Any]) -> Failure:
    return Failure(
        key=item.key,
        user_id=item.user_id,
        stage=item.stage,
        error_type=str(rec.get("error_type", "Error")),
        reason=str(rec.get("error", "")),
        attempts=int(rec.get("attempts", 0) or 0),
        last_reply=rec.get("text"),
    )


class _ReplayClient:
    """An LLM client that answers with an item's recorded outcomes, in order.

    It checks that each prompt it is asked is the prompt that was recorded, so a row is
    never built from a reply to a different question.
    """

    def __init__(self, model: str, item: WorkItem, recs: list[dict[str, Any]]) -> None:
        self.model = model
        self.item = item
        self.recs = recs
        self._next = 0

    def _outcome(self, messages: Any, tag: Any) -> Any:
        from whyrec.llm.client import normalize_messages

        i = self._next
        self._next += 1
        if i >= len(self.recs):
            raise RuntimeError(f"item {self.item.key}: more LLM calls than were recorded")
        req, rec = self.item.requests[i], self.recs[i]
        if normalize_messages(messages) != normalize_messages(req["messages"]):
            raise RuntimeError(
                f"item {self.item.key}: the prompt changed between preparing and finishing"
            )
        try:
            return outcome_from_record(req, rec, tag=tag, model=self.model)
        except RuntimeError as exc:
            raise RuntimeError(f"item {self.item.key}: {exc}") from None

    def complete(self, messages: Any, **kwargs: Any) -> Any:
        out = self._outcome(messages, kwargs.get("tag"))
        if not out.ok:
            raise out.error
        return out

    def complete_many(self, requests: Any, **_: Any) -> list[Any]:
        out = []
        for r in requests:
            r = r if isinstance(r, dict) else vars(r)
            out.append(self._outcome(r["messages"], r.get("tag")))
        return out


# ----------------------------------------------------------------------- user lists


def read_user_file(path: str | Path, known: Sequence[str]) -> list[str]:
    """Source user ids from a file: one per line; blank lines, ``#`` comments and a
    ``user_id`` header are skipped; duplicates are kept once."""
    path = Path(path)
    if not path.is_file():
        raise DataError("user file not found (expected one user id per line, or 'all')", path=path)
    index = set(known)
    out: dict[str, None] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc})", path=path) from None
    for n, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip().strip(",")
        if not text or (n == 1 and text.lower() == "user_id"):
            continue
        if text not in index:
            raise DataError(
                f"unknown user id {text!r} (expected a user id of the data, e.g. "
                f"{', '.join(list(known)[:3])})",
                path=path,
                line=n,
                field="user_id",
            )
        out[text] = None
    if not out:
        raise DataError("no user ids in the file", path=path)
    return list(out)


def select_users(users: str, known: Sequence[str]) -> list[int]:
    """``"all"`` or a user file → internal user indices, in file (or data) order."""
    if users == "all":
        return list(range(len(known)))
    lookup = {u: i for i, u in enumerate(known)}
    return [lookup[u] for u in read_user_file(users, known)]


# ---------------------------------------------------------------------- preferences

PREFERENCE_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("user_id", pa.string()),
        ("user_idx", pa.int32()),
        ("status", pa.string()),
        ("preferences", pa.list_(pa.string())),
        ("source", pa.string()),
        ("fallback_count", pa.int32()),
        ("problems", pa.list_(pa.string())),
        ("raw_reply", pa.string()),
        ("model", pa.string()),
        ("prompt_version", pa.string()),
        ("history_hash", pa.string()),
        ("prompt_tokens", pa.int32()),
        ("completion_tokens", pa.int32()),
    ]
)


def _dataset_for(run: str | Path) -> Any:
    """A dataset name/directory, or the dataset a model directory was trained on."""
    from whyrec.data import load_dataset

    path = Path(run)
    if (path / "manifest.json").is_file() and not (path / "interactions.parquet").exists():
        try:
            manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"not valid JSON ({exc})", path=path / "manifest.json") from None
        info = manifest.get("dataset") if isinstance(manifest, dict) else None
        if isinstance(info, dict) and ("path" in info or "name" in info):
            where = info.get("path")
            spec = where if where and Path(where).is_dir() else info.get("name")
            if not spec:
                raise DataError("names no dataset", path=path / "manifest.json", field="dataset")
            return load_dataset(spec)
    return load_dataset(run)


class _LazyVectors:
    """Title vectors computed only if the fallback really clusters titles (``np.asarray``)."""

    def __init__(self, compute: Any) -> None:
        self._compute = compute
        self._value: Any = None

    def _get(self) -> Any:
        if self._value is None:
            self._value = self._compute()
        return self._value

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        value = self._get()
        return value if dtype is None else value.astype(dtype)

    def __len__(self) -> int:
        return len(self._get())


class PreferenceJob:
    """LANE step 3 for many users: m preferences each, from the user's training titles.

    Prompts, validation, prompt mode (one JSON request, or one request per aspect for
    small local models) and the grounded fallback are :class:`PreferenceExtractor`'s,
    so a batch row equals what ``whyrec preferences`` stores for the same user.
    """

    kind = "preferences"
    schema = PREFERENCE_SCHEMA

    def __init__(
        self,
        run: str | Path,
        *,
        client: Any,
        m: int = 5,
        window: int = 200,
        max_tokens: int = 200,
        temperature: float = 0.0,
        mode: str = "auto",
        encoder: Any = None,
        dataset: Any = None,
    ) -> None:
        from whyrec.explain.preferences import PreferenceExtractor

        self.run = str(run)
        self.dataset = dataset if dataset is not None else _dataset_for(run)
        # the client decides the prompt mode and names the model; it is never called here
        self.extractor = PreferenceExtractor(
            client, m=m, window=window, max_tokens=max_tokens, temperature=temperature, mode=mode
        )
        self.model_name = self.extractor.model_name
        self._encoder = encoder
        ds = self.dataset
        self.user_ids = ds.users["user_id"].astype(str).tolist()
        field = self.extractor.text_field
        self._fields = (
            ds.items[field].fillna("").astype(str).tolist()
            if field and field in ds.items.columns
            else [""] * ds.n_items
        )
        self._seqs = ds.user_sequences(("train",))

    def identity(self) -> dict[str, Any]:
        ex = self.extractor
        return {
            "kind": self.kind,
            "dataset": self.dataset.name,
            "dataset_fingerprint": self.dataset.fingerprint(),
            "model": self.model_name,
            "mode": ex.mode,
            "prompt_version": ex.prompt_version,
            "m": ex.m,
            "window": ex.window,
            "max_tokens": ex.max_tokens,
            "temperature": ex.temperature,
        }

    def users(self, selection: str) -> list[int]:
        return select_users(selection, self.user_ids)

    def keys_of(self, user: int) -> list[str]:
        return [self.user_ids[user]]

    def prepare(self, users: Sequence[int], keys: set[str] | None = None) -> Iterator[WorkItem]:
        """One item per user (``keys`` limits which)."""
        titles_all = self.dataset.titles
        ex = self.extractor
        for u in users:
            uid = self.user_ids[u]
            if keys is not None and uid not in keys:
                continue
            seq = self._seqs[u][-ex.window :]
            titles = [titles_all[i] for i in seq]
            fields = [self._fields[i] for i in seq]
            requests = []
            for req in ex.requests(titles, fields):
                req = {k: v for k, v in req.items() if k != "tag"}
                req["schema"] = {"name": "preferences", "m": ex.m} if req["schema"] else None
                requests.append(req)
            yield WorkItem(uid, uid, requests, context=(u, titles, fields))

    def finish(self, item: WorkItem, recs: list[dict[str, Any]]) -> dict[str, Any] | Failure:
        from whyrec.explain.preferences import PreferenceExtractor

        blocking = _blocking(recs)
        if blocking is not None:
            return _failure(item, blocking)
        u, titles, fields = item.context
        ex = self.extractor
        finisher = PreferenceExtractor(
            _ReplayClient(self.model_name, item, recs),
            m=ex.m, window=ex.window, max_tokens=ex.max_tokens, temperature=ex.temperature,
            text_field=ex.text_field, mode=ex.mode,
        )  # fmt: skip
        vectors = _LazyVectors(lambda: self._title_vectors(titles)) if titles else None
        prefs = finisher.extract_history(titles, fields, user=item.user_id, title_vectors=vectors)
        return {
            "key": item.key,
            "user_id": item.user_id,
            "user_idx": int(u),
            "status": "ok" if all(r.get("ok") for r in recs) else "fallback",
            "preferences": list(prefs.preferences),
            "source": prefs.source,
            "fallback_count": int(prefs.fallback_count),
            "problems": [str(p) for p in prefs.problems],
            "raw_reply": prefs.raw_reply,
            "model": prefs.model,
            "prompt_version": prefs.prompt_version,
            "history_hash": prefs.history_hash,
            "prompt_tokens": sum(int(r.get("prompt_tokens", 0) or 0) for r in recs),
            "completion_tokens": sum(int(r.get("completion_tokens", 0) or 0) for r in recs),
        }

    def _title_vectors(self, titles: list[str]) -> Any:
        """Vectors of one history's titles (for clustered fallback sentences); cached on
        disk by the encoder, so a resumed job reuses exactly the same vectors."""
        if self._encoder is None:
            from whyrec.embed import get_encoder

            self._encoder = get_encoder(None)
        return self._encoder.encode(titles, progress=False)


# ---------------------------------------------------------------------- explanations

#: Explanation fields stored as JSON text (nested evidence); the rest are plain columns.
NESTED_FIELDS = ("preference_effects", "history_effects", "steps", "cited", "removed_sentences")

EXPLANATION_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("user_id", pa.string()),
        ("user_idx", pa.int32()),
        ("position", pa.int32()),
        ("status", pa.string()),
        # the explanation record (whyrec.explain.Explanation.to_dict()), nested parts as JSON
        ("item", pa.int32()),
        ("item_id", pa.string()),
        ("title", pa.string()),
        ("rank", pa.int32()),
        ("score", pa.float64()),
        ("preferences", pa.list_(pa.string())),
        ("preference_source", pa.string()),
        ("weights", pa.list_(pa.float64())),
        ("preference_effects", pa.string()),
        ("history_effects", pa.string()),
        ("reason", pa.string()),
        ("reason_source", pa.string()),
        ("steps", pa.string()),
        ("model", pa.string()),
        ("prompt_version", pa.string()),
        ("problems", pa.list_(pa.string())),
        ("user", pa.string()),
        ("item_facts", pa.list_(pa.string())),
        ("cited", pa.string()),
        ("removed_sentences", pa.string()),
        ("evidence_version", pa.string()),
        ("llm_outage", pa.bool_()),
        ("completed_sentences", pa.list_(pa.string())),
        ("prompt_tokens", pa.int32()),
        ("completion_tokens", pa.int32()),
    ]
)


def explanation_row(exp: Any) -> dict[str, Any]:
    """An :class:`~whyrec.explain.Explanation` as the columns of :data:`EXPLANATION_SCHEMA`
    (without the job's own key/user/status/token columns)."""
    rec = exp.to_dict()
    for name in NESTED_FIELDS:
        rec[name] = json.dumps(rec[name], ensure_ascii=False) if rec[name] is not None else None
    return rec


def read_explanations(root: str | Path) -> list[Any]:
    """The explanations a batch job wrote, as :class:`~whyrec.explain.Explanation` objects."""
    from whyrec.batch.store import read_output
    from whyrec.explain.record import Explanation

    out = []
    for row in read_output(root).to_dict("records"):
        for name in NESTED_FIELDS:
            row[name] = json.loads(row[name]) if row.get(name) else None
        for name in ("preferences", "weights", "problems", "item_facts", "completed_sentences"):
            row[name] = list(row[name]) if row.get(name) is not None else []
        row["removed_sentences"] = row["removed_sentences"] or []
        row["cited"] = row["cited"] or {}
        out.append(Explanation.from_dict(row))
    return out


class ExplanationJob:
    """Explanations of each user's top-k recommendations, through the one explanation
    pipeline (:class:`~whyrec.explain.explainer.ExplanationPipeline`): ``prepare`` plans
    (evidence, request, template), the LLM stage answers the request anywhere, ``finish``
    is the pipeline's own pure ``finish`` — so a row equals ``whyrec explain``'s result."""

    kind = "explanations"
    schema = EXPLANATION_SCHEMA

    def __init__(
        self,
        run: str | Path,
        *,
        client: Any,
        k: int = 1,
        max_tokens: int | None = None,
        temperature: float = 0.0,
        history_window: int = 15,
        dataset: Any = None,
    ) -> None:
        from whyrec.explain.explainer import ExplanationPipeline
        from whyrec.models import load_model

        if k < 1:
            raise ConfigError(f"-k must be at least 1, got {k}")
        self.run = str(run)
        self.model = load_model(run, dataset)
        if not self.model.has_attribution:
            raise ConfigError(
                f"{run} holds a {self.model.name!r} model whose scores ignore the history: "
                "there is no item-specific evidence to explain"
            )
        self.model_name = str(getattr(client, "model", "unknown"))
        self.k = k
        self.pipeline = ExplanationPipeline.from_run(
            self.model, client, dataset=dataset, history_window=history_window,
            temperature=temperature,
        )  # fmt: skip
        if max_tokens is not None:  # default: the pipeline's own budget
            self.pipeline.max_tokens = max_tokens
        self.user_ids = [str(u) for u in self.model.user_ids]

    def identity(self) -> dict[str, Any]:
        import hashlib

        from whyrec.explain.evidence import EVIDENCE_VERSION
        from whyrec.explain.prompts import EXPLANATION_VERSION
        from whyrec.models.outside import is_import_path

        if is_import_path(self.run):
            # no manifest: the model's own scores for the first users stand for it, so a
            # retrained model behind the same import path starts a new job
            probe = self.model.score_batch(self.model.histories[:8])
            manifest = np.ascontiguousarray(probe, dtype=np.float32).tobytes()
        else:
            manifest = (Path(self.run) / "manifest.json").read_bytes()
        p = self.pipeline
        return {
            "kind": self.kind,
            "recommender_manifest_sha256": hashlib.sha256(manifest).hexdigest()[:16],
            "recommender": self.model.name,
            "model": self.model_name,
            "prompt_version": EXPLANATION_VERSION,
            "evidence_version": EVIDENCE_VERSION,
            "mode": p.mode,
            "item_texts": p.item_texts is not None,
            "k": self.k,
            "history_window": p.history_window,
            "max_tokens": p.max_tokens,
            "temperature": p.temperature,
        }

    def users(self, selection: str) -> list[int]:
        return select_users(selection, self.user_ids)

    def keys_of(self, user: int) -> list[str]:
        return [f"{self.user_ids[user]}#{p}" for p in range(1, self.k + 1)]

    def prepare(self, users: Sequence[int], keys: set[str] | None = None) -> Iterator[WorkItem]:
        """Recommend, compute the evidence and plan the requests; one item per (user, rank)."""
        p = self.pipeline
        for u in users:
            wanted = self.keys_of(u)
            if keys is not None and not any(key in keys for key in wanted):
                continue
            subject = p.subject(u)
            for pos, item in enumerate(p.top_items(subject, self.k), start=1):
                key = f"{self.user_ids[u]}#{pos}"
                if keys is not None and key not in keys:
                    continue
                plan = p.plan(subject, int(item))
                # no request (nothing to cite, or no client): the row is the template
                yield WorkItem(key, self.user_ids[u], plan.requests_json(), context=(u, pos, plan))

    def finish(self, item: WorkItem, recs: list[dict[str, Any]]) -> dict[str, Any] | Failure:
        blocking = _blocking(recs)
        if blocking is not None:
            return _failure(item, blocking)
        u, pos, plan = item.context
        outcomes = [outcome_from_record(q, r) for q, r in zip(item.requests, recs, strict=True)]
        exp = self.pipeline.finish(plan, outcomes)
        return {
            "key": item.key,
            "user_id": item.user_id,
            "user_idx": int(u),
            "position": int(pos),
            "status": "ok" if _written_by_llm(exp.reason_source) else "fallback",
            **explanation_row(exp),
            "model": str(exp.model or self.model_name),
            "prompt_tokens": sum(int(r.get("prompt_tokens", 0) or 0) for r in recs),
            "completion_tokens": sum(int(r.get("completion_tokens", 0) or 0) for r in recs),
        }


JOB_KINDS = {"preferences": PreferenceJob, "explanations": ExplanationJob}
