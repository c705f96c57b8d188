"""A human questionnaire on LANE's seven criteria, blind to which system wrote what.

:func:`export_questionnaire` writes three files:

* ``questionnaire.csv`` — one row per explanation, each with a random response id, the
  task (history and recommended item), the text and an empty column per criterion;
* ``questionnaire.html`` — the same as a static form (no server, no network): raters
  click 1–``scale`` per criterion and download their answers as a CSV of the same shape;
* ``key.json`` — which system wrote each response id. Keep it away from the raters.

Within each task the explanations appear in a seeded random order, and response ids are
random, so neither position nor id reveals the system. :func:`score_questionnaire` reads
filled CSV files (one per rater, or one with a ``rater`` column), checks every row and
reports each system's mean, standard deviation and N per criterion.
"""

from __future__ import annotations

import csv
import html
import io
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from whyrec.errors import DataError
from whyrec.evaluate.explanations.cases import ExplanationCase
from whyrec.evaluate.explanations.stats import summarize
from whyrec.io import atomic_write, write_json

#: LANE's survey criteria, with the question a rater answers for each.
CRITERIA: dict[str, str] = {
    "clarity": "The explanation is clear and easy to understand.",
    "detail": "The explanation gives enough detail about why the item fits me.",
    "effectiveness": "The explanation would help me decide whether to try the item.",
    "relevance": "The explanation is relevant to what I have watched or bought.",
    "logic": "The reasoning of the explanation is logical and consistent.",
    "trust": "The explanation makes me trust the recommendation.",
    "satisfaction": "Overall, I am satisfied with this explanation.",
}
ID_COLUMNS = ("response_id", "task", "history", "item", "explanation")
KEY_FORMAT = "whyrec-questionnaire-key/1"
_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def _token(rng: np.random.Generator, n: int = 6) -> str:
    return "".join(_ALPHABET[int(i)] for i in rng.integers(0, len(_ALPHABET), n))


@dataclass
class QuestionnaireFiles:
    csv: Path
    html: Path
    key: Path
    responses: int
    tasks: int


def build_rows(
    cases: Sequence[ExplanationCase], *, seed: int | None = None, history_items: int = 10
) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """Questionnaire rows (shuffled within each task) and the key mapping ids to systems.

    Only tasks where every system produced a text are included, so each rater sees the
    same set of systems for every task.
    """
    rng = np.random.default_rng(seed if seed is not None else secrets.randbits(64))
    systems = sorted({c.system for c in cases})
    by_task: dict[str, dict[str, ExplanationCase]] = {}
    for c in cases:
        by_task.setdefault(c.task, {})[c.system] = c
    complete = [t for t, d in by_task.items() if all(s in d and d[s].ok for s in systems)]
    task_order = [complete[i] for i in rng.permutation(len(complete))]
    rows: list[dict[str, str]] = []
    key: dict[str, Any] = {"format": KEY_FORMAT, "systems": systems, "responses": {}}
    used: set[str] = set()
    for t_no, task in enumerate(task_order, start=1):
        group = by_task[task]
        task_id = f"T{t_no:03d}"
        for s_idx in rng.permutation(len(systems)):
            case = group[systems[int(s_idx)]]
            rid = _token(rng)
            while rid in used:
                rid = _token(rng)
            used.add(rid)
            rows.append(
                {
                    "response_id": rid,
                    "task": task_id,
                    "history": " | ".join(case.recent_titles[-history_items:]),
                    "item": case.title,
                    "explanation": str(case.text),
                    **{c: "" for c in CRITERIA},
                }
            )
            key["responses"][rid] = {
                "system": case.system,
                "task": task_id,
                "user": case.user,
                "item": case.item,
                "position": case.position,
            }
    return rows, key


def export_questionnaire(
    cases: Sequence[ExplanationCase],
    out_dir: str | Path,
    *,
    seed: int | None = None,
    scale: int = 5,
    title: str = "Which explanation works for you?",
) -> QuestionnaireFiles:
    """Write ``questionnaire.csv``, ``questionnaire.html`` and ``key.json`` to ``out_dir``."""
    if scale < 2:
        raise ValueError(f"scale must be at least 2, got {scale}")
    out = Path(out_dir)
    rows, key = build_rows(cases, seed=seed)
    if not rows:
        raise DataError(
            "no task has an explanation from every system; nothing to put in the questionnaire"
        )
    key["scale"] = scale
    key["criteria"] = list(CRITERIA)
    columns = [*ID_COLUMNS, *CRITERIA]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    csv_path = atomic_write(
        out / "questionnaire.csv", lambda p: p.write_text(buf.getvalue(), encoding="utf-8")
    )
    page = questionnaire_html(rows, scale=scale, title=title)
    html_path = atomic_write(
        out / "questionnaire.html", lambda p: p.write_text(page, encoding="utf-8")
    )
    key_path = write_json(out / "key.json", key)
    return QuestionnaireFiles(
        csv_path, html_path, key_path, len(rows), len({r["task"] for r in rows})
    )


