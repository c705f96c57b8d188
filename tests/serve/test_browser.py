"""The web page in headless Debian Chromium (Playwright), against a real uvicorn server.

Skips only when /usr/bin/chromium is missing on a developer machine; with ``CI`` set a
missing browser is a failure (CI installs it: scripts/ensure_chromium.sh).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .pg_fixtures import pg_server, pg_url  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SPOKEN = Path(__file__).resolve().parents[1] / "explain" / "fixtures" / "spoken_titles.json"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        msg = f"{CHROMIUM} not found; install it with scripts/ensure_chromium.sh (apt-get)"
        if _in_ci():
            pytest.fail("CI: " + msg)
        pytest.skip(msg)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if _in_ci():
            pytest.fail("CI: playwright is not installed (pip install 'whyrec[dev]')")
        pytest.skip("playwright is not installed (pip install 'whyrec[dev]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield b
        b.close()


def new_page(browser, *, console_errors: bool = False):
    """A 1200x1300 page and the list that collects its script errors (and, with
    ``console_errors``, the errors it logs)."""
    page = browser.new_page(viewport={"width": 1200, "height": 1300})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    if console_errors:
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    return page, errors


def open_ready(page, url: str) -> None:
    """Load the page and wait until its start-up requests are done."""
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)


def test_page_shows_recommendations_and_reasons(runs, make_settings, live_server, browser):
    from whyrec.serve import create_app

    srv = live_server(create_app(make_settings(runs["lane"])))
    page, errors = new_page(browser, console_errors=True)
    open_ready(page, srv.url + "/")
    assert "lane" in page.inner_text("#model-info")
    options = page.eval_on_selector_all("#user-list option", "els => els.map(e => e.value)")
    assert len(options) == 45 and "u3" in options

    page.fill("#user-input", "u3")
    page.click("#show")
    page.wait_for_selector("#recs li.rec .reason", timeout=30_000)
    recs = page.query_selector_all("#recs li.rec")
    assert len(recs) == 5  # the default k on the page
    first_title = recs[0].query_selector(".title").inner_text()
    reason = recs[0].query_selector(".reason").inner_text()
    assert first_title in reason  # the grounded reason names the item
    # the page names titles as the reasons do (whyrec.explain.grounding.spoken_title)
    cases = json.loads(SPOKEN.read_text())["cases"]
    assert page.evaluate("cases => cases.map(([t]) => spoken(t))", cases) == [s for _, s in cases]
    assert recs[0].query_selector(".badge").inner_text() == "template"
    assert len(page.query_selector_all("#prefs .pref")) == 5
    assert len(page.query_selector_all("#heatmap tbody tr")) == 5
    assert len(page.query_selector_all("#history li")) == 9

    # "why this item?" for an item the recommender did not pick
    page.fill("#why-input", "Film 30 (2020)")
    page.click("#why-button")
    page.wait_for_selector("#why .reason", timeout=30_000)
    assert "Film 30 (2020)" in page.inner_text("#why")
    assert "ranks it #" in page.inner_text("#why h3")

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "serve-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert not errors, errors
    page.close()


def test_page_reads_its_own_writes_on_another_replica(
    runs,
    make_settings,
    live_server,
    browser,
    pg_url,  # noqa: F811
):
    """The page adds an item to the user's history on replica A; its reads are sent to
    replica B (rerouted by the test, as a load balancer may): they carry the write's
    consistency token, and B's answer shows the write."""
    import re

    from whyrec.serve import create_app

    settings = make_settings(runs["sasrec"], store=None, store_url=pg_url, precompute=False)
    a = live_server(create_app(settings))
    b = live_server(create_app(settings))
    page, errors = new_page(browser)
    sent: list[str | None] = []

    def to_b(route):  # user-state reads go to the other replica, headers and all
        sent.append(route.request.all_headers().get("x-whyrec-after"))
        route.fulfill(response=route.fetch(url=route.request.url.replace(a.url, b.url)))

    page.route(re.compile(r".*/v1/users/[^/?]+/(history|recommendations|preferences).*"), to_b)
    open_ready(page, a.url + "/")
    page.fill("#user-input", "u3")
    page.click("#show")
    page.wait_for_selector("#recs li.rec .add-history", timeout=30_000)
    assert len(page.query_selector_all("#history li .badge.new")) == 0
    assert sent and not any(sent)  # no write yet: no token
    n = len(sent)
    first = page.query_selector("#recs li.rec")
    title = first.query_selector(".title").inner_text()
    first.query_selector(".add-history").click()
    page.locator("#status", has_text="added ").wait_for(timeout=30_000)
    newest = page.query_selector("#history li")
    assert title in newest.inner_text() and newest.query_selector(".badge.new") is not None
    assert len(sent) > n and all(t and t.isdigit() for t in sent[n:]), sent
    assert "(10 items)" in page.inner_text("#history-count")  # 9 from training + 1
    assert not errors, errors
    page.close()


