"""The static questionnaire form in headless Chromium: a rater fills it in, downloads the
answers, and the downloaded CSV scores to the means they gave.

Skips only when /usr/bin/chromium or playwright is missing on a developer machine; with
``CI`` set that is a failure (CI installs both).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from whyrec.evaluate.explanations import CRITERIA, export_questionnaire, score_questionnaire

from .explanation_helpers import case

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _need(ok: bool, msg: str) -> None:
    if ok:
        return
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail("CI: " + msg)
    pytest.skip(msg)


def test_form_download_scores_back(tmp_path):
    _need(CHROMIUM.exists(), f"{CHROMIUM} not found (scripts/ensure_chromium.sh)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need(False, "playwright is not installed (pip install 'whyrec[dev]')")
    cases = [
        case(f'Reason {k}, with "quotes", commas and\na line break', system=s, item=item)
        for item in (3, 6)
        for k, s in enumerate(("lane", "baseline"))
    ]
    files = export_questionnaire(cases, tmp_path / "q", seed=0)
    key = json.loads(files.key.read_text())
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            page = browser.new_page()
            page.goto(files.html.as_uri())
            page.fill("#rater", "ana")
            for rid, info in key["responses"].items():
                value = 5 if info["system"] == "lane" else 2
                for c in CRITERIA:
                    if (rid, c) == (next(iter(key["responses"])), "trust"):
                        continue  # one question left unanswered
                    page.check(f"input[name='{rid}__{c}'][value='{value}']")
            with page.expect_download() as dl:
                page.click("#dl")
            target = tmp_path / "answers.csv"
            dl.value.save_as(target)
            assert "1 ratings left empty" in page.inner_text("#left")
        finally:
            browser.close()
    res = score_questionnaire([target], files.key)
    assert res["raters"] == ["ana"] and res["missing_cells"] == 1
    assert res["systems"]["lane"]["clarity"] == {"mean": 5.0, "std": 0.0, "n": 2}
    assert res["systems"]["baseline"]["overall"]["mean"] == 2.0