def questionnaire_html(rows: Sequence[dict[str, str]], *, scale: int, title: str) -> str:
    """A self-contained form; answers are downloaded as CSV by a few lines of script."""
    e = html.escape
    tasks: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        tasks.setdefault(r["task"], []).append(r)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{e(title)}</title><style>"
        "body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em}"
        ".task{border:1px solid #bbb;border-radius:6px;padding:1em;margin:1.5em 0}"
        ".resp{border-top:1px solid #ddd;padding:.6em 0}.hist{color:#555;font-size:90%}"
        "table{border-collapse:collapse}td{padding:2px 6px}td.q{width:55%}"
        ".ex{background:#f6f6f6;padding:.6em;border-radius:4px}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        "<p>For each recommended item you see two or more explanations written by different "
        f"systems, in random order. Rate each explanation on every statement from 1 "
        f"(strongly disagree) to {scale} (strongly agree). When you are done, press "
        "<b>Download answers</b> and send the CSV file back. Nothing is sent anywhere "
        "from this page.</p>",
        "<p><label>Your name or rater id: <input id='rater' size='24'></label></p>",
        "<form id='q'>",
    ]
    for task, group in tasks.items():
        first = group[0]
        parts.append(
            f"<div class='task'><h2>{e(task)}: {e(first['item'])}</h2>"
            f"<p class='hist'>Recently watched/bought: {e(first['history'])}</p>"
        )
        for n, r in enumerate(group, start=1):
            rid = e(r["response_id"])
            parts.append(
                f"<div class='resp' data-id='{rid}'><h3>Explanation {n} "
                f"<small>({rid})</small></h3><p class='ex'>{e(r['explanation'])}</p><table>"
            )
            for crit, question in CRITERIA.items():
                radios = "".join(
                    f"<label><input type='radio' name='{rid}__{crit}' value='{v}'>{v}</label> "
                    for v in range(1, scale + 1)
                )
                parts.append(f"<tr><td class='q'>{e(question)}</td><td>{radios}</td></tr>")
            parts.append("</table></div>")
        parts.append("</div>")
    header = json.dumps([*ID_COLUMNS, *CRITERIA, "rater"])
    data = json.dumps([{k: r[k] for k in ID_COLUMNS} for r in rows], ensure_ascii=False).replace(
        "</", "<\\/"
    )
    crits = json.dumps(list(CRITERIA))
    parts += [
        "</form><p><button id='dl' type='button'>Download answers (CSV)</button> "
        "<span id='left'></span></p>",
        "<script>",
        f"const HEADER={header};const ROWS={data};const CRITERIA={crits};",
        "function cell(v){v=String(v??'');return /[\",\\n\\r]/.test(v)?"
        "'\"'+v.replace(/\"/g,'\"\"')+'\"':v;}",
        "function value(id,c){const x=document.querySelector("
        "`input[name=\"${id}__${c}\"]:checked`);return x?x.value:'';}",
        "document.getElementById('dl').onclick=function(){",
        " const rater=document.getElementById('rater').value.trim();let missing=0;",
        " const lines=[HEADER.map(cell).join(',')];",
        " for(const r of ROWS){const vals=CRITERIA.map(c=>value(r.response_id,c));",
        "  missing+=vals.filter(v=>!v).length;",
        "  lines.push([r.response_id,r.task,r.history,r.item,r.explanation,...vals,rater]"
        ".map(cell).join(','));}",
        " document.getElementById('left').textContent=missing?missing+' ratings left empty':'';",
        " const blob=new Blob([lines.join('\\n')+'\\n'],{type:'text/csv'});",
        " const a=document.createElement('a');a.href=URL.createObjectURL(blob);",
        " a.download='answers-'+(rater||'rater')+'.csv';a.click();};",
        "</script></body></html>",
    ]
    return "\n".join(parts)


# --------------------------------------------------------------------- import


