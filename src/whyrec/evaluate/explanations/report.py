"""The comparison report: per-system mean ± std and N per metric, pairwise verdicts, JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from whyrec.evaluate.explanations.cases import ExplanationCase
from whyrec.evaluate.explanations.scoring import METRIC_INFO, METRICS
from whyrec.io import write_json

REPORT_FORMAT = "whyrec-explanation-eval/1"


def fmt_cell(row: dict[str, Any] | None, digits: int = 3) -> str:
    """``mean ± std (N)``; set-level values have no std; ``—`` when undefined."""
    if row is None or row.get("mean") is None:
        return "—"
    mean = f"{row['mean']:.{digits}f}"
    if row.get("kind") == "set" or row.get("std") is None:
        return f"{mean} (N={row['n']})"
    return f"{mean} ± {row['std']:.{digits}f} (N={row['n']})"


@dataclass
class ExplanationReport:
    """Everything one ``evaluate-explanations`` run measured."""

    systems: list[str]
    writer: str  # the LLM that wrote the explanations
    judge: str | None  # the LLM that judged them (None: no judge)
    encoder: str
    rows: list[dict[str, Any]]
    pairwise: list[dict[str, Any]] = field(default_factory=list)
    cases: list[ExplanationCase] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self, system: str, metric: str) -> dict[str, Any] | None:
        for r in self.rows:
            if r["system"] == system and r["metric"] == metric:
                return r
        return None

    def value(self, system: str, metric: str) -> float | None:
        r = self.row(system, metric)
        return None if r is None else r["mean"]

    def _shown_metrics(self) -> list[str]:
        return [k for k, *_ in METRICS if any(self.value(s, k) is not None for s in self.systems)]

    def header_lines(self) -> list[str]:
        users = len({c.user for c in self.cases})
        return [
            f"explanations written by: {self.writer}",
            f"judged by: {self.judge or 'no LLM judge (--no-judge)'}",
            f"similarity encoder: {self.encoder}",
            f"{users} users, {len({c.task for c in self.cases})} (user, item) tasks, "
            f"{len(self.cases)} explanations",
        ]

    # ----------------------------------------------------------- rendering
    def table(self) -> Any:
        """A rich table: metric rows, one column per system."""
        from rich.table import Table

        t = Table(title="Explanation quality — " + "; ".join(self.header_lines()[:2]))
        t.add_column("group")
        t.add_column("metric")
        t.add_column("better", justify="center")
        for s in self.systems:
            t.add_column(s, justify="right")
        for k in self._shown_metrics():
            info = METRIC_INFO[k]
            arrow = {"up": "↑", "down": "↓"}.get(info["better"], "")
            t.add_row(
                info["group"], info["label"], arrow,
                *(fmt_cell(self.row(s, k)) for s in self.systems),
            )  # fmt: skip
        return t

    def pairwise_table(self) -> Any:
        from rich.table import Table

        t = Table(title=f"Pairwise judge ({self.judge}), both orders reconciled")
        for col in ("x vs y", "criterion", "x wins", "y wins", "ties", "x win rate",
                    "orders agree", "same slot both orders", "N"):  # fmt: skip
            t.add_column(col)
        for r in self.pairwise:
            t.add_row(
                f"{r['x']} vs {r['y']}", r["criterion"], str(r["x_wins"]), str(r["y_wins"]),
                str(r["ties"]), _num(r["x_win_rate"]), _num(r["consistent"]),
                _num(r["position_bias"]), str(r["n"]),
            )  # fmt: skip
        return t

    def markdown(self) -> str:
        """The same tables in Markdown (for docs/benchmarks.md)."""
        lines = [
            "| group | metric | better | " + " | ".join(self.systems) + " |",
            "|---|---|:-:|" + "---:|" * len(self.systems),
        ]
        for k in self._shown_metrics():
            info = METRIC_INFO[k]
            arrow = {"up": "↑", "down": "↓"}.get(info["better"], "")
            cells = " | ".join(fmt_cell(self.row(s, k)) for s in self.systems)
            lines.append(f"| {info['group']} | {info['label']} | {arrow} | {cells} |")
        if self.pairwise:
            lines += [
                "",
                "| x vs y | criterion | x wins | y wins | ties | x win rate | orders agree | "
                "same slot in both orders | N |",
                "|---|---|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for r in self.pairwise:
                lines.append(
                    f"| {r['x']} vs {r['y']} | {r['criterion']} | {r['x_wins']} | "
                    f"{r['y_wins']} | {r['ties']} | {_num(r['x_win_rate'])} | "
                    f"{_num(r['consistent'])} | {_num(r['position_bias'])} | {r['n']} |"
                )
        return "\n".join(lines)

    # ------------------------------------------------------------------ io
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": REPORT_FORMAT,
            "systems": self.systems,
            "writer": self.writer,
            "judge": self.judge,
            "encoder": self.encoder,
            "config": self.config,
            "notes": self.notes,
            "extra": self.extra,
            "summary": self.rows,
            "pairwise": self.pairwise,
            "cases": [c.to_dict() for c in self.cases],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, default=str)

    def save(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> ExplanationReport:
        from whyrec.errors import DataError

        path = Path(path)
        if not path.is_file():
            raise DataError("results file not found", path=path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise DataError(f"not valid JSON: {exc}", path=path) from None
        if not isinstance(data, dict) or data.get("format") != REPORT_FORMAT:
            raise DataError(
                f"not an explanation-evaluation result (expected format {REPORT_FORMAT!r}, "
                "as written by whyrec evaluate-explanations --out)",
                path=path,
            )
        return cls(
            systems=data["systems"],
            writer=data["writer"],
            judge=data.get("judge"),
            encoder=data.get("encoder", ""),
            rows=data.get("summary", []),
            pairwise=data.get("pairwise", []),
            cases=[ExplanationCase.from_dict(c) for c in data.get("cases", [])],
            config=data.get("config", {}),
            notes=data.get("notes", []),
            extra=data.get("extra", {}),
        )


def _num(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"
