"""The offline plots template inlines the vega libraries DVC's renderer is written for, and DVC is told to use it."""

import configparser
import re

from cola.paths import ROOT

TEMPLATE = ROOT / "dvc_plots_template" / "offline.html"


def test_template_inlines_the_versions_dvc_render_loads_from_its_cdn():
    from dvc_render.vega import VegaRenderer

    wanted = dict(re.findall(r"npm/([\w-]+)@([\d.]+)", VegaRenderer.SCRIPTS))
    inlined = dict(re.findall(r'<script data-library="([\w-]+)@([\d.]+)">', TEMPLATE.read_text()))
    assert inlined == wanted, "dvc-render changed its vega versions: python dvc_plots_template/build.py"


def test_dvc_config_points_at_the_template():
    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc" / "config")
    assert (ROOT / ".dvc" / config["plots"]["html_template"]).resolve() == TEMPLATE
