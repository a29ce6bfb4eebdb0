"""Markdown report of a pipeline run against a base revision, for the PR comment (CML `cml comment update`).

    python scripts/pr_report.py --base origin/main --out report.md

Sections: parameter changes (`dvc params diff --md`), serving latency from the benchmark metrics, metric changes
(`dvc metrics diff --md`), and every plot declared in dvc.yaml rendered to PNG for both revisions (DVC's own
Vega-Lite templates, rendered offline by vl-convert). Images go next to the report and are linked relatively, which
is how `cml comment update` finds and uploads them. Run it from the repository root after `dvc repro`.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

LATENCY = re.compile(r"latency|_ms\b|\bms\b|throughput|rps", re.IGNORECASE)


class ReportError(RuntimeError):
    pass


class Dvc:
    """Runs the dvc CLI; keeps what DVC warned about (e.g. a revision without metrics) for the report."""

    def __init__(self):
        self.warnings: list[str] = []

    def __call__(self, *args: str) -> str:
        command = ["dvc", *args]
        result = subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True)
        if result.returncode != 0:
            raise ReportError(
                f"`{' '.join(command)}` failed:\n{result.stderr.strip()}\n"
                "Run from the repository root with the base revision fetched (CI: actions/checkout with fetch-depth: 0)."
            )
        self.warnings += [
            line for line in result.stderr.splitlines() if line.startswith(("WARNING", "DVC failed"))
        ]
        return result.stdout


def git_short(rev: str) -> str:
    result = subprocess.run(["git", "rev-parse", "--short", rev], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else rev


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "—" if value is None else str(value)


def latency_table(metrics_diff: dict, base: str) -> str:
    """Benchmark latencies (any metric whose file or name says benchmark/latency), with the relative change."""
    rows = []
    for path, metrics in sorted(metrics_diff.items()):
        for name, values in sorted(metrics.items()):
            if "benchmark" not in path and not LATENCY.search(name):
                continue
            old, new = values.get("old"), values.get("new")
            change = ""
            if isinstance(old, int | float) and isinstance(new, int | float) and old:
                change = f"{new - old:+.4g} ({(new - old) / abs(old):+.1%})"
            rows.append(f"| {path} | {name} | {fmt(old)} | {fmt(new)} | {change} |")
    if not rows:
        return "_No benchmark metrics in either revision (run the `benchmark` stage)._"
    header = f"| Path | Metric | {base} | this PR | Change |\n|---|---|---|---|---|\n"
    return header + "\n".join(rows)


def table_or(markdown: str, empty: str) -> str:
    """DVC prints a bare header row when nothing changed."""
    return markdown if len(markdown.strip().splitlines()) > 2 else empty


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "plot"


def render_plots(dvc: Dvc, base: str, image_dir: Path, link_prefix: str) -> list[str]:
    """PNG per plot in `dvc plots diff`, both revisions overlaid; returns markdown lines."""
    import vl_convert  # imported here: only this section needs it

    plots = json.loads(dvc("plots", "diff", base, "--json")).get("data", {})
    image_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for title, renders in plots.items():
        for index, render in enumerate(r for r in renders if r.get("type") == "vega"):
            name = f"{slug(title)}{f'-{index}' if index else ''}.png"
            try:
                png = vl_convert.vegalite_to_png(render["content"], scale=1.5)
            except Exception as exc:  # a broken plot must not cost the whole report
                lines.append(f"- {title}: could not render ({exc})")
                continue
            (image_dir / name).write_bytes(png)
            lines.append(f"#### {title}\n\n![{title}]({link_prefix}{name})\n")
    return lines or ["_No plots declared in dvc.yaml._"]


def build_report(base: str, out: Path, with_plots: bool = True) -> str:
    dvc = Dvc()
    params_md = dvc("params", "diff", base, "--md").strip()
    metrics_md = dvc("metrics", "diff", base, "--md").strip()
    metrics_all = json.loads(dvc("metrics", "diff", base, "--all", "--json") or "{}")

    sections = [
        f"## Pipeline report: this PR vs `{base}` ({git_short(base)})",
        "### Parameters changed",
        table_or(params_md, "_No parameter changes._"),
        "### Serving latency (benchmark)",
        latency_table(metrics_all, base),
        "### Metrics changed",
        table_or(metrics_md, "_No metric changed._"),
    ]
    if with_plots:
        image_dir = out.parent / f"{out.stem}-images"
        sections += ["### Plots", *render_plots(dvc, base, image_dir, f"./{image_dir.name}/")]
    if dvc.warnings:
        sections += ["### DVC warnings", "\n".join(f"- {w}" for w in dict.fromkeys(dvc.warnings))]
    return "\n\n".join(sections) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default="main", help="revision to compare with (CI: origin/<base branch>)")
    parser.add_argument("--out", type=Path, default=Path("report.md"))
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    args = parser.parse_args(argv)
    try:
        report = build_report(args.base, args.out, with_plots=not args.no_plots)
    except ReportError as exc:
        print(f"pr_report: {exc}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(f"pr_report: wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
