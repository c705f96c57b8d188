"""Greedy decoding under a JSON grammar without running the grammar over the vocabulary.

llama.cpp's sampler chain applies the grammar sampler to every token of the vocabulary
before the greedy sampler picks the highest logit. With a 49k-token vocabulary that is
a C loop over 49k grammar checks per generated token; on the packaged SmolLM2 it costs
about as much as the decode itself (measured: 1,232 s wall for 830 s of ``llama_decode``
over 32 users' explanations). At temperature 0 with neutral penalties, the chain's
choice is "the highest logit the grammar allows" (the first such token on ties), so
checking candidates in that order, one token at a time, gives the same token:

* the top token (``np.argmax``: first index on ties, like llama.cpp's greedy sampler)
  is the choice when the grammar allows it — almost always, because the model follows
  the grammar it was prompted with;
* otherwise the next best tokens strictly above the ``TOP_K``-th logit are walked in
  greedy order (higher logit first, lower id on ties), so no tied token outside the
  walked set can come first;
* when none of them is allowed, the full chain decides (``llama_sampler_sample``).

Either way the chain accepts the token (grammar state, penalty history), exactly as
``llama_sampler_sample`` does after choosing. llama.cpp's own ``common_sampler`` uses
the same idea (sample first, check the grammar after).

Used by the batched engine for each sequence and, through :func:`patch_llama_sampling`,
by llama-cpp-python's ``Llama`` in the sequential backend.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

#: candidates checked one by one before the grammar runs over the whole vocabulary
TOP_K = 64


class GreedyFirst:
    """Greedy choices under a grammar for one llama.cpp model vocabulary.

    Not thread-safe (scratch buffers): one instance per decoding thread.
    """

    def __init__(self, llama_cpp: Any, n_vocab: int) -> None:
        self._lc = llama_cpp
        self.n_vocab = int(n_vocab)
        self._one = llama_cpp.llama_token_data()
        self._one_arr = llama_cpp.llama_token_data_array(
            data=ctypes.pointer(self._one), size=1, selected=-1, sorted=False
        )
        #: tokens decided by the top-token check, by the short walk, by the full chain
        self.top_hits = 0
        self.walk_hits = 0
        self.full_chain = 0

    def allows(self, grammar_smpl: Any, token: int, logit: float) -> bool:
        """Whether the grammar, in its current state, accepts ``token`` next."""
        one = self._one
        one.id = token
        one.logit = logit
        one.p = 0.0
        arr = self._one_arr
        arr.size = 1
        arr.selected = -1
        arr.sorted = False
        self._lc.llama_sampler_apply(grammar_smpl, ctypes.byref(arr))
        return one.logit != float("-inf")

    def sample(self, ctx: Any, idx: int, chain: Any, grammar_smpl: Any | None) -> int:
        """The greedy chain's token for the logits at ``idx``, accepted by ``chain``.

        ``chain`` must be a greedy chain (temperature 0, neutral penalties) whose only
        filtering sampler is ``grammar_smpl`` (None without a grammar).
        """
        lc = self._lc
        logits = np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, idx), shape=(self.n_vocab,))
        token = int(np.argmax(logits))
        if grammar_smpl is None or self.allows(grammar_smpl, token, float(logits[token])):
            self.top_hits += 1
            lc.llama_sampler_accept(chain, token)
            return token
        top = np.argpartition(logits, -TOP_K)[-TOP_K:]
        floor = float(logits[top].min())
        for cand in sorted(
            (int(t) for t in top if logits[t] > floor), key=lambda t: (-logits[t], t)
        ):
            if self.allows(grammar_smpl, cand, float(logits[cand])):
                self.walk_hits += 1
                lc.llama_sampler_accept(chain, cand)
                return cand
        self.full_chain += 1
        return int(lc.llama_sampler_sample(chain, ctx, idx))


def find_grammar(llama_cpp: Any, chain: Any) -> Any | None:
    """The grammar sampler inside a sampler chain, or None."""
    lc = llama_cpp
    for i in range(int(lc.llama_sampler_chain_n(chain))):
        smpl = lc.llama_sampler_chain_get(chain, i)
        name = lc.llama_sampler_name(smpl)
        if name in (b"grammar", "grammar"):
            return smpl
    return None


def patch_llama_sampling(llama: Any) -> GreedyFirst:
    """Make ``llama.sample`` take greedy choices under a grammar without the full-vocabulary
    grammar pass; every other request samples as before. Returns the counters' holder.

    The replies are the ones llama-cpp-python's own chain gives (the same token at every
    step); ``tests/llm/test_local_model.py`` compares both on grammar-constrained calls.
    """
    import llama_cpp

    picker = GreedyFirst(llama_cpp, llama.n_vocab())
    original = llama.sample
    found: list[Any] = [None, None]  # the last request's chain and its grammar sampler

    def sample(*args: Any, **kwargs: Any) -> int:
        if args:  # llama-cpp-python calls sample() with keywords only; keep other uses intact
            return original(*args, **kwargs)
        greedy = (
            kwargs.get("temp", 0.8) == 0.0
            and kwargs.get("repeat_penalty", 1.0) == 1.0
            and kwargs.get("frequency_penalty", 0.0) == 0.0
            and kwargs.get("presence_penalty", 0.0) == 0.0
            and kwargs.get("logits_processor") is None
            and kwargs.get("grammar") is not None
            and kwargs.get("idx") is not None
            and llama._sampler is not None  # generate() built the chain for this request
        )
        if not greedy:
            return original(**kwargs)
        chain = llama._sampler.sampler
        if found[0] is not chain:  # generate() builds a new chain per request
            found[:] = [chain, find_grammar(llama_cpp, chain)]
        grammar = found[1]
        if grammar is None:  # pragma: no cover - a grammar request always has one
            return original(**kwargs)
        ridx = int(kwargs["idx"]) - int(llama.n_tokens)
        return picker.sample(llama._ctx.ctx, ridx, chain, grammar)

    llama.sample = sample  # type: ignore[method-assign]
    return picker
