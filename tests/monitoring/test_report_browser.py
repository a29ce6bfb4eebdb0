"""The drift report opens in a real headless Chromium (Debian's) and shows its charts, with no network."""

import shutil

import pytest

from tests.monitoring import streams
from tests.monitoring.test_monitor import run

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"


def test_report_shows_its_charts_in_chromium(tiny_reference, tmp_path):
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    if shutil.which(CHROMIUM) is None:
        pytest.fail("Debian's chromium is not installed: apt-get install chromium (.ci/run does)")
    records = streams.prediction_records(tiny_reference["predictor"], streams.streams()["long"])
    assert run(tiny_reference, records, tmp_path, "long") == 1
    report = tiny_reference["out"] / "report.html"
    screenshot = tmp_path / "drift-report.png"

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1040, "height": 900})
        requests = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(report.as_uri())
        charts = page.locator("svg.chart")
        assert charts.count() == 5
        for i in range(5):
            box = charts.nth(i).bounding_box()
            assert box and box["width"] > 300 and box["height"] > 150
        for name in ("char_length", "token_length", "confidence", "token_density"):
            bars = page.locator(f'svg[data-chart="{name}"] rect.bar')
            heights = [float(bars.nth(k).get_attribute("height")) for k in range(bars.count())]
            assert sum(h > 0 for h in heights) >= 2, f"{name} chart draws no bars"
        assert page.locator('svg[data-chart="label_ratio"] circle.point').count() >= 2
        assert page.locator(".status.drift").inner_text().startswith("DRIFT")
        assert page.locator("tr.alert").count() >= 4
        page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    assert requests == [report.as_uri()]  # self-contained: nothing fetched besides the file itself
    assert screenshot.stat().st_size > 10_000
    print(f"drift report screenshot: {screenshot}")
