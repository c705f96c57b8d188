"""Shared by the benchmarks: write results as JSON and as a section of docs/benchmarks.md.

Each benchmark owns one section between ``<!-- bench:NAME -->`` markers, so running
one benchmark rewrites only its own section.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
RESULTS = ROOT / "bench" / "results"

HEADER = """# Benchmarks

Every figure below comes from a run of the command shown with it, on the machine
described with it. Medians unless stated; ratios compare runs made in the same process.
Each section is rewritten by its own benchmark script; `bench/results/<name>.json`
holds the same figures.
"""


def _head() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return ""


#: the commit checked out when the benchmark started (a long run may end after new
#: commits; its figures belong to the code it imported)
START_COMMIT = _head()


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown"
    commit = START_COMMIT
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": dt.date.today().isoformat(),
        "commit": commit,
    }


def command_line() -> str:
    """The command that is running now, as a user would type it."""
    script = Path(sys.argv[0]).resolve()
    try:
        script_rel = script.relative_to(ROOT)
    except ValueError:
        script_rel = script
    line = " ".join([".venv/bin/python", str(script_rel), *sys.argv[1:]])
    # a database URL's password never goes into the docs or the results
    return re.sub(r"(://[^:/@\s]+:)[^@\s]+@", r"\1[redacted]@", line)


def write_result(name: str, payload: dict[str, Any], markdown: str) -> None:
    """Store ``payload`` as bench/results/NAME.json and ``markdown`` as NAME's doc section."""
    info = machine()
    cmd = command_line()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(
        json.dumps({"benchmark": name, "command": cmd, "machine": info, **payload}, indent=2) + "\n"
    )
    body = (
        f"<!-- bench:{name} -->\n{markdown.strip()}\n\n"
        f"Command: `{cmd}`  \n"
        f"Machine: {info['cores']} cores ({info['cpu']}), Python {info['python']}; "
        f"run on {info['date']} at commit {info['commit'] or 'uncommitted'}.\n"
        f"<!-- /bench:{name} -->"
    )
    text = DOC.read_text() if DOC.exists() else HEADER
    pattern = re.compile(
        rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S
    )
    text = (
        pattern.sub(lambda _: body, text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + body + "\n"
    )
    DOC.write_text(text)
