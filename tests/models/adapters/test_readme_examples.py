"""The README's "Explain the recommender you already run" examples run as written (each
where its library is installed: implicit in .venv, LensKit in .venv-lenskit)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[3] / "README.md"
SECTION = "## Explain the recommender you already run"


def blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index(SECTION)
    section = text[start : text.index("\n## ", start + 1)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.mark.slow
def test_the_implicit_example(tmp_path, monkeypatch, capsys):
    pytest.importorskip("implicit", reason="implicit is not installed (whyrec[implicit])")
    monkeypatch.chdir(tmp_path)
    code = next(b for b in blocks() if "AlternatingLeastSquares" in b)
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(" — We suggest " in line for line in lines)
    from whyrec.models import load_model

    again = load_model(tmp_path / "als-ml100k")
    model = scope["model"]
    assert (
        again.recommend(model.user_index("196"), k=3).item_ids
        == model.recommend(model.user_index("196"), k=3).item_ids
    )


@pytest.mark.slow
def test_the_lenskit_example(tmp_path, monkeypatch):
    pytest.importorskip("lenskit", reason="LensKit is not installed (whyrec[lenskit])")
    monkeypatch.chdir(tmp_path)
    code = next(b for b in blocks() if "ItemKNNScorer" in b)
    exec(compile(code, str(README), "exec"), {})
    from whyrec.explain.explainer import ExplanationPipeline
    from whyrec.models import load_model

    model = load_model(tmp_path / "lenskit-knn")
    (ex,) = ExplanationPipeline.from_run(model).recommend_and_explain(
        model.user_index("196"), k=1, use_llm=False
    )
    assert "because you watched" in ex.reason
