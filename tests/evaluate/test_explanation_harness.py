"""The comparison harness and its command line on a tiny LANE model.

The LLM here is scripted (its replies are fixed JSON) so the test can check the
harness's bookkeeping exactly: which cases exist, N per metric, model names, the
judges' aggregation and the saved files. The real local model runs the same harness in
test_explanation_real_model.py.
"""

import csv
import json

import pytest
from typer.testing import CliRunner

from whyrec.cli import app
from whyrec.errors import ConfigError, DataError
from whyrec.evaluate.explanations import ExplanationReport, evaluate_explanations, load_references

from .explanation_helpers import pair, scripted_client, tiny_dataset, tiny_lane

runner = CliRunner()


@pytest.fixture(scope="module")
def ds():
    return tiny_dataset()


@pytest.fixture(scope="module")
def model(ds):
    return tiny_lane(ds)


def _block(content, name):
    import re

    found = re.search(rf'<data name="{name}">\n(.*)\n</data>', content)
    return json.loads(found.group(1)) if found else []


def cot(messages):
    content = messages[-1]["content"]
    m = len(_block(content, "tastes"))
    infl = _block(content, "influential")
    text = f"You watched {infl[0]}, which raised its score." if infl else "A film to try."
    return json.dumps(
        {
            "preference_reasons": ["seen in the history"] * m,
            "item_summary": "A film in the user's favourite group",
            "fitness": [9, 2, 1, 5, 3][:m],
            "likelihood": "High",
            "likelihood_reason": "fits the top preference",
            "explanation": text,
        }
    )


def writer_reply(messages):
    system = messages[0]["content"]
    if "suggested an item" in system:  # LANE's chain of thought
        return cot(messages)
    return json.dumps({"explanation": "You watched many films like this one, so try it."})


def judge_reply(messages):
    system = messages[0]["content"]
    if "You review explanations" in system:
        return json.dumps({"reasoning": "Plausible and on topic.", "score": 2})
    return pair("A")  # a judge that always prefers the first slot


def test_harness_end_to_end_with_scripted_llms(ds, model, tmp_path):
    writer, wb = scripted_client(default=writer_reply, model="scripted-writer-1")
    judge, jb = scripted_client(default=judge_reply, model="scripted-judge-1")
    rep = evaluate_explanations(
        model, client=writer, judge_client=judge, dataset=ds, users=2, low_rank=6, seed=1
    )
    assert rep.writer == "scripted-writer-1" and rep.judge == "scripted-judge-1"
    assert rep.systems == ["lane", "baseline", "template"]
    assert len(rep.cases) == 2 * 2 * 3
    # writer: one chain of thought and one baseline per (user, item)
    assert len(wb.calls) == 8
    # judge: 12 rubric grades + 3 pairs x 4 tasks x 2 orders
    assert len(jb.calls) == 12 + 24
    for s in rep.systems:
        assert rep.row(s, "words")["n"] == 4 and rep.value(s, "rubric") == 2.0
    low = [c for c in rep.cases if c.position == "low"]
    assert all(c.rank == 6 for c in low)
    # every system of a task is judged against the same evidence
    by_task = {}
    for c in rep.cases:
        by_task.setdefault(c.task, []).append(c)
    for group in by_task.values():
        assert len({json.dumps(c.weights) for c in group}) == 1
    # the scripted CoT always says High: right for top items, wrong for low ones
    assert rep.value("lane", "likelihood_concordance") == 0.5
    assert rep.row("lane", "likelihood_concordance")["n"] == 2
    assert rep.value("lane", "likelihood_expected") == 0.5
    assert rep.value("template", "likelihood_concordance") is None  # states none
    # counterfactual faithfulness: what the template cites is what moved the item; the
    # control removes as much uncited evidence
    for s in ("lane", "template"):
        row = rep.row(s, "necessity_win")
        assert row["n"] >= 1 and 0.0 <= row["mean"] <= 1.0
        assert rep.row(s, "cf_control_rank_drop")["n"] == row["n"]
    assert rep.value("template", "verified_sentences") == 1.0
    assert set(rep.extra["boilerplate"]) == {"lane", "baseline", "template"}
    assert rep.value("lane", "llm_written") == 1.0 and rep.value("template", "llm_written") == 0
    # the always-"A" judge: every pairwise verdict is a tie flagged as position bias
    assert len(rep.pairwise) == 9
    for row in rep.pairwise:
        assert row["ties"] == row["n"] == 4 and row["position_bias"] == 1.0
    # no references in this dataset: said so, and no BLEU rows
    assert rep.value("lane", "bleu") is None and any("no reference" in n for n in rep.notes)

    md = rep.markdown()
    assert "± " in md and "(N=4)" in md and "lane vs baseline" in md
    path = rep.save(tmp_path / "res.json")
    back = ExplanationReport.load(path)
    assert back.rows == json.loads(json.dumps(rep.rows)) and len(back.cases) == 12
    assert back.cases[0].task == rep.cases[0].task