def test_page_asks_for_a_key_when_auth_is_on(runs, make_settings, live_server, browser):
    from whyrec.serve import create_app

    srv = live_server(create_app(make_settings(runs["lane"], api_keys="page-key")))
    page = browser.new_page()
    page.goto(srv.url + "/")
    page.wait_for_selector("#auth:not([hidden])", timeout=30_000)
    page.wait_for_function("document.getElementById('status').textContent.includes('API key')")
    page.fill("#api-key", "page-key")
    page.dispatch_event("#api-key", "change")
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    page.fill("#user-input", "u1")
    page.click("#show")
    page.wait_for_selector("#recs li.rec .reason", timeout=30_000)
    page.close()


class HeldLLM:
    """An OpenAI-compatible endpoint on 127.0.0.1 that holds every request until
    released, then answers HTTP 500: an LLM that takes as long as the test wants."""

    def __init__(self) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from .conftest import free_port

        self.release = threading.Event()
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.requests += 1
                outer.release.wait(120)
                data = json.dumps({"error": {"message": "held, then failed"}}).encode()
                try:
                    self.send_response(500)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def env(self) -> dict[str, str]:
        host, port = self.httpd.server_address[:2]
        return {
            "WHYREC_LLM_BACKEND": "openai",
            "WHYREC_LLM_MODEL": "held-1",
            "WHYREC_LLM_BASE_URL": f"http://{host}:{port}/v1",
            "WHYREC_LLM_MAX_RETRIES": "0",
            "WHYREC_LLM_TIMEOUT": "120",
            "WHYREC_LLM_CACHE": "false",
            "WHYREC_LLM_CONCURRENCY": "1",
        }

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def test_page_keeps_polling_while_the_llm_writes(
    runs, make_settings, live_server, browser, monkeypatch
):
    """Issue 21: the page gave up after 40 polls (~2 min) and showed the template for
    good. Now it polls while a reason is pending, says so, and can stop and resume."""
    from whyrec.serve import create_app

    llm = HeldLLM()
    try:
        for name, value in llm.env().items():
            monkeypatch.setenv(name, value)
        app = create_app(make_settings(runs["lane"], llm=True, explain_budget_s=0.0))
        srv = live_server(app)
        page, errors = new_page(browser)
        open_ready(page, srv.url + "/?poll_ms=100")
        # /health says "unknown" before the first LLM call; the page says it in words
        assert "(not asked yet)" in page.inner_text("#model-info")
        page.fill("#user-input", "u3")
        page.click("#show")
        page.wait_for_selector("#recs-wait[data-state='still-writing']", timeout=30_000)
        assert "still writing 5 reasons" in page.inner_text("#recs-wait")
        # past the old cap of 40 polls, and still asking
        page.wait_for_function(
            "() => Number(document.getElementById('recs-wait').dataset.checks) > 45", timeout=60_000
        )
        assert len(page.query_selector_all("#recs .pending")) == 5
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "serve-page-writing.png"), full_page=True)

        # stop: no more requests from the page
        page.click("#recs-wait .wait-stop")
        page.wait_for_selector("#recs-wait[data-state='stopped']")
        checks = page.get_attribute("#recs-wait", "data-checks")
        page.wait_for_timeout(1000)
        assert page.get_attribute("#recs-wait", "data-checks") == checks
        assert page.inner_text("#recs-wait .wait-stop") == "Check again"

        # resume, then the LLM finishes (here: fails) and the page stops by itself
        page.click("#recs-wait .wait-stop")
        page.wait_for_selector(
            "#recs-wait[data-state='writing'], #recs-wait[data-state='still-writing']"
        )
        llm.release.set()
        page.wait_for_selector("#recs-wait", state="hidden", timeout=60_000)
        assert not page.query_selector_all("#recs .pending")
        notes = page.inner_text("#recs")
        assert "the LLM's attempt failed" in notes
        assert llm.requests >= 1
        assert not errors, errors
        page.close()
    finally:
        llm.close()


