"""Evaluation results: every number carries the protocol that produced it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from whyrec.io import write_json


@dataclass
class EvaluationResult:
    """Metrics of one protocol on one split."""

    protocol: str  # "full" or "sampled-<n>"
    label: str  # human-readable description of the protocol
    split: str
    n_users: int
    n_candidates: int
    seed: int | None
    metrics: dict[str, float]
    seconds: float = 0.0  # the scoring pass, shared by all protocols of one evaluate()
    users: list[int] | None = None  # with keep_ranks=True: internal user indices ...
    ranks: list[int] | None = None  # ... and the 0-based rank of each one's target

    def __getitem__(self, metric: str) -> float:
        return self.metrics[metric]


@dataclass
class EvaluationReport:
    """All protocols for one model on one dataset."""

    model: str
    dataset: str
    fingerprint: str
    results: list[EvaluationResult] = field(default_factory=list)

    def __getitem__(self, protocol: str) -> EvaluationResult:
        for r in self.results:
            if r.protocol == protocol or r.protocol.split("-")[0] == protocol:
                return r
        raise KeyError(
            f"no result for protocol {protocol!r}; have {[r.protocol for r in self.results]}"
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for r in data["results"]:  # per-user ranks only when asked for
            for key in ("users", "ranks"):
                if r[key] is None:
                    del r[key]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationReport:
        results = [EvaluationResult(**r) for r in data.get("results", [])]
        return cls(
            model=data["model"],
            dataset=data["dataset"],
            fingerprint=data.get("fingerprint", ""),
            results=results,
        )

    def table(self) -> Any:
        """A :class:`rich.table.Table`: one row per protocol, one column per metric."""
        from rich.table import Table

        table = Table(title=f"{self.model} on {self.dataset}", show_lines=False)
        table.add_column("protocol", style="bold")
        table.add_column("split")
        table.add_column("users", justify="right")
        metrics = list(self.results[0].metrics) if self.results else []
        for m in metrics:
            table.add_column(m, justify="right")
        for r in self.results:
            table.add_row(
                r.protocol, r.split, str(r.n_users), *(f"{r.metrics[m]:.4f}" for m in metrics)
            )
        table.caption = "\n".join(f"{r.protocol}: {r.label}" for r in self.results)
        return table