def test_failed_writer_falls_back_and_is_counted(ds, model):
    writer, _ = scripted_client(default="no json here", model="broken-writer")
    rep = evaluate_explanations(
        model, client=writer, dataset=ds, users=1, positions=["top"], rubric=False,
        pairwise=False,
    )  # fmt: skip
    lane = [c for c in rep.cases if c.system == "lane"]
    base = [c for c in rep.cases if c.system == "baseline"]
    assert lane[0].source == "template" and lane[0].problems  # grounded fallback
    assert rep.value("lane", "llm_written") == 0.0
    assert base[0].text is None and rep.value("baseline", "failed") == 1.0
    assert rep.row("baseline", "words")["n"] == 0
    assert rep.judge is None


def test_bad_configuration(ds, model):
    with pytest.raises(ConfigError, match="need an LLM client"):
        evaluate_explanations(model, dataset=ds, users=1, systems=["lane"])
    with pytest.raises(ConfigError, match="unknown system"):
        evaluate_explanations(model, dataset=ds, users=1, systems=["gpt"])
    with pytest.raises(ConfigError, match="scores depend on the history"):
        evaluate_explanations(object(), dataset=ds)


def test_references_file(tmp_path):
    p = tmp_path / "refs.csv"
    p.write_text("user_id,item_id,reference\nu1,i3,Great fun.\nu1,i3,Loved it.\n")
    assert load_references(p) == {("u1", "i3"): ["Great fun.", "Loved it."]}
    p.write_text("user_id,item_id,reference\nu1,,Great fun.\n")
    with pytest.raises(DataError, match=r"refs.csv:2: field 'item_id': missing item_id"):
        load_references(p)
    j = tmp_path / "refs.jsonl"
    j.write_text('{"user_id": "u1", "item_id": "i3", "review_text": "Nice."}\nnot json\n')
    with pytest.raises(DataError, match=r"refs.jsonl:2"):
        load_references(j)


def test_references_feed_the_overlap_metrics(ds, model):
    u = model.user_ids[0]
    top = model.item_ids[model.recommend(0, k=1).items[0]]
    refs = {(str(u), str(top)): ["We suggest this film because it matches your tastes."]}
    rep = evaluate_explanations(
        model, dataset=ds, user_indices=[0], systems=["template"], positions=["top"],
        references=refs,
    )  # fmt: skip
    c = rep.cases[0]
    assert c.references and 0 < c.metrics["bleu"] <= 100 and 0 < c.metrics["rouge1"] <= 1
    assert rep.row("template", "corpus_bleu")["n"] == 1


def test_cli_template_only_with_questionnaire_round_trip(ds, model, tmp_path):
    data = ds.save(tmp_path / "data")
    run = model.save(tmp_path / "run")
    out = tmp_path / "res.json"
    qdir = tmp_path / "q"
    res = runner.invoke(
        app,
        ["evaluate-explanations", str(run), "--data", str(data), "--systems", "template",
         "--no-judge", "--users", "2", "--low-rank", "5", "--out", str(out),
         "--questionnaire", str(qdir)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "written by: template only" in res.output and "judged by: no LLM judge" in res.output
    assert "template" in res.output and "N=4" in res.output
    saved = json.loads(out.read_text())
    assert saved["format"] == "whyrec-explanation-eval/1" and len(saved["cases"]) == 4
    assert (qdir / "questionnaire.html").is_file() and (qdir / "key.json").is_file()

    # export again from the saved results, fill it in, score it
    res = runner.invoke(app, ["questionnaire", "export", str(out), "-o", str(tmp_path / "q2"),
                              "--seed", "1"])  # fmt: skip
    assert res.exit_code == 0, res.output
    with open(tmp_path / "q2" / "questionnaire.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r.update({c: "4" for c in ("clarity", "detail", "effectiveness", "relevance", "logic",
                                    "trust", "satisfaction")})  # fmt: skip
    filled = tmp_path / "answers.csv"
    with open(filled, "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    res = runner.invoke(app, ["questionnaire", "score", str(filled), "--key",
                              str(tmp_path / "q2" / "key.json"), "--format", "json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    scored = json.loads(res.output)
    assert scored["systems"]["template"]["overall"] == {"mean": 4.0, "std": 0.0, "n": 28}


def test_cli_rejects_bad_options(ds, model, tmp_path):
    run = model.save(tmp_path / "run")
    data = ds.save(tmp_path / "data")
    res = runner.invoke(
        app, ["evaluate-explanations", str(run), "--data", str(data), "--systems", "gpt4"]
    )
    assert res.exit_code != 0 and isinstance(res.exception, ConfigError)
    assert "--systems" in str(res.exception)
