"""Batched local decoding: several chat completions at once on one llama.cpp context.

The sequential :class:`~whyrec.llm.backends.local.LocalBackend` decodes one sequence at
a time, so every generated token pays a full pass over the weights for a single row.
:class:`BatchedLocalBackend` keeps up to ``n_parallel`` sequences in flight on a second
llama.cpp context that shares the already loaded weights: each ``llama_decode`` call
carries the next token of every generating sequence plus prompt tokens of newly admitted
ones (continuous batching), each sequence with its own KV stream, sampler chain and JSON
grammar.

Identical outputs to the sequential backend are a design goal, not a hope:

* the prompt, stop strings and sampling parameters are taken from llama-cpp-python's own
  chat handler (``create_chat_completion`` runs up to the point where it would generate,
  and its arguments are captured), so every chat template behaves exactly as before —
  with the message contents protected the same way (special-token strings in them
  tokenize as plain text, :class:`~whyrec.llm.backends.local.SpecialTokenGuard`);
* each sequence gets the sampler chain ``Llama`` builds (penalties, grammar, greedy at
  temperature 0; the full top-k/p chain with the request's seed otherwise);
* the KV cache is not unified: each slot is its own stream laid out like the sequential
  context's single stream (a slot reuses its longest cached prefix, as ``Llama`` does),
  so attention over a sequence sees the same cells in the same order;
* the stop, length and UTF-8 rules of ``Llama._create_completion`` are replicated.

Requests the batched path cannot reproduce exactly (string prompts from exotic chat
handlers, logits processors, mirostat) go to the sequential backend instead.

Callers get batching by calling :meth:`generate` from several threads at once — which
:meth:`whyrec.llm.LLMClient.complete_many` does with ``concurrency`` ≥ ``n_parallel``.
"""

from __future__ import annotations

import ctypes
import random
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from whyrec.llm.backends.base import Decoding, Message, RawReply
from whyrec.llm.backends.local import LocalBackend, capture_completion
from whyrec.llm.backends.sampling import GreedyFirst
from whyrec.llm.errors import LLMConfigError, LLMRequestError

if TYPE_CHECKING:
    from llama_cpp import Llama

    from whyrec.llm.settings import LLMSettings

_PIECE_BUF = 32  # llama-cpp-python's own detokenize buffer size
_MIN_SHARED = 32  # copy another slot's stream when it saves at least this many tokens


class _Unsupported(Exception):
    """The request needs a feature only the sequential path reproduces exactly."""


@dataclass
class _Plan:
    """Everything ``Llama._create_completion`` would use to generate one reply."""

    prompt: list[int]
    max_tokens: int
    stop: list[bytes]
    stopping_criteria: Any
    grammar: Any
    temperature: float
    top_k: int
    top_p: float
    min_p: float
    typical_p: float
    repeat_penalty: float
    frequency_penalty: float
    presence_penalty: float
    seed: int


@dataclass(eq=False)
class _Seq:
    """One request in flight on a slot."""

    plan: _Plan
    future: Future
    slot: int = -1
    feed: list[int] = field(default_factory=list)  # tokens still to evaluate
    n_past: int = 0  # tokens of this sequence already in its KV stream
    chain: Any = None  # llama_sampler chain
    grammar_smpl: Any = None  # the chain's grammar sampler (owned by the chain)
    greedy: bool = False  # temperature 0 and neutral penalties: argmax fast path allowed
    completion: list[int] = field(default_factory=list)
    pieces: list[bytes] = field(default_factory=list)
    fed: list[int] = field(default_factory=list)  # every token evaluated so far
    multibyte_fix: int = 0
    out_index: int = -1  # row of this sequence's logits in the current batch
    started: float = field(default_factory=time.perf_counter)


