"""Batch generation at scale: resumable LLM jobs over many users.

``whyrec batch preferences|explanations RUN --users all|FILE --out DIR`` (or
:func:`run_batch`) computes LANE's preferences or explanations for every selected user,
writing Parquet shards plus a manifest to ``DIR``. A job can be killed at any moment and
run again: completed items are never recomputed or lost, and no shard is ever half
written. Items that fail are recorded with the reason and retried alone with
``retry_failed=True`` (``--retry-failed``). The LLM stage runs on a bounded thread pool
over one client (``backend="local"``) or on Ray Data actors (``backend="ray"``).

See docs/batch.md.
"""

from whyrec.batch.jobs import (
    EXPLANATION_SCHEMA,
    PREFERENCE_SCHEMA,
    ExplanationJob,
    Failure,
    PreferenceJob,
    WorkItem,
    read_user_file,
)
from whyrec.batch.ratelimit import RateLimitedBackend, RateLimiter
from whyrec.batch.runner import BatchOptions, BatchReport, run_batch
from whyrec.batch.store import JobStore, read_manifest, read_output

__all__ = [
    "EXPLANATION_SCHEMA",
    "PREFERENCE_SCHEMA",
    "BatchOptions",
    "BatchReport",
    "ExplanationJob",
    "Failure",
    "JobStore",
    "PreferenceJob",
    "RateLimitedBackend",
    "RateLimiter",
    "WorkItem",
    "read_manifest",
    "read_output",
    "read_user_file",
    "run_batch",
]