def read_key(path: str | Path) -> dict[str, Any]:
    """Load and check a ``key.json`` written by :func:`export_questionnaire`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            "key file not found (expected the key.json written with the form)", path=path
        )
    try:
        key = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DataError(f"not valid JSON: {exc}", path=path) from None
    if not isinstance(key, dict) or key.get("format") != KEY_FORMAT:
        raise DataError(f"not a questionnaire key (expected format {KEY_FORMAT!r})", path=path)
    if not isinstance(key.get("responses"), dict) or not key["responses"]:
        raise DataError("the key lists no responses", path=path, field="responses")
    return key


def read_answers(
    path: str | Path, key: dict[str, Any], *, rater: str | None = None
) -> list[dict[str, Any]]:
    """Validated answers of one filled CSV: ``{rater, response_id, system, <criteria>}``.

    Blank cells are missing ratings (skipped); anything else must be a whole number from
    1 to the key's scale. Errors name the file, line and column.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("answers file not found", path=path)
    scale = int(key.get("scale", 5))
    criteria = list(key.get("criteria", list(CRITERIA)))
    text = path.read_text(encoding="utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    if not header:
        raise DataError("empty file (expected a header row)", path=path, line=1)
    missing = [c for c in ("response_id", *criteria) if c not in header]
    if missing:
        raise DataError(
            f"missing column(s) {', '.join(missing)}; expected response_id and the "
            f"criteria {', '.join(criteria)}",
            path=path,
            line=1,
        )
    out = []
    default_rater = rater or path.stem
    for row in reader:
        line = reader.line_num
        if None in row:
            raise DataError(
                f"{len(row[None]) + len(header)} cells but the header has {len(header)}",
                path=path,
                line=line,
            )
        if not any((v or "").strip() for v in row.values()):
            continue
        rid = (row.get("response_id") or "").strip()
        if not rid:
            raise DataError("empty response id", path=path, line=line, field="response_id")
        info = key["responses"].get(rid)
        if info is None:
            raise DataError(
                f"unknown response id {rid!r}: not in the key (was the form exported with "
                "another key.json?)",
                path=path,
                line=line,
                field="response_id",
            )
        rec: dict[str, Any] = {
            "rater": (row.get("rater") or "").strip() or default_rater,
            "response_id": rid,
            "system": info["system"],
            "line": line,
        }
        for c in criteria:
            raw = (row.get(c) or "").strip()
            if not raw:
                rec[c] = None
                continue
            try:
                v = float(raw)
            except ValueError:
                v = float("nan")
            if not (v == v and v.is_integer() and 1 <= v <= scale):
                raise DataError(
                    f"expected a whole number from 1 to {scale} (or blank), got {raw!r}",
                    path=path,
                    line=line,
                    field=c,
                )
            rec[c] = int(v)
        out.append(rec)
    return out


def score_questionnaire(answer_files: Sequence[str | Path], key_path: str | Path) -> dict[str, Any]:
    """Per-system mean ± std and N per criterion (and over all criteria) from filled CSVs."""
    if not answer_files:
        raise DataError("no answer files given")
    key = read_key(key_path)
    criteria = list(key.get("criteria", list(CRITERIA)))
    answers: list[dict[str, Any]] = []
    seen: dict[tuple[str, str], str] = {}
    for f in answer_files:
        for rec in read_answers(f, key):
            k = (rec["rater"], rec["response_id"])
            if k in seen:
                raise DataError(
                    f"rater {rec['rater']!r} rated response {rec['response_id']} twice "
                    f"(first at {seen[k]})",
                    path=f,
                    line=rec["line"],
                    field="response_id",
                )
            seen[k] = f"{f}:{rec['line']}"
            answers.append(rec)
    rated = [a for a in answers if any(a[c] is not None for c in criteria)]
    if not rated:
        raise DataError(
            f"no ratings found in {', '.join(str(f) for f in answer_files)}: every "
            "criterion cell is blank"
        )
    systems = list(key.get("systems") or sorted({a["system"] for a in rated}))
    table: dict[str, dict[str, Any]] = {}
    for s in systems:
        mine = [a for a in rated if a["system"] == s]
        row = {c: summarize([a[c] for a in mine]) for c in criteria}
        row["overall"] = summarize([a[c] for a in mine for c in criteria])
        table[s] = row
    return {
        "criteria": criteria,
        "scale": key.get("scale", 5),
        "raters": sorted({a["rater"] for a in rated}),
        "responses_rated": len(rated),
        "missing_cells": sum(a[c] is None for a in rated for c in criteria),
        "systems": table,
    }
