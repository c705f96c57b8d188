"""Human questionnaire: blind export, round trip with known means, and bad answer files."""

import csv
import json

import pytest

from whyrec.errors import DataError
from whyrec.evaluate.explanations import CRITERIA, export_questionnaire, score_questionnaire

from .explanation_helpers import case

SYSTEMS = ("lane", "baseline", "template")


def _cases():
    out = []
    for item, title in ((3, "Aladdin (1992)"), (6, "Shawshank Redemption, The (1994)")):
        for k, s in enumerate(SYSTEMS):
            out.append(
                case(f"Reason {k} for {title} <script>alert(1)</script>", system=s, item=item,
                     title=title)
            )  # fmt: skip
    # a third task where the baseline failed: left out, every task shows every system
    fargo = {"item": 2, "title": "Fargo (1996)"}
    out += [
        case("One reason for Fargo", system="lane", **fargo),
        case(None, system="baseline", **fargo),
        case("Another reason for Fargo", system="template", **fargo),
    ]
    return out


@pytest.fixture
def exported(tmp_path):
    files = export_questionnaire(_cases(), tmp_path / "q", seed=3)
    return files, json.loads(files.key.read_text())


def _read(path):
    with open(path, encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _write(path, rows, fields=None):
    fields = fields or list(rows[0].keys())
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return path


def test_export_is_blind_and_complete(exported):
    files, key = exported
    rows = _read(files.csv)
    assert files.tasks == 2 and files.responses == 6 and len(rows) == 6
    assert list(rows[0]) == ["response_id", "task", "history", "item", "explanation", *CRITERIA]
    # the rater-facing files never name a system or a user; the key does
    for path in (files.csv, files.html):
        text = path.read_text().lower()
        assert not any(s in text for s in SYSTEMS) and "u1" not in text
        assert "reason for fargo" not in text  # the incomplete task
    ids = [r["response_id"] for r in rows]
    assert len(set(ids)) == 6 and set(ids) == set(key["responses"])
    assert {v["system"] for v in key["responses"].values()} == set(SYSTEMS)
    assert all(r[c] == "" for r in rows for c in CRITERIA)
    # ids carry no order: the systems do not appear in the same order in both tasks
    order = [[key["responses"][r["response_id"]]["system"] for r in rows if r["task"] == t]
             for t in ("T001", "T002")]  # fmt: skip
    assert sorted(order[0]) == sorted(order[1]) == sorted(SYSTEMS)


def test_html_form_escapes_text_and_has_every_question(exported):
    files, key = exported
    page = files.html.read_text()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
    for rid in key["responses"]:
        for c in CRITERIA:
            assert f"name='{rid}__{c}'" in page
    assert "Download answers" in page and "http" not in page.split("<script>")[0]


def test_round_trip_gives_per_system_means(exported, tmp_path):
    files, key = exported
    # rater 1 gives lane 5, baseline 3, template 1 on everything; rater 2 gives 4, 2, 2
    given = {"r1": {"lane": 5, "baseline": 3, "template": 1},
             "r2": {"lane": 4, "baseline": 2, "template": 2}}  # fmt: skip
    paths = []
    for rater, by_sys in given.items():
        rows = _read(files.csv)
        for r in rows:
            s = key["responses"][r["response_id"]]["system"]
            for c in CRITERIA:
                r[c] = str(by_sys[s])
        rows[0]["detail"] = ""  # one missing rating is allowed and counted
        paths.append(_write(tmp_path / f"{rater}.csv", rows))
    res = score_questionnaire(paths, files.key)
    assert res["raters"] == ["r1", "r2"] and res["responses_rated"] == 12
    assert res["missing_cells"] == 2
    lane = res["systems"]["lane"]
    assert lane["clarity"] == {"mean": 4.5, "std": pytest.approx(0.5773502692), "n": 4}
    assert res["systems"]["template"]["overall"]["mean"] == pytest.approx(1.5)
    assert res["systems"]["baseline"]["trust"]["mean"] == pytest.approx(2.5)


def _filled(files, tmp_path, edit, name="bad.csv"):
    rows = _read(files.csv)
    for r in rows:
        for c in CRITERIA:
            r[c] = "3"
    fields = list(rows[0].keys())
    edit(rows, fields)
    return _write(tmp_path / name, rows, fields)


def test_unknown_response_id_names_file_line_and_field(exported, tmp_path):
    files, _ = exported
    path = _filled(files, tmp_path, lambda rows, f: rows[2].update(response_id="NOPE42"))
    with pytest.raises(DataError) as exc:
        score_questionnaire([path], files.key)
    msg = str(exc.value)
    assert f"{path}:4" in msg and "field 'response_id'" in msg and "NOPE42" in msg


@pytest.mark.parametrize("value", ["7", "0", "good", "3.5"])
def test_out_of_range_or_non_numeric_rating(exported, tmp_path, value):
    files, _ = exported
    path = _filled(files, tmp_path, lambda rows, f: rows[0].update(logic=value))
    with pytest.raises(DataError) as exc:
        score_questionnaire([path], files.key)
    msg = str(exc.value)
    assert f"{path}:2" in msg and "field 'logic'" in msg and "from 1 to 5" in msg


def test_missing_column_duplicate_rating_and_empty_file(exported, tmp_path):
    files, _ = exported

    def drop_trust(rows, fields):
        fields.remove("trust")
        for r in rows:
            r.pop("trust")

    path = _filled(files, tmp_path, drop_trust)
    with pytest.raises(DataError, match=r":1: missing column\(s\) trust"):
        score_questionnaire([path], files.key)

    path = _filled(files, tmp_path, lambda rows, f: rows.append(dict(rows[0])), "dup.csv")
    with pytest.raises(DataError, match="rated response .* twice"):
        score_questionnaire([path], files.key)

    def blank(rows, fields):
        for r in rows:
            for c in CRITERIA:
                r[c] = ""

    path = _filled(files, tmp_path, blank, "blank.csv")
    with pytest.raises(DataError, match="no ratings found"):
        score_questionnaire([path], files.key)


def test_bad_key_file(exported, tmp_path):
    files, _ = exported
    bad = tmp_path / "key.json"
    bad.write_text(json.dumps({"responses": {}}))
    with pytest.raises(DataError, match="not a questionnaire key"):
        score_questionnaire([files.csv], bad)
    with pytest.raises(DataError, match="key file not found"):
        score_questionnaire([files.csv], tmp_path / "missing.json")


def test_nothing_to_export_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no task has an explanation from every system"):
        export_questionnaire([case(None, system="a"), case("text", system="b")], tmp_path)
