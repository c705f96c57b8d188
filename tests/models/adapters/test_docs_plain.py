"""The Python example of docs/outside-models.md (a team's own function) runs as written
on MovieLens-100k and explains with the function's own evidence."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[3] / "docs" / "outside-models.md"


def python_blocks(heading: str) -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    start = text.index(f"## {heading}")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end > 0 else None]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.mark.slow
def test_the_function_example_runs(capsys):
    (code,) = python_blocks("Your own model: a Python function or a TorchScript file")
    scope: dict = {}
    exec(compile(code, str(DOC), "exec"), scope)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(" — We suggest " in line for line in lines)
    model = scope["model"]
    first = model.recommend(model.user_index("196"), k=1)
    assert lines[0].startswith(first.titles[0])
