"""``LLMClient``: the one object the rest of whyrec uses to talk to a language model.

Per call it (1) looks the request up in the reply cache, (2) asks the backend, retrying
transient failures with exponential backoff and jitter, (3) with a schema, parses and
validates the reply and re-asks with the validation problems fed back, a bounded number
of times, (4) stores validated replies, and requests whose replies never validated (the
negative cache: a re-run raises the same :class:`LLMOutputError` without asking again,
unless ``retry_failed``), and (5) books tokens, latency and cost per stage. Outages
(unreachable endpoint, refused key, timeouts, 5xx after the retries) are never cached.
"""

from __future__ import annotations

import dataclasses
import json
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from whyrec.llm.accounting import Accounting
from whyrec.llm.backends import Backend, Decoding, Message, make_backend
from whyrec.llm.backends.base import RawReply
from whyrec.llm.cache import ReplyCache, cache_key, is_failure
from whyrec.llm.errors import (
    LLMError,
    LLMOutputError,
    LLMTransientError,
    LLMUnavailableError,
    redact,
    redact_tree,
)
from whyrec.llm.parse import Schema, parse_reply, partial_reask_message, reask_message
from whyrec.llm.settings import LLMSettings

SchemaLike = dict[str, Any] | type[BaseModel] | Schema
MessagesLike = str | Sequence[Mapping[str, str]]
_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class LLMRequest:
    """One call for :meth:`LLMClient.complete_many`; ``None`` fields take the settings' value.

    ``tag`` is the caller's own identifier (a user id, say), handed back on the outcome.
    """

    messages: MessagesLike
    schema: SchemaLike | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    seed: int | None = None
    stage: str = "default"
    prompt_version: str = "0"
    use_cache: bool | None = None
    tag: Any = None
    retry_failed: bool | None = None

    def send(self, client: CompletionClient) -> LLMResult:
        """Ask ``client`` (an :class:`LLMClient` or a wrapper of one) for this request: the
        one place a request's fields become the arguments of ``complete``. The optional
        fields left at ``None`` (``use_cache``, ``tag``, ``retry_failed``) are not passed,
        so the client's own defaults and settings decide them."""
        optional = {"use_cache": self.use_cache, "tag": self.tag, "retry_failed": self.retry_failed}
        return client.complete(
            self.messages,
            schema=self.schema,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            seed=self.seed,
            stage=self.stage,
            prompt_version=self.prompt_version,
            **{k: v for k, v in optional.items() if v is not None},
        )


class CompletionClient(Protocol):
    """What the layers above ask of the LLM: :class:`LLMClient`, or anything that wraps
    one (the service's recording client, a batch job's replayed outcomes).
    :class:`whyrec.explain.explainer.ExplanationPipeline` is annotated with it."""

    @property
    def model(self) -> str:
        """The model that answers (part of every record and cache key)."""
        ...

    def complete(
        self,
        messages: MessagesLike,
        *,
        schema: SchemaLike | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        stage: str = "default",
        prompt_version: str = "0",
        use_cache: bool | None = None,
        tag: Any = None,
        retry_failed: bool | None = None,
    ) -> LLMResult:
        """One call; see :meth:`LLMClient.complete`."""
        ...


@dataclass(frozen=True)
class LLMResult:
    """A usable reply.

    ``parsed`` is the validated object when a schema was given (a pydantic instance for
    a model class, else the JSON value). Token counts describe this reply as the model
    produced it, also on a cache hit; ``attempts`` counts backend calls made now
    (0 on a cache hit), ``latency_s`` the wall time of this call.
    """

    text: str
    parsed: Any
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    model: str
    backend: str
    cached: bool
    attempts: int
    stage: str
    finish_reason: str | None = None
    tag: Any = None
    ok: bool = field(default=True, init=False)


@dataclass(frozen=True)
class LLMFailure:
    """A call in a batch that produced no usable reply; ``error`` says why."""

    error: Exception
    stage: str
    tag: Any = None
    ok: bool = field(default=False, init=False)

    @property
    def message(self) -> str:
        """The error text, for logs and reports."""
        return f"{type(self.error).__name__}: {self.error}"


LLMOutcome = LLMResult | LLMFailure


def normalize_messages(messages: MessagesLike) -> list[Message]:
    """A plain string becomes one user turn; anything else must be role/content dicts."""
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    out: list[Message] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping):
            raise ValueError(
                f"messages[{i}]: expected a dict with 'role' and 'content', got "
                f"{type(msg).__name__}"
            )
        role, content = msg.get("role"), msg.get("content")
        if role not in _ROLES:
            raise ValueError(f"messages[{i}]: role {role!r} is not one of {', '.join(_ROLES)}")
        if not isinstance(content, str):
            raise ValueError(
                f"messages[{i}]: content must be a string, got {type(content).__name__}"
            )
        out.append({"role": role, "content": content})
    if not out:
        raise ValueError("messages is empty: expected at least one message")
    return out