LONG_TITLE = "W" * 5000  # one unbroken word: once made the page 55,091 px wide
SPOOF_TITLE = "Harmless \u202egpj.exe Movie (1999)"  # once shown as "Harmless exe.jpg ..."


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """A real LANE run whose catalogue holds a 5,000-character title and a title with a
    right-to-left override, watched by every user (so history, recommendations and the
    heatmap all show them)."""
    import numpy as np
    import pandas as pd

    from whyrec.data import RawData, build_dataset
    from whyrec.embed import encoder_from_config
    from whyrec.explain.pipeline import extract_preferences, train_lane

    from .conftest import ENCODER

    rng = np.random.default_rng(3)
    titles = [LONG_TITLE, SPOOF_TITLE] + [f"Film {k} \u2067(isolate)\u2069" for k in range(2, 16)]
    rows = []
    for u in range(12):
        seen = [0, 1] + [int(k) for k in rng.permutation(np.arange(2, 16))[:5]]
        rows += [(f"u{u}", f"i{k}", t) for t, k in enumerate(seen)]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    items = pd.DataFrame({"item_id": [f"i{k}" for k in range(16)], "title": titles,
                          "genres": ["Drama \u202eamarD"] * 16})  # fmt: skip
    ds = build_dataset(RawData(inter, items), name="hostile-page")
    root = tmp_path_factory.mktemp("hostile_page")
    ds.save(root / "data")
    pset = extract_preferences(
        ds, client=None, encoder=encoder_from_config(ENCODER), llm_users=0,
        store=root / "prefs.sqlite", progress=False,
    )  # fmt: skip
    train_lane(
        ds, pset, out=root / "lane", progress=False, dim=16, max_len=8, epochs=1,
        encoder=ENCODER, batch_size=16, seed=0,
    )  # fmt: skip
    return root / "lane"


def test_hostile_titles_keep_the_page_narrow_and_in_order(
    hostile_run, make_settings, live_server, browser
):
    from whyrec.serve import create_app

    srv = live_server(create_app(make_settings(hostile_run)))
    page, errors = new_page(browser)
    open_ready(page, srv.url + "/")
    page.fill("#user-input", "u0")
    page.click("#show")
    page.wait_for_selector("#recs li.rec .reason", timeout=30_000)
    page.wait_for_selector("#history li", timeout=30_000)
    # "why this item?" on the long title: its reason and heading show it too
    page.fill("#why-input", SPOOF_TITLE)
    page.click("#why-button")
    page.wait_for_selector("#why .reason", timeout=30_000)

    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1200, f"page is {width} px wide"
    widest = page.evaluate(
        "Math.max(...[...document.querySelectorAll('body *')].map(e => e.scrollWidth))"
    )
    assert widest <= 1200, f"an element is {widest} px wide"

    text = page.inner_text("body")
    bidi = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
    assert not any(ch in text for ch in bidi)
    history = page.inner_text("#history")
    assert "Harmless \\u202egpj.exe Movie (1999)" in history  # visible, in its place
    assert "W" * 299 + "…" in history  # cut with "…"
    assert "W" * 301 not in text
    assert "\\u202egpj.exe" in page.inner_text("#why")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "serve-page-hostile-titles.png"), full_page=True)
    assert not errors, errors
    page.close()


def test_page_on_an_outside_model_names_it_and_explains_from_history(
    team_model, runs, make_settings, live_server, browser
):
    from whyrec.serve import create_app

    settings = make_settings(team_model, dataset=str(runs["root"] / "data"))
    srv = live_server(create_app(settings))
    page, errors = new_page(browser)
    open_ready(page, srv.url + "/")
    assert "outside model (callable)" in page.inner_text("#model-info")
    page.fill("#user-input", "u3")
    page.click("#show")
    page.wait_for_selector("#recs li.rec .reason", timeout=30_000)
    # no preferences: LANE's weights hint is hidden, the note says what reasons cite
    assert not page.is_visible("#prefs-hint")
    assert "has no preferences" in page.inner_text("#prefs")
    recs = page.query_selector_all("#recs li.rec")
    assert recs and "because you watched" in recs[0].query_selector(".reason").inner_text()
    assert not errors, errors
    page.close()
