"""Any OpenAI-compatible chat endpoint: OpenAI, vLLM, llama.cpp's server, Ollama.

The official ``openai`` client does the HTTP; its own retries are switched off so the
whyrec client retries every backend the same way. Structured output is asked for in
the strongest form the server accepts, found once and remembered:

1. ``response_format={"type": "json_schema", ...}`` (OpenAI, vLLM, Ollama);
2. ``response_format={"type": "json_object", "schema": ...}`` (llama-cpp-python's server);
3. the schema in the system prompt, the reply parsed and repaired by the client.
"""

from __future__ import annotations

import os
import re
import threading
from typing import TYPE_CHECKING, Any

import httpx

from whyrec.llm.backends.base import Decoding, Message, RawReply, with_schema_instruction
from whyrec.llm.errors import (
    LLMConfigError,
    LLMRequestError,
    LLMTransientError,
    register_secret,
)
from whyrec.llm.parse import Schema, schema_instruction

if TYPE_CHECKING:
    import openai

    from whyrec.llm.settings import LLMSettings

MODES = ("json_schema", "json_object", "prompt")
_RETRY_STATUS = {408, 409, 425, 429}
# Endpoints that run on this machine rarely check keys; the client still needs one.
_PLACEHOLDER_KEY = "no-key-needed"
#: whyrec's own variable for the endpoint's key; when set it wins over ``api_key_env``.
KEY_ENV = "WHYREC_LLM_API_KEY"


def api_key_from_env(api_key_env: str) -> tuple[str | None, str]:
    """The API key and the variable it came from: ``$WHYREC_LLM_API_KEY`` when set, else
    the variable named by ``api_key_env`` (``OPENAI_API_KEY`` by default). Every value
    found is registered for redaction, so neither can reach a store or a terminal."""
    found: tuple[str | None, str] = (None, api_key_env)
    for name in (api_key_env, KEY_ENV):
        value = os.environ.get(name)
        if value:
            register_secret(value)
            found = (value, name)
    return found


def _retry_after(response: Any) -> float | None:
    """Seconds from a ``Retry-After`` header, when present and numeric."""
    try:
        value = response.headers.get("retry-after")
        return float(value) if value is not None else None
    except (AttributeError, TypeError, ValueError):
        return None


