"""`dvc plots show` opens offline: the real DVC CLI renders the committed plot data with the project's HTML template
(.dvc/config plots.html_template, dvc_plots_template/offline.html), and Debian's Chromium, with every non-file
request refused, draws every plot dvc.yaml declares."""

import os
import shutil
import subprocess

import pytest
import yaml

from cola.paths import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM = "/usr/bin/chromium"
PROJECT = ["dvc.yaml", ".dvc/config", ".dvc/.gitignore", "dvc_plots_template", "reports"]


@pytest.fixture(scope="module")
def plots_page(tmp_path_factory):
    repo = tmp_path_factory.mktemp("plots")
    for name in PROJECT:
        source, target = ROOT / name, repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy)(source, target)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    for command in (["git", "init", "-q"], ["dvc", "plots", "show", "-o", "out"]):
        result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
    return repo / "out" / "index.html"


def test_page_has_no_cdn_reference(plots_page):
    html = plots_page.read_text()
    assert "cdn.jsdelivr.net" not in html and "<script src=" not in html


def test_every_declared_plot_draws_in_chromium_without_network(plots_page, tmp_path):
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    if shutil.which(CHROMIUM) is None:
        pytest.fail("Debian's chromium is not installed: apt-get install chromium (.ci/run does)")
    declared = [next(iter(plot)) for plot in yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]]
    refused, errors = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.route(  # no network: anything but the page's own file is refused (and recorded)
            "**/*",
            lambda route: (
                route.continue_()
                if route.request.url.startswith("file://")
                else (refused.append(route.request.url), route.abort())
            ),
        )
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(plots_page.as_uri())
        charts = page.locator(".vega-embed canvas.marks, .vega-embed svg.marks")
        charts.nth(len(declared) - 1).wait_for(timeout=30_000)
        assert charts.count() == len(declared), f"{charts.count()} charts drawn, {len(declared)} declared: {declared}"
        for i in range(charts.count()):
            box = charts.nth(i).bounding_box()
            assert box and box["width"] > 100 and box["height"] > 100, f"chart {i} is {box}"
        page.screenshot(path=str(tmp_path / "plots.png"), full_page=True)
        browser.close()
    assert refused == [] and errors == [], f"requests refused: {refused}; page errors: {errors}"