class LLMClient:
    """Chat completions with structured output, retries, a reply cache and accounting.

    >>> client = LLMClient.from_settings()                       # doctest: +SKIP
    >>> client.complete("Name one film.", max_tokens=16).text    # doctest: +SKIP
    """

    def __init__(
        self,
        settings: LLMSettings | None = None,
        *,
        backend: Backend | None = None,
        cache: ReplyCache | bool | None = None,
    ) -> None:
        self.settings = settings if settings is not None else LLMSettings.load()
        self.backend: Backend = backend if backend is not None else make_backend(self.settings)
        if isinstance(cache, ReplyCache):
            self.cache: ReplyCache | None = cache
        elif cache is False or (cache is None and not self.settings.cache):
            self.cache = None
        else:
            self.cache = ReplyCache(self.settings.resolved_cache_path())
        paid = self.backend.costs_money
        self.usage = Accounting(
            price=self.settings.price_for(self.backend.model) if paid else None, free=not paid
        )
        self._sleep: Callable[[float], None] = time.sleep
        self._rng = random.Random()
        self._rng_lock = threading.Lock()

    @classmethod
    def from_settings(cls, config_file: str | Path | None = None, **overrides: Any) -> LLMClient:
        """A client from the config file, ``WHYREC_LLM_*`` variables and ``overrides``."""
        return cls(LLMSettings.load(config_file, **overrides))

    @property
    def model(self) -> str:
        """The model name requests go to."""
        return self.backend.model

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Free the model / connections and the cache handles."""
        self.backend.close()
        if self.cache is not None:
            self.cache.close()

    # ------------------------------------------------------------------ single call

    def complete(
        self,
        messages: MessagesLike,
        *,
        schema: SchemaLike | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        stage: str = "default",
        prompt_version: str = "0",
        use_cache: bool | None = None,
        tag: Any = None,
        retry_failed: bool | None = None,
    ) -> LLMResult:
        """Ask the model; with ``schema``, return a reply that parses and validates.

        ``prompt_version`` should change whenever the caller's prompt template changes,
        so old cached replies stop matching. Raises :class:`LLMOutputError` when no
        reply validates after the re-asks, :class:`LLMUnavailableError` after the last
        transient failure and :class:`LLMRequestError` when the backend refuses the call.

        With the cache on, a request whose replies never validated before raises the
        stored :class:`LLMOutputError` again (``cached=True``) without asking the model;
        ``retry_failed=True`` (default: the ``retry_failed`` setting) asks again.
        """
        start = time.perf_counter()
        msgs = normalize_messages(messages)
        s = self.settings
        decoding = Decoding(
            max_tokens=s.max_tokens if max_tokens is None else max_tokens,
            temperature=s.temperature if temperature is None else temperature,
            seed=s.seed if seed is None else seed,
            schema=Schema.of(schema) if schema is not None else None,
        )
        caching = self.cache is not None and (use_cache if use_cache is not None else True)
        key = ""
        if caching:
            key = self._request_key(msgs, decoding, prompt_version)
            refresh = self.settings.retry_failed if retry_failed is None else retry_failed
            hit = self._from_cache(key, decoding.schema, stage, start, tag, failures=not refresh)
            if hit is not None:
                return hit

        spent = {"prompt": 0, "completion": 0, "attempts": 0}
        try:
            result = self._ask(msgs, decoding, stage, spent, start, tag)
        except Exception as exc:
            if caching and isinstance(exc, LLMOutputError):
                self._store_failure(key, exc, stage)
            self._book_asked(stage, spent, failed=True, latency_s=time.perf_counter() - start)
            raise
        if caching:
            self._store_result(key, result, decoding.schema, stage)
        self._book_asked(stage, spent, failed=False, latency_s=result.latency_s)
        return result

    def _book_asked(
        self, stage: str, spent: dict[str, int], *, failed: bool, latency_s: float
    ) -> None:
        """Book a call that asked the backend: its attempts and tokens as ``spent``."""
        self.usage.record(
            stage,
            cached=False,
            failed=failed,
            attempts=spent["attempts"],
            prompt_tokens=spent["prompt"],
            completion_tokens=spent["completion"],
            latency_s=latency_s,
        )

    def _book_cached(self, stage: str, *, failed: bool, latency_s: float) -> None:
        """Book a call the cache answered: no attempts, no tokens spent now."""
        self.usage.record(
            stage,
            cached=True,
            failed=failed,
            attempts=0,
            prompt_tokens=0,
            completion_tokens=0,
            latency_s=latency_s,
        )

    def _store_failure(self, key: str, exc: LLMOutputError, stage: str) -> None:
        """Remember a request whose replies never validated (a negative cache entry)."""
        raw = exc.raw
        try:
            json.dumps(raw)
        except (TypeError, ValueError):
            raw = None
        self.cache.put(  # type: ignore[union-attr]
            key,
            {  # "failed" first: ReplyCache counts negative entries by this prefix
                "failed": True,
                "message": str(exc),
                "text": exc.text,
                "problems": list(exc.problems),
                "attempts": exc.attempts,
                "raw": raw,
                "model": self.backend.model,
            },
            backend=self.backend.name,
            model=self.backend.model,
            stage=stage,
        )

    def _from_cache(
        self,
        key: str,
        sch: Schema | None,
        stage: str,
        start: float,
        tag: Any,
        *,
        failures: bool = True,
    ) -> LLMResult | None:
        payload = self.cache.get(key, failures=failures) if self.cache is not None else None
        if payload is None:
            return None
        payload = redact_tree(payload)  # entries written before replies were redacted
        if is_failure(payload):
            self._book_cached(stage, failed=True, latency_s=time.perf_counter() - start)
            raise LLMOutputError(
                f"{payload.get('message') or 'no reply matched the schema'} [remembered "
                "from an earlier run; set retry_failed (WHYREC_LLM_RETRY_FAILED=1) to ask again]",
                text=str(payload.get("text") or ""),
                problems=[str(p) for p in payload.get("problems") or []],
                attempts=int(payload.get("attempts") or 0),
                raw=payload.get("raw"),
                cached=True,
            )
        parsed = None
        if sch is not None:
            parsed, problems = sch.validate(payload.get("json"))
            if problems:
                return None  # schema semantics changed under the same JSON: ask again
        latency = time.perf_counter() - start
        self._book_cached(stage, failed=False, latency_s=latency)
        return LLMResult(
            text=payload["text"],
            parsed=parsed,
            prompt_tokens=int(payload.get("prompt_tokens", 0)),
            completion_tokens=int(payload.get("completion_tokens", 0)),
            latency_s=latency,
            model=str(payload.get("model") or self.backend.model),
            backend=self.backend.name,
            cached=True,
            attempts=0,
            stage=stage,
            finish_reason=payload.get("finish_reason"),
            tag=tag,
        )

    def _request_key(self, msgs: list[Message], decoding: Decoding, prompt_version: str) -> str:
        """The cache key of one request: everything that decides the reply."""
        sch = decoding.schema
        return cache_key(
            {
                "backend": self.backend.name,
                "model": self.backend.model,
                "engine": self.backend.identity(),
                "prompt_version": prompt_version,
                "messages": msgs,
                # as text: property order steers generation, so it is part of the key
                "schema": json.dumps(sch.json_schema) if sch else None,
                "max_tokens": decoding.max_tokens,
                "temperature": decoding.temperature,
                "seed": decoding.seed,
            }
        )

    def _store_result(self, key: str, result: LLMResult, sch: Schema | None, stage: str) -> None:
        """Cache a validated reply under its request's key."""
        self.cache.put(  # type: ignore[union-attr]
            key,
            {
                "text": result.text,
                "json": sch.to_plain(result.parsed) if sch else None,
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
                "finish_reason": result.finish_reason,
                "model": result.model,
            },
            backend=self.backend.name,
            model=self.backend.model,
            stage=stage,
        )

    def _ask(
        self,
        msgs: list[Message],
        decoding: Decoding,
        stage: str,
        spent: dict[str, int],
        start: float,
        tag: Any,
    ) -> LLMResult:
        """Generate, validate, re-ask; ``spent`` accumulates what every attempt cost.

        When every problem of a reply that parsed as an object lies inside some of its
        top-level properties, and ``partial_reasks`` is on, the re-ask shows the model its
        reply without those properties, asks for only them (constrained by a schema of
        just them) and merges the answer into the reply; a small model's loop in one long
        field then costs a short answer, not a whole new reply. Otherwise the whole reply
        is asked for again.
        """
        sch = decoding.schema
        conversation = list(msgs)
        asks = 1 + (self.settings.max_reasks if sch is not None else 0)
        problems: list[str] = []
        text = ""
        raw_json: Any = None
        kept: dict[str, Any] | None = None  # the reply a partial re-ask completes
        kept_tokens = 0
        ask_schema = sch
        for ask in range(asks):
            asked = dataclasses.replace(decoding, schema=ask_schema)
            reply = self._generate_with_retries(conversation, asked, spent)
            text = reply.text
            parsed = None
            completion_tokens = reply.completion_tokens
            if sch is not None:
                if kept is not None:  # a partial re-ask: ask_schema holds the failed fields
                    _, part, problems = parse_reply(text, ask_schema)  # type: ignore[arg-type]
                    if not problems:
                        raw_json = {**kept, **part}
                        text = json.dumps(raw_json, ensure_ascii=False)
                        completion_tokens += kept_tokens
                        parsed, problems = sch.validate(raw_json)
                else:
                    parsed, raw_json, problems = parse_reply(text, sch)
                if problems and reply.finish_reason == "length":
                    problems.append(
                        f"the reply was cut off at the {decoding.max_tokens}-token limit; "
                        "answer more briefly"
                    )
                if problems:
                    if ask + 1 < asks:
                        conversation, kept, kept_tokens, ask_schema = self._reask(
                            conversation, sch, reply, raw_json, problems, kept,
                            kept_tokens if kept is not None else completion_tokens,
                        )  # fmt: skip
                    continue
            return LLMResult(
                text=text,
                parsed=parsed,
                prompt_tokens=reply.prompt_tokens,
                completion_tokens=completion_tokens,
                latency_s=time.perf_counter() - start,
                model=reply.model,
                backend=self.backend.name,
                cached=False,
                attempts=spent["attempts"],
                stage=stage,
                finish_reason=reply.finish_reason,
                tag=tag,
            )
        raise LLMOutputError(
            f"stage {stage!r}: {self.backend.name} model {self.backend.model!r} gave no reply "
            f"matching the schema in {asks} tries; last problems: {'; '.join(problems)}",
            text=text,
            problems=problems,
            attempts=asks,
            raw=raw_json,
        )

    def _reask(
        self,
        conversation: list[Message],
        sch: Schema,
        reply: Any,
        raw_json: Any,
        problems: list[str],
        kept: dict[str, Any] | None,
        kept_tokens: int,
    ) -> tuple[list[Message], dict[str, Any] | None, int, Schema]:
        """The next ask after a reply with ``problems``: ``(conversation, kept reply, its
        completion tokens, schema to ask with)``. Only the failed fields are asked for
        when they are some of the reply's top-level properties (``partial_reasks``);
        otherwise the whole reply is asked for again."""
        fields = (
            sch.problem_fields(raw_json)
            if self.settings.partial_reasks and reply.finish_reason != "length"
            else None
        )
        props = sch.json_schema.get("properties") or {}
        shown = reply.text
        if fields and len(fields) < len(props):
            if kept is None:
                # the reply without the failed fields: a small model shown its
                # own loop at temperature 0 writes the same loop again
                shown = json.dumps(
                    {k: v for k, v in raw_json.items() if k not in fields},
                    ensure_ascii=False,
                )
            kept = raw_json
            ask_schema = sch.subschema(fields)
            follow_up = partial_reask_message(problems, fields, ask_schema)
        else:
            kept, ask_schema = None, sch
            follow_up = reask_message(problems, sch)
        conversation = [
            *conversation,
            {"role": "assistant", "content": shown},
            {"role": "user", "content": follow_up},
        ]
        return conversation, kept, kept_tokens, ask_schema

    def _generate_with_retries(
        self,
        conversation: list[Message],
        decoding: Decoding,
        spent: dict[str, int],
    ) -> Any:
        tries = 1 + self.settings.max_retries
        last: LLMTransientError | None = None
        for attempt in range(tries):
            spent["attempts"] += 1
            try:
                reply = self.backend.generate(conversation, decoding)
            except LLMTransientError as exc:
                last = exc
                if attempt + 1 < tries:
                    self._sleep(self.backoff_delay(attempt, exc.retry_after))
                continue
            spent["prompt"] += reply.prompt_tokens
            spent["completion"] += reply.completion_tokens
            return _redacted(reply)
        assert last is not None
        raise LLMUnavailableError(
            f"{self.backend.name} model {self.backend.model!r}: gave up after {tries} "
            f"attempt(s); last error: {last}",
            attempts=tries,
            last_error=last,
        )

    def backoff_delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Delay before retry ``attempt + 1``: exponential, capped, with jitter in [d/2, d].

        A server's ``Retry-After`` is honoured up to ``backoff_max``.
        """
        s = self.settings
        delay = min(s.backoff_max, s.backoff_base * (2**attempt))
        with self._rng_lock:
            delay *= 0.5 + 0.5 * self._rng.random()
        if retry_after is not None:
            delay = max(delay, min(retry_after, s.backoff_max))
        return delay

    # ------------------------------------------------------------------ batches

    def complete_many(
        self,
        requests: Iterable[LLMRequest | Mapping[str, Any] | str],
        *,
        concurrency: int | None = None,
        progress: bool = False,
    ) -> list[LLMOutcome]:
        """Run many calls with at most ``concurrency`` in flight; results keep input order.

        A call that fails becomes an :class:`LLMFailure` in its slot; the others go on.
        Requests may be :class:`LLMRequest` objects, dicts of its fields, or strings.
        """
        reqs: list[LLMRequest | LLMFailure] = []
        for item in requests:
            try:
                reqs.append(_as_request(item))
            except (TypeError, ValueError) as exc:
                reqs.append(LLMFailure(error=exc, stage="default"))
        # batched local decoding needs at least n_parallel calls in flight per worker
        default = max(self.settings.concurrency, self.settings.calls_to_fill)
        workers = max(1, concurrency or default)
        # a backend that serialises calls (one in-process model) gains nothing from
        # threads, and in-order calls let it reuse the evaluated prompt prefix
        workers = min(workers, self.backend.max_concurrency or workers)
        outcomes: list[LLMOutcome | None] = [None] * len(reqs)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(reqs), desc="llm", unit="call")

        def run(i: int) -> None:
            req = reqs[i]
            if isinstance(req, LLMFailure):
                outcomes[i] = req
                if bar is not None:
                    bar.update(1)
                return
            try:
                outcomes[i] = req.send(self)
            except Exception as exc:  # one bad item must not sink the batch
                outcomes[i] = LLMFailure(error=exc, stage=req.stage, tag=req.tag)
            if bar is not None:
                bar.update(1)

        try:
            if workers == 1 or len(reqs) <= 1:
                for i in range(len(reqs)):
                    run(i)
            else:
                with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="whyrec-llm") as ex:
                    list(ex.map(run, range(len(reqs))))
        finally:
            if bar is not None:
                bar.close()
        return [o for o in outcomes if o is not None]

    # ------------------------------------------------------------------ info

    def info(self) -> dict[str, Any]:
        """Active backend, model, where things live and cache counters (no secrets)."""
        out: dict[str, Any] = {
            "backend": self.backend.name,
            "model": self.backend.model,
            **self.backend.describe(),
            "config_file": str(self.settings.config_file) if self.settings.config_file else None,
            "cache": "off",
        }
        if self.cache is not None:
            st = self.cache.stats()
            out.update(
                cache="on",
                cache_path=str(st.path),
                cache_entries=st.entries,
                cache_size_mb=round(st.size_bytes / 1e6, 3),
                cache_hits=st.hits,
                cache_misses=st.misses,
                cache_failed_entries=st.failed_entries,
                cache_negative_hits=st.negative_hits,
                retry_failed=self.settings.retry_failed,
            )
        paid = self.backend.costs_money
        price = self.settings.price_for(self.model) if paid else None
        out["price_per_1m_tokens"] = (
            ("free (local)" if self.backend.is_local else "free")
            if not paid
            else (f"${price.input:g} in / ${price.output:g} out" if price else "unknown")
        )
        return out


def _redacted(reply: RawReply) -> RawReply:
    """A backend's reply with every secret this process holds redacted (an endpoint may
    echo the key in a reply, not only in an error body): everything after this point, the
    parsed JSON, the cache, the stores and the terminal, only sees the redacted text."""
    text, model = redact(reply.text), redact(reply.model)
    finish = redact(reply.finish_reason) if reply.finish_reason is not None else None
    if (text, model, finish) == (reply.text, reply.model, reply.finish_reason):
        return reply
    return dataclasses.replace(reply, text=text, model=model, finish_reason=finish)


def _as_request(item: LLMRequest | Mapping[str, Any] | str) -> LLMRequest:
    if isinstance(item, LLMRequest):
        return item
    if isinstance(item, str):
        return LLMRequest(messages=item)
    if isinstance(item, Mapping):
        try:
            return LLMRequest(**item)
        except TypeError as exc:
            raise ValueError(f"bad request dict {sorted(item)}: {exc}") from exc
    raise TypeError(f"expected LLMRequest, dict or str, got {type(item).__name__}")


__all__ = [
    "LLMClient",
    "LLMError",
    "LLMFailure",
    "LLMOutcome",
    "LLMRequest",
    "LLMResult",
    "normalize_messages",
]