class OpenAIBackend:
    """Chat completions over HTTP with the official client."""

    name = "openai"
    is_local = False
    costs_money = True
    max_concurrency: int | None = None

    def __init__(self, settings: LLMSettings) -> None:
        try:
            import openai
        except ImportError as exc:  # pragma: no cover - openai is a core dependency
            raise LLMConfigError("backend 'openai' needs the 'openai' package") from exc
        assert settings.model is not None  # enforced by LLMSettings
        self.model = settings.model
        self.base_url = settings.base_url
        self.api_key_env = settings.api_key_env
        # the variable the key is read from (named in a refused call's hint)
        self.key_source = api_key_from_env(self.api_key_env)[1]
        self.timeout = settings.timeout
        self._client: openai.OpenAI | None = None
        self._client_lock = threading.Lock()
        self._openai = openai
        self._configured_mode = settings.structured_output
        self._mode_lock = threading.Lock()
        configured = settings.structured_output
        self._mode = MODES[0] if configured == "auto" else configured

    def _http(self) -> openai.OpenAI:
        """The HTTP client, made on first use so that settings can be inspected (``info``,
        ``estimate``) without a key; the key is read from the environment only here."""
        with self._client_lock:
            if self._client is None:
                key, self.key_source = api_key_from_env(self.api_key_env)
                if not key:
                    if self.base_url is None:
                        raise LLMConfigError(
                            f"neither {KEY_ENV} nor {self.api_key_env} is set; backend "
                            "'openai' without base_url calls api.openai.com and needs the key "
                            "(or set api_key_env to the name of the variable that holds it)"
                        )
                    key = _PLACEHOLDER_KEY
                self._client = self._openai.OpenAI(
                    api_key=key, base_url=self.base_url, timeout=self.timeout, max_retries=0
                )
            return self._client

    @property
    def structured_mode(self) -> str:
        """The structured-output mode in use now (may step down once in ``auto``)."""
        return self._mode

    def _response_format(self, mode: str, schema: Schema) -> dict[str, Any] | None:
        if mode == "json_schema":
            return {
                "type": "json_schema",
                "json_schema": {"name": "reply", "schema": schema.json_schema, "strict": False},
            }
        if mode == "json_object":
            return {"type": "json_object", "schema": schema.json_schema}
        return None

    def generate(self, messages: list[Message], decoding: Decoding) -> RawReply:
        """One attempt; steps down the structured-output modes when the server refuses one."""
        schema = decoding.schema
        if schema is None:
            return self._call(messages, None, decoding)
        start = self._mode
        for mode in MODES[MODES.index(start) :]:
            msgs = messages
            if mode == "prompt":
                msgs = with_schema_instruction(messages, schema_instruction(schema))
            try:
                reply = self._call(msgs, self._response_format(mode, schema), decoding)
            except (LLMRequestError, LLMTransientError) as exc:
                # In auto mode, a server that rejects this response_format (400/422, or
                # a 5xx that names it, as llama-cpp-python's server sends) gets the next
                # weaker form; nothing was generated, so nothing is lost.
                if self._configured_mode != "auto" or mode == "prompt" or not _rejects_format(exc):
                    raise
                continue
            if mode != start:
                # Remembered only once a weaker form worked: a 400 for another reason
                # (a prompt too long) must not downgrade later calls.
                with self._mode_lock:
                    self._mode = mode
            return reply
        raise AssertionError("unreachable: the 'prompt' mode either returns or raises")

    def _call(
        self,
        messages: list[Message],
        response_format: dict[str, Any] | None,
        decoding: Decoding,
    ) -> RawReply:
        oa = self._openai
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": decoding.max_tokens,
            "temperature": decoding.temperature,
        }
        if decoding.seed is not None:
            kwargs["seed"] = decoding.seed
        if response_format is not None:
            kwargs["response_format"] = response_format
        where = self.base_url or "api.openai.com"
        http = self._http()  # a missing key is a config error, raised as such
        try:
            resp = http.chat.completions.create(**kwargs)
        except oa.APITimeoutError as exc:
            raise LLMTransientError(f"{where}: no reply within {self.timeout:g}s") from exc
        except oa.APIConnectionError as exc:
            raise LLMTransientError(f"{where}: connection failed ({exc})") from exc
        except oa.APIStatusError as exc:
            status = exc.status_code
            detail = _short(re.sub(r"^Error code: \d+ - ", "", str(exc.message)))
            if status in _RETRY_STATUS or status >= 500:
                raise LLMTransientError(
                    f"{where}: HTTP {status}: {detail}",
                    status=status,
                    retry_after=_retry_after(exc.response),
                ) from exc
            hint = ""
            if status in (401, 403):
                hint = f" (check the key in ${self.key_source})"
            elif status == 404:
                hint = f" (check base_url and that model {self.model!r} exists there)"
            raise LLMRequestError(f"{where}: HTTP {status}: {detail}{hint}", status=status) from exc
        except oa.APIResponseValidationError as exc:
            raise LLMTransientError(f"{where}: malformed response ({_short(str(exc))})") from exc
        except ValueError as exc:
            # A 200 whose Content-Type says JSON but whose body is not (a proxy's error
            # page, a truncated body): the SDK's json() raises JSONDecodeError. A bad body,
            # like a non-JSON text/html one: retried, then a typed error.
            raise LLMTransientError(
                f"{where}: malformed response, the body is not JSON ({_short(str(exc))})"
            ) from exc
        except (oa.OpenAIError, httpx.HTTPError) as exc:  # anything else about the reply
            raise LLMTransientError(
                f"{where}: malformed response ({type(exc).__name__}: {_short(str(exc))})"
            ) from exc
        return self._reply(resp, where)

    def _reply(self, resp: Any, where: str) -> RawReply:
        """Read the first choice, treating any structural surprise as a bad (retryable) reply."""
        try:
            choice = resp.choices[0]
            text = choice.message.content
            if text is None and getattr(choice.message, "refusal", None):
                raise LLMRequestError(f"{where}: the model refused: {choice.message.refusal}")
            text = text or ""
            if not isinstance(text, str):
                raise TypeError(f"content is {type(text).__name__}, expected a string")
            usage = getattr(resp, "usage", None)
            prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
            completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
            model = str(getattr(resp, "model", None) or self.model)
            finish = getattr(choice, "finish_reason", None)
        except LLMRequestError:
            raise
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
            snippet = _short(repr(resp))
            raise LLMTransientError(
                f"{where}: malformed response, expected a chat completion with choices "
                f"({exc}; got {snippet})"
            ) from exc
        if usage is None:
            # Some servers omit usage; roughly 4 characters per token keeps accounting sane.
            completion_tokens = max(1, len(text) // 4)
        return RawReply(text, prompt_tokens, completion_tokens, finish, model)

    def identity(self) -> dict[str, Any]:
        """Endpoint and structured-output mode setting (the key is never part of it)."""
        return {"base_url": self.base_url, "structured_output": self._configured_mode}

    def describe(self) -> dict[str, Any]:
        """Facts for ``whyrec llm info``; says whether a key is set and in which variable,
        never its value."""
        key, source = api_key_from_env(self.api_key_env)
        return {
            "base_url": self.base_url or "https://api.openai.com/v1",
            "api_key_env": self.api_key_env,
            "api_key_set": bool(key),
            "api_key_from": source if key else None,
            "structured_output": self._configured_mode,
            "timeout_s": self.timeout,
        }

    def close(self) -> None:
        """Close the HTTP connection pool."""
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def _rejects_format(exc: LLMRequestError | LLMTransientError) -> bool:
    """Does this error look like "this server does not support that response_format"?"""
    status = getattr(exc, "status", None)
    if status in (400, 422):
        return True
    text = str(exc).lower()
    return status is not None and status >= 500 and ("response_format" in text)


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
