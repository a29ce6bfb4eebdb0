"""The / page in a real headless Chromium (Debian's `chromium`, driven by playwright; no browser download)."""

from __future__ import annotations

import shutil

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-extensions", "--no-first-run", "--mute-audio"]  # fmt: skip

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def page():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which(CHROMIUM):
        pytest.fail(
            "Debian's chromium is not installed: apt-get install chromium (bash docker/podman-setup.sh does it)"
        )
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser.new_page()
        browser.close()


def test_a_person_checks_sentences(page, live_server, predictor, tmp_path):
    page.goto(live_server + "/")
    assert page.title() == "Is this sentence acceptable English?"
    texts = ["The cat sat on the mat.", "Cat the on mat sat the.", "<b>not bold</b>"]
    page.fill("#sentences", f"{texts[0]}\n\n{texts[1]}\n{texts[2]}")
    page.click("#submit")
    page.wait_for_selector("#results:not([hidden])")
    rows = page.locator("#results tbody tr")
    assert rows.count() == 3  # the blank line is skipped
    assert rows.nth(0).locator("td").nth(0).inner_text() == "The cat sat on the mat."
    assert rows.nth(2).locator("td").nth(0).inner_text() == "<b>not bold</b>"  # shown as text, not HTML
    # the shown verdict is the bundle's decision (its decision_threshold) on each sentence's probabilities, and
    # the shown confidence is that label's probability
    probs = predictor.predict_proba(texts)
    for i, decided in enumerate(predictor.decide(probs)):
        assert rows.nth(i).locator("td").nth(1).inner_text() == predictor.labels[decided]
        shown = rows.nth(i).locator("td").nth(2).inner_text()
        assert shown.endswith(" %") and float(shown[:-2]) == pytest.approx(100 * float(probs[i, decided]), abs=0.051)
    assert page.inner_text("#version").startswith("model ")
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    assert (tmp_path / "page.png").stat().st_size > 0


def test_the_page_shows_the_servers_error_message(page, live_server):
    page.goto(live_server + "/")
    page.fill("#sentences", "x" * 1001)  # over the default 1000-character limit
    page.click("#submit")
    # selectors, not wait_for_function: a string predicate is eval()ed in the page, which its CSP (rightly) refuses
    page.wait_for_selector("#error:not(:empty)")
    assert "the limit is 1000" in page.inner_text("#error")


def test_the_page_runs_under_its_content_security_policy(page, live_server):
    """The page's inline script and style are allowed by their hashes and nothing is refused; the same page with
    one character of its script changed is refused by Chromium (so this check can fail)."""
    violations: list[str] = []
    page.on(
        "console",
        lambda message: violations.append(message.text) if "Content Security Policy" in message.text else None,
    )
    response = page.goto(live_server + "/")
    assert "script-src 'sha256-" in response.headers["content-security-policy"]
    page.fill("#sentences", "The cat sat on the mat.")
    page.click("#submit")
    page.wait_for_selector("#results:not([hidden])")
    assert violations == []

    def altered(route):  # the real answer, its CSP header unchanged, with the inline script edited
        real = route.fetch()
        route.fulfill(response=real, body=real.text().replace('"predict"', "'predict'"))

    page.route(live_server + "/", altered)
    try:
        page.goto(live_server + "/")
        page.fill("#sentences", "The cat sat on the mat.")
        page.click("#submit")  # the form's default action: a GET of the page itself, no script ran
        page.wait_for_load_state("load")
        assert any("script" in v for v in violations), violations
        assert page.locator("#results").is_hidden()
    finally:
        page.unroute(live_server + "/")
