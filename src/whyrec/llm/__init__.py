"""The LLM layer: every call whyrec makes to a language model goes through here.

Use one :class:`LLMClient`; it runs the embedded SmolLM2 GGUF model by default
(no network, no key) or any OpenAI-compatible endpoint by configuration::

    from whyrec.llm import LLMClient
    client = LLMClient.from_settings()            # file + WHYREC_LLM_* environment
    res = client.complete("Name a film.", max_tokens=16, stage="demo")
    res.text, res.prompt_tokens, res.latency_s

See docs/llm.md for settings, backends, cache, retries and cost estimates.
"""

from whyrec.llm.accounting import Accounting, StageUsage
from whyrec.llm.cache import ReplyCache
from whyrec.llm.client import (
    CompletionClient,
    LLMClient,
    LLMFailure,
    LLMOutcome,
    LLMRequest,
    LLMResult,
    normalize_messages,
)
from whyrec.llm.errors import (
    LLMConfigError,
    LLMError,
    LLMOutputError,
    LLMRequestError,
    LLMTransientError,
    LLMUnavailableError,
)
from whyrec.llm.estimate import STAGE_PROFILES, Estimate, StageProfile, Throughput, estimate_stage
from whyrec.llm.parse import ReplyModel, Schema, extract_json
from whyrec.llm.settings import LLMSettings, Price

__all__ = [
    "STAGE_PROFILES",
    "Accounting",
    "CompletionClient",
    "Estimate",
    "LLMClient",
    "LLMConfigError",
    "LLMError",
    "LLMFailure",
    "LLMOutcome",
    "LLMOutputError",
    "LLMRequest",
    "LLMRequestError",
    "LLMResult",
    "LLMSettings",
    "LLMTransientError",
    "LLMUnavailableError",
    "Price",
    "ReplyCache",
    "ReplyModel",
    "Schema",
    "StageProfile",
    "StageUsage",
    "Throughput",
    "estimate_stage",
    "extract_json",
    "normalize_messages",
]