class BatchedEngine:
    """Continuous batching over ``n_parallel`` KV streams of one llama.cpp context.

    One background thread owns the context; :meth:`submit` may be called from any thread.
    """

    def __init__(
        self,
        llama: Llama,
        *,
        n_parallel: int,
        n_ctx_per_seq: int,
        n_batch: int,
        model_name: str,
    ) -> None:
        import llama_cpp

        self._lc = llama_cpp
        self.llama = llama
        self.model_name = model_name
        self.n_parallel = n_parallel
        self.n_ctx = n_ctx_per_seq  # per sequence, like the sequential context's n_ctx
        self.n_batch = n_batch
        params = llama_cpp.llama_context_params()
        ctypes.memmove(
            ctypes.byref(params), ctypes.byref(llama.context_params), ctypes.sizeof(params)
        )
        params.n_ctx = n_ctx_per_seq * n_parallel
        params.n_seq_max = n_parallel
        params.kv_unified = False  # one stream per slot: the sequential cell layout
        # a decode call carries up to n_batch prompt tokens or one token per slot; the
        # micro-batch size stays the sequential context's, so prompts split the same way
        params.n_batch = max(n_batch, n_parallel)
        params.n_ubatch = min(n_batch, int(llama.context_params.n_ubatch))
        self._ctx = llama_cpp.llama_init_from_model(llama.model, params)
        if not self._ctx:
            raise LLMConfigError(
                f"llama.cpp could not create a context for {n_parallel} parallel sequences "
                f"of {n_ctx_per_seq} tokens; lower n_parallel or n_ctx"
            )
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(max(n_batch, n_parallel), 0, 1)
        self._vocab = llama_cpp.llama_model_get_vocab(llama.model)
        self._n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self._bos = int(llama_cpp.llama_vocab_bos(self._vocab))
        self._piece_cache: dict[int, bytes] = {}
        self._piece_buf = (ctypes.c_char * _PIECE_BUF)()
        self._empty_scores = np.empty(0, dtype=np.single)
        self._greedy = GreedyFirst(llama_cpp, self._n_vocab)
        self._slots: list[_Seq | None] = [None] * n_parallel
        self._cached: list[list[int]] = [[] for _ in range(n_parallel)]  # tokens in each stream
        self._queue: deque[_Seq] = deque()
        self._cond = threading.Condition()
        self._closed = False
        # counters for benchmarks and describe()
        self.steps = 0
        self.tokens_decoded = 0
        self.max_active = 0
        self.prefix_copies = 0
        self.prompt_tokens = 0  # prompt tokens evaluated (reused prefixes not counted)
        self.prompt_seconds = 0.0  # wall time of prompt decode calls
        self.generated_tokens = 0  # tokens decoded in generation steps
        self.generate_seconds = 0.0  # wall time of generation decode calls (sampling included)
        self._thread = threading.Thread(target=self._loop, name="whyrec-batched", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public

    def submit(self, plan: _Plan) -> Future:
        """Queue one generation; the future resolves to ``(text, n_completion, finish)``."""
        fut: Future = Future()
        if len(plan.prompt) >= self.n_ctx:
            fut.set_exception(
                ValueError(
                    f"Requested tokens ({len(plan.prompt)}) exceed context window of {self.n_ctx}"
                )
            )
            return fut
        with self._cond:
            if self._closed:
                raise LLMConfigError("the batched engine is closed")
            self._queue.append(_Seq(plan=plan, future=fut))
            self._cond.notify()
        return fut

    def close(self) -> None:
        """Stop the worker thread (failing queued requests) and free the context."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify()
        self._thread.join()
        lc = self._lc
        for seq in [*self._slots, *self._queue]:
            if seq is not None:
                self._free_chain(seq)
                if not seq.future.done():
                    seq.future.set_exception(LLMConfigError("the batched engine was closed"))
        self._queue.clear()
        lc.llama_batch_free(self._batch)
        lc.llama_free(self._ctx)

    # ------------------------------------------------------------------ worker

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._queue and not any(self._slots):
                    self._cond.wait()
                if self._closed:
                    return
                self._admit()
            try:
                self._step()
            except Exception as exc:  # keep serving: fail only the sequences in flight
                for i, seq in enumerate(self._slots):
                    if seq is not None:
                        self._finish_error(i, seq, exc)

    def _admit(self) -> None:
        """Move queued requests onto free slots, reusing the longest evaluated prefix.

        A prefix is reused from the slot's own stream (as ``Llama`` reuses its previous
        prompt) or copied from another slot's stream — the m per-aspect prompts of one
        user share their whole history, so one evaluation serves all of them. A request
        whose prefix another slot is still evaluating waits for it rather than
        evaluating it a second time.
        """
        deferred: list[_Seq] = []
        while self._queue:
            free = [i for i, s in enumerate(self._slots) if s is None]
            if not free:
                break
            seq = self._queue.popleft()
            prompt = seq.plan.prompt
            own, own_lcp = max(
                ((i, _common_prefix(self._cached[i], prompt)) for i in free), key=lambda t: t[1]
            )
            busy = [i for i, s in enumerate(self._slots) if s is not None]
            src, src_lcp = max(
                ((i, _common_prefix(self._cached[i], prompt)) for i in busy),
                key=lambda t: t[1],
                default=(-1, 0),
            )
            coming = max(
                (
                    _common_prefix(s.plan.prompt, prompt)
                    for s in self._slots
                    if s is not None and s.n_past < len(s.plan.prompt)
                ),
                default=0,
            )
            if coming > max(own_lcp, src_lcp) + _MIN_SHARED:
                deferred.append(seq)  # its prefix is being evaluated right now
                continue
            if src_lcp > own_lcp + _MIN_SHARED:
                best, lcp = own, src_lcp
                # cross-stream copies are whole streams; the tail is trimmed below
                self._lc.llama_memory_seq_cp(self._mem, src, best, -1, -1)
                self._cached[best] = list(self._cached[src])
                self.prefix_copies += 1
            else:
                best, lcp = own, own_lcp
            # like LocalBackend: evaluate at least two prompt tokens, so the prompt's last
            # logits always come from a many-row batch (see local._replay_at_least_two)
            reuse = max(0, min(lcp, len(prompt) - 2))
            if reuse > 0 and self._lc.llama_memory_seq_rm(self._mem, best, reuse, -1):
                self._cached[best] = self._cached[best][:reuse]
            else:
                reuse = 0
                self._lc.llama_memory_seq_rm(self._mem, best, -1, -1)
                self._cached[best] = []
            seq.slot = best
            seq.n_past = reuse
            seq.feed = list(prompt[reuse:])
            seq.fed = list(prompt[:reuse])
            try:
                seq.chain, seq.grammar_smpl = self._make_chain(seq.plan)
                p = seq.plan
                seq.greedy = p.temperature == 0.0 and (
                    p.repeat_penalty == 1.0
                    and p.frequency_penalty == 0.0
                    and p.presence_penalty == 0.0
                )
            except Exception as exc:
                seq.future.set_exception(exc)
                continue
            self._slots[best] = seq
        self._queue.extendleft(reversed(deferred))
        self.max_active = max(self.max_active, sum(s is not None for s in self._slots))

    def _step(self) -> None:
        """One prompt chunk, then one token for every generating sequence.

        Calls never mix phases, so each sequence is computed exactly as the sequential
        context computes it: all generating sequences advance together by one token
        (one row each, as in single-sequence decoding), and a prompt is evaluated alone,
        in the same ``n_batch`` chunks ``Llama.eval`` uses. (llama.cpp splits a mixed call
        into equal-length pieces per sequence, which would change how a prompt is chunked.)
        """
        active = [s for s in self._slots if s is not None]
        prefilling = sorted(
            (s for s in active if s.feed and s.n_past < len(s.plan.prompt)),
            key=lambda s: s.started,
        )
        if prefilling:
            seq = prefilling[0]
            t0 = time.perf_counter()
            chunk = seq.feed[: self.n_batch]
            self._decode([(seq, chunk)])
            self.prompt_tokens += len(chunk)
            self.prompt_seconds += time.perf_counter() - t0
        generating = [
            s
            for s in self._slots
            if s is not None and s.feed and s.n_past >= len(s.plan.prompt) and s not in prefilling
        ]
        if generating:
            t0 = time.perf_counter()
            self._decode([(s, s.feed) for s in generating])
            self.generated_tokens += len(generating)
            self.generate_seconds += time.perf_counter() - t0

    def _decode(self, parts: list[tuple[_Seq, list[int]]]) -> None:
        """Evaluate ``parts`` (sequence, tokens) in one call; sample where a prompt ends."""
        lc = self._lc
        batch = self._batch
        n = 0
        for seq, toks in parts:
            seq.out_index = -1
            last = len(toks) == len(seq.feed)
            for j, tok in enumerate(toks):
                batch.token[n] = tok
                batch.pos[n] = seq.n_past + j
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = seq.slot
                batch.logits[n] = 1 if (last and j == len(toks) - 1) else 0
                n += 1
            if last:
                seq.out_index = n - 1
            seq.n_past += len(toks)
            seq.fed.extend(toks)
            self._cached[seq.slot].extend(toks)
            seq.feed = seq.feed[len(toks) :]
        batch.n_tokens = n
        rc = lc.llama_decode(self._ctx, batch)
        self.steps += 1
        self.tokens_decoded += n
        if rc != 0:
            raise LLMRequestError(f"llama_decode failed with code {rc} on a batch of {n} tokens")
        for seq, _ in parts:
            if seq.out_index >= 0:
                self._on_token(seq, self._sample(seq))

    def _sample(self, seq: _Seq) -> int:
        """The chain's choice; at temperature 0 without the full-vocabulary grammar pass
        when possible (see :mod:`whyrec.llm.backends.sampling`)."""
        if seq.greedy:
            return self._greedy.sample(self._ctx, seq.out_index, seq.chain, seq.grammar_smpl)
        return int(self._lc.llama_sampler_sample(seq.chain, self._ctx, seq.out_index))

    # ------------------------------------------------------------- per sequence

    def _on_token(self, seq: _Seq, token: int) -> None:
        """Llama.generate + Llama._create_completion's loop body for one sampled token."""
        plan = seq.plan
        crit = plan.stopping_criteria
        if crit is not None and crit(np.asarray(seq.fed, dtype=np.intc), self._empty_scores):
            # generate() returns before yielding the token
            self._finish(seq, text=b"", finish="length")
            return
        if self._lc.llama_vocab_is_eog(self._vocab, token):
            self._finish(seq, text=self._all_text(seq), finish="stop")
            return
        seq.completion.append(token)
        seq.pieces.append(self._piece(token))
        all_text = self._all_text(seq)
        for k, char in enumerate(all_text[-3:]):
            k = 3 - k
            for num, pattern in ((2, 192), (3, 224), (4, 240)):
                if num > k and pattern & char == pattern:
                    seq.multibyte_fix = num - k
        if seq.multibyte_fix > 0:
            seq.multibyte_fix -= 1
            self._continue(seq, token)
            return
        hits = [s for s in plan.stop if s in all_text]
        if hits:
            self._finish(seq, text=all_text[: all_text.index(hits[0])], finish="stop")
            return
        if len(seq.completion) >= plan.max_tokens:
            self._finish(seq, text=all_text, finish="length")
            return
        self._continue(seq, token)

    def _continue(self, seq: _Seq, token: int) -> None:
        if seq.n_past + 1 >= self.n_ctx:  # the stream is full: stop like a length limit
            self._finish(seq, text=self._all_text(seq), finish="length")
            return
        seq.feed = [token]

    def _finish(self, seq: _Seq, *, text: bytes, finish: str) -> None:
        crit = seq.plan.stopping_criteria
        if crit is not None and crit(np.asarray(seq.fed, dtype=np.intc), self._empty_scores):
            text, finish = self._all_text(seq), "stop"
        self._release(seq)
        if not seq.future.done():
            seq.future.set_result(
                (text.decode("utf-8", errors="ignore"), len(seq.completion), finish)
            )

    def _finish_error(self, slot: int, seq: _Seq, exc: Exception) -> None:
        self._release(seq)
        self._lc.llama_memory_seq_rm(self._mem, slot, -1, -1)
        self._cached[slot] = []
        if not seq.future.done():
            seq.future.set_exception(exc)

    def _release(self, seq: _Seq) -> None:
        self._free_chain(seq)
        if seq.slot >= 0 and self._slots[seq.slot] is seq:
            self._slots[seq.slot] = None  # the stream keeps its tokens for prefix reuse

    def _free_chain(self, seq: _Seq) -> None:
        if seq.chain is not None:
            self._lc.llama_sampler_free(seq.chain)
            seq.chain = None

    def _piece(self, token: int) -> bytes:
        piece = self._piece_cache.get(token)
        if piece is None:
            n = self._lc.llama_token_to_piece(
                self._vocab, self._lc.llama_token(token), self._piece_buf, _PIECE_BUF, 0, False
            )
            piece = bytes(self._piece_buf[: max(n, 0)])
            self._piece_cache[token] = piece
        return piece

    def _all_text(self, seq: _Seq) -> bytes:
        text = b"".join(seq.pieces)
        if seq.completion and seq.completion[0] == self._bos and text[:1] == b" ":
            return text[1:]
        return text

    def _make_chain(self, plan: _Plan) -> tuple[Any, Any]:
        """The sampler chain ``Llama._init_sampler`` builds for these parameters, and its
        grammar sampler (None without a grammar)."""
        lc = self._lc
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())

        def add(smpl: Any) -> None:
            lc.llama_sampler_chain_add(chain, smpl)

        add(
            lc.llama_sampler_init_penalties(
                self._n_vocab,
                self.llama.last_n_tokens_size,
                plan.repeat_penalty,
                plan.frequency_penalty,
                plan.presence_penalty,
            )
        )
        grammar = None
        if plan.grammar is not None:
            grammar = lc.llama_sampler_init_grammar(
                self._vocab,
                plan.grammar._grammar.encode("utf-8"),
                plan.grammar._root.encode("utf-8"),
            )
            if not grammar:
                lc.llama_sampler_free(chain)
                raise LLMRequestError("llama.cpp could not parse the JSON grammar")
            add(grammar)
        if plan.temperature < 0.0:
            add(lc.llama_sampler_init_dist(plan.seed))
        elif plan.temperature == 0.0:
            add(lc.llama_sampler_init_greedy())
        else:
            add(lc.llama_sampler_init_top_k(plan.top_k))
            add(lc.llama_sampler_init_typical(plan.typical_p, 1))
            add(lc.llama_sampler_init_top_p(plan.top_p, 1))
            add(lc.llama_sampler_init_min_p(plan.min_p, 1))
            add(lc.llama_sampler_init_temp(plan.temperature))
            add(lc.llama_sampler_init_dist(plan.seed))
        return chain, grammar


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class BatchedLocalBackend:
    """The embedded GGUF model with up to ``n_parallel`` sequences decoded together.

    Same name, model and cache identity as :class:`LocalBackend` — the replies are the
    same, so cached replies are shared between the two.
    """

    name = "local"
    is_local = True
    costs_money = False
    #: no cap of its own: the client keeps ``calls_to_fill`` calls in flight to batch them
    max_concurrency: int | None = None

    def __init__(
        self,
        settings: LLMSettings,
        *,
        n_parallel: int | None = None,
        local: LocalBackend | None = None,
    ) -> None:
        # ``local``: share an already loaded sequential backend (its weights and chat
        # handler); the batched context is separate, so both can run side by side
        self._local = local if local is not None else LocalBackend(settings)
        self._owns_local = local is None
        self.model = self._local.model
        self.n_parallel = int(n_parallel or getattr(settings, "n_parallel", 1) or 1)
        if self.n_parallel < 1:
            raise LLMConfigError(f"n_parallel must be at least 1, got {self.n_parallel}")
        self.n_ctx = settings.n_ctx
        self.n_batch = settings.n_batch
        self._engine: BatchedEngine | None = None
        self._lock = threading.Lock()
        self.sequential_fallbacks = 0

    @property
    def model_path(self) -> Any:
        """The GGUF file (callers such as the preference extractor size the model by it)."""
        return self._local.model_path

    @property
    def n_threads(self) -> int:
        return self._local.n_threads

    @property
    def engine(self) -> BatchedEngine:
        """The batching engine (loads the model and creates the context on first use)."""
        if self._engine is None:
            llama = self._local.llama
            with self._lock:
                if self._engine is None:
                    self._engine = BatchedEngine(
                        llama,
                        n_parallel=self.n_parallel,
                        n_ctx_per_seq=self.n_ctx,
                        n_batch=self.n_batch,
                        model_name=self.model,
                    )
        return self._engine

    def _plan(self, messages: list[Message], kwargs: dict[str, Any], seed: int | None) -> _Plan:
        """Run the chat handler up to generation and turn its arguments into a plan."""
        llama = self._local.llama
        # special-token strings inside contents tokenize as plain text, as on the
        # sequential path (whyrec.llm.backends.local.SpecialTokenGuard)
        c = capture_completion(llama, self._local.protect(messages), **kwargs)
        prompt = c.get("prompt")
        unsupported = (
            not isinstance(prompt, list)
            or c.get("suffix") is not None
            or c.get("echo")
            or c.get("stream")
            or c.get("logprobs") is not None
            or c.get("logits_processor") is not None
            or c.get("logit_bias") is not None
            or int(c.get("mirostat_mode") or 0) != 0
            or getattr(llama, "draft_model", None) is not None
        )
        if unsupported:
            raise _Unsupported("this request needs the sequential path")
        n_ctx = self.n_ctx
        max_tokens = c.get("max_tokens")
        if max_tokens is None or max_tokens <= 0:
            max_tokens = n_ctx - len(prompt)
        if max_tokens + len(prompt) >= n_ctx:
            max_tokens = n_ctx - len(prompt)
        stop = c.get("stop") or []
        stop = stop if isinstance(stop, list) else [stop]
        used_seed = seed if seed is not None else random.Random(llama._seed).randint(0, 2**32)
        return _Plan(
            prompt=[int(t) for t in prompt],
            max_tokens=int(max_tokens),
            stop=[s.encode("utf-8") for s in stop],
            stopping_criteria=c.get("stopping_criteria"),
            grammar=c.get("grammar"),
            temperature=float(c.get("temperature", 0.8)),
            top_k=int(c.get("top_k", 40)),
            top_p=float(c.get("top_p", 0.95)),
            min_p=float(c.get("min_p", 0.05)),
            typical_p=float(c.get("typical_p", 1.0)),
            repeat_penalty=float(c.get("repeat_penalty", 1.0)),
            frequency_penalty=float(c.get("frequency_penalty", 0.0)),
            presence_penalty=float(c.get("presence_penalty", 0.0)),
            seed=int(used_seed),
        )

    def generate(self, messages: list[Message], decoding: Decoding) -> RawReply:
        """One chat completion, decoded together with whatever else is in flight."""
        messages, kwargs = self._local.prepare(messages, decoding)
        try:
            plan = self._plan(messages, kwargs, decoding.seed)
        except _Unsupported:
            self.sequential_fallbacks += 1
            return self._local.complete_prepared(messages, kwargs)
        except ValueError as exc:  # e.g. a chat template rejecting the messages
            raise LLMRequestError(f"local model {self.model}: {exc}") from exc
        try:
            text, n_completion, finish = self.engine.submit(plan).result()
        except ValueError as exc:
            raise LLMRequestError(
                f"local model {self.model}: {exc} (n_ctx={self.n_ctx}; raise n_ctx or "
                "shorten the prompt / max_tokens)"
            ) from exc
        return RawReply(
            text=text,
            prompt_tokens=len(plan.prompt),
            completion_tokens=n_completion,
            finish_reason=finish,
            model=self.model,
        )

    def identity(self) -> dict[str, Any]:
        """The same identity as the sequential backend: the replies are the same."""
        return self._local.identity()

    def describe(self) -> dict[str, Any]:
        """Facts for ``whyrec llm info``."""
        out = self._local.describe()
        out["n_parallel"] = self.n_parallel
        out["decoding"] = f"batched ({self.n_parallel} sequences)"
        if self._engine is not None:
            out["batched_steps"] = self._engine.steps
            out["batched_max_active"] = self._engine.max_active
            out["batched_prompt_tokens"] = self._engine.prompt_tokens
            out["batched_prompt_seconds"] = round(self._engine.prompt_seconds, 2)
            out["batched_generated_tokens"] = self._engine.generated_tokens
            out["batched_generate_seconds"] = round(self._engine.generate_seconds, 2)
        return out

    def close(self) -> None:
        """Stop the engine and free the model."""
        with self._lock:
            if self._engine is not None:
                self._engine.close()
                self._engine = None
        if self._owns_local:
            self._local.close()


def in_process_backend(settings: LLMSettings) -> LocalBackend | BatchedLocalBackend:
    """The embedded model in this process: batched when ``n_parallel`` > 1, else sequential
    (what :func:`whyrec.llm.backends.make_backend` builds for one worker, and what each
    worker of the pool runs)."""
    if settings.n_parallel > 1:
        return BatchedLocalBackend(settings)
    return LocalBackend(settings)
