"""Render Mermaid with the real Mermaid CLI (mmdc, .venv-tools/mermaid from .ci/install.sh) on the system Chromium,
and read back what it drew: the charts tier (tests/conftest.py "mermaid")."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from tests.aws.awsenv import REPO_ROOT

MMDC = REPO_ROOT / ".venv-tools" / "mermaid" / "node_modules" / ".bin" / "mmdc"
PUPPETEER = REPO_ROOT / ".ci" / "mermaid" / "puppeteer.json"  # system Chromium, no sandbox (root in CI)
SVG = "{http://www.w3.org/2000/svg}"


@dataclass
class Chart:
    title: str
    legend: list[str]
    plots: list[tuple[str, str, int]]  # (kind "line"/"bar", colour, points drawn), in drawing order


def mmdc(source: Path, out: Path) -> subprocess.CompletedProcess:
    """mmdc on a .mmd (one chart) or .md (every ```mermaid block -> <out stem>-<n>.svg)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [str(MMDC), "-p", str(PUPPETEER), "-q", "-i", str(source), "-o", str(out)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=out.parent)


def render_markdown(markdown: str, work: Path) -> list[Chart]:
    """Every Mermaid block of a markdown text, rendered to SVG and read back; fails on any parse error."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "in.md").write_text(markdown)
    result = mmdc(work / "in.md", work / "out" / "out.md")
    assert result.returncode == 0, result.stderr[-2000:]
    count = markdown.count("```mermaid")
    return [read_chart((work / "out" / f"out-{n}.svg").read_text()) for n in range(1, count + 1)]


def read_chart(svg: str) -> Chart:
    root = ET.fromstring(svg)
    assert root.get("aria-roledescription") == "xychart", "not an xychart (a syntax error renders as an error image)"

    def group(cls: str) -> ET.Element | None:
        return next((g for g in root.iter(f"{SVG}g") if g.get("class") == cls), None)

    title_group = group("chart-title")
    title = "".join(title_group.itertext()) if title_group is not None else ""
    legend_group = group("legend")
    legend = [t.text or "" for t in legend_group.iter(f"{SVG}text")] if legend_group is not None else []
    plots = []
    for g in root.iter(f"{SVG}g"):
        cls = g.get("class") or ""
        if cls.startswith("line-plot-"):
            path = g.find(f"{SVG}path")
            d = path.get("d")
            assert "NaN" not in d, f"{cls}: a point was not drawn ({d})"
            plots.append(("line", path.get("stroke"), d.count("L") + 1))
        elif cls.startswith("bar-plot-"):
            rects = g.findall(f"{SVG}rect")
            plots.append(("bar", rects[0].get("fill"), len(rects)))
    return Chart(title, legend, plots)
