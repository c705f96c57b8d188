"""The harness end to end with the real components: SmolLM2-135M (llama.cpp) writes and
judges, MiniLM scores, on a tiny LANE model with one user.

A 135M model writes weak text and judges poorly; what must hold whatever it writes: every
case has a text or a recorded failure, the LANE reason is the LLM's or the flagged
template, judges give grades in 0-3 or record a failure, and every figure names the
model behind it.
"""

import json

import pytest

from whyrec.evaluate.explanations import ExplanationReport, evaluate_explanations

from .explanation_helpers import minilm, tiny_dataset, tiny_lane

pytestmark = pytest.mark.slow


def test_harness_with_the_embedded_model(tmp_path):
    from whyrec.llm import LLMClient

    ds = tiny_dataset()
    model = tiny_lane(ds)
    # n_threads comes from WHYREC_LLM_N_THREADS when set (CI: default)
    client = LLMClient.from_settings(cache=False, max_reasks=0, n_ctx=2048)  # no re-asks: time
    try:
        rep = evaluate_explanations(
            model, client=client, dataset=ds, encoder=minilm(), user_indices=[0],
            low_rank=8, pairs=[("lane", "baseline")],
        )  # fmt: skip
    finally:
        client.close()
    assert rep.writer.startswith("SmolLM2") and rep.judge == rep.writer
    assert len(rep.cases) == 6  # 3 systems x (top, low)
    for c in rep.cases:
        if c.system == "lane":
            assert c.source in ("llm", "template")
            assert c.ok and (c.source == "llm" or c.problems)  # a fallback says why
            if c.source == "llm":
                assert c.likelihood in ("Low", "Medium", "High")
                assert c.writer.startswith("SmolLM2")
        elif c.system == "baseline":
            assert c.ok or c.source == "failed"
        if c.ok:
            g = c.details["rubric"]
            assert g["score"] in (0, 1, 2, 3) or (g["score"] is None and g["problems"])
            assert g["model"].startswith("SmolLM2") or g["score"] is None
            tg = c.metrics["title_grounding"]
            assert tg is None or 0 <= tg <= 1
            assert c.metrics["words"] > 0
    assert {r["criterion"] for r in rep.pairwise} == {
        "informativeness", "persuasiveness", "helpfulness",
    }  # fmt: skip
    for r in rep.pairwise:
        assert r["x"] == "lane" and r["y"] == "baseline" and r["n"] + r["failed"] == 2
    # the template states the model's own evidence for the item: the claim verifier
    # supports every sentence, and removing what it cites beats the random control
    assert rep.value("template", "verified_sentences") == 1.0
    assert rep.row("template", "necessity_win")["n"] >= 1
    assert rep.config["bertscore_level"] == "token"
    back = ExplanationReport.load(rep.save(tmp_path / "r.json"))
    assert json.dumps(back.rows) == json.dumps(json.loads(json.dumps(rep.rows)))
