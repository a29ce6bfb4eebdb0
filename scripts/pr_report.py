"""Markdown report of a pipeline run against a base revision, for the PR comment (CML `cml comment update`).

    python scripts/pr_report.py --base origin/main --out report.md

On top, for a 30-second read: a table of the key figures, base → this PR — test MCC (evaluate), the served
model's MCC and size (export), its p50 latency at the smallest batch size with the same-run speedups over PyTorch
eager and pad-to-128, and its cold start (benchmark headline) — and a warning when the timings come from a
different machine than the base's (the benchmark's fingerprints differ). Below, collapsed: parameter changes
(`dvc params diff --md`), every metric change (`dvc metrics diff --md`), every plot declared in dvc.yaml rendered
to PNG for both revisions (DVC's own Vega-Lite templates, rendered offline by vl-convert) and DVC's warnings.
Images go next to the report and are linked relatively, which is how `cml comment update` finds and uploads them.
Run it from the repository root after `dvc repro`. A figure missing in a revision (no benchmark yet, an older
format) shows as "—".
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

# Paths are defined once (cola/paths.py), and the benchmark's file and key names in the module that writes them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cola import benchmark as bench  # noqa: E402
from cola import paths  # noqa: E402

EVALUATE_METRICS = paths.EVALUATE_METRICS.relative_to(paths.ROOT).as_posix()  # test metrics at the top level
EXPORT_METRICS = paths.EXPORT_METRICS.relative_to(paths.ROOT).as_posix()  # "served" = the bundle's variant
BENCHMARK_DIR = paths.BENCHMARK_REPORT_DIR.relative_to(paths.ROOT).as_posix()
BENCHMARK_METRICS = f"{BENCHMARK_DIR}/{bench.METRICS_JSON}"
BENCHMARK_RUN = f"{BENCHMARK_DIR}/{bench.RUN_JSON}"
MISSING = "—"


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
                "Run from the repository root with the base revision fetched "
                "(CI: actions/checkout with fetch-depth: 0)."
            )
        self.warnings += [line for line in result.stderr.splitlines() if line.startswith(("WARNING", "DVC failed"))]
        return result.stdout


def git_short(rev: str) -> str:
    result = subprocess.run(["git", "rev-parse", "--short", rev], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else rev


def number(value) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def key_rows(batch: int) -> list[tuple[str, str, str, str, str]]:
    """(label, metrics file, DVC's flattened key, value format, change: "abs" difference or "rel" percent)."""
    head, bs = bench.HEADLINE, f"{bench.HEADLINE}.bs{batch}"
    speedup = bench.SPEEDUP_VS
    return [
        ("Test MCC (evaluate)", EVALUATE_METRICS, "mcc", "{:.4f}", "abs"),
        ("Served MCC (export, test split)", EXPORT_METRICS, "served.mcc", "{:.4f}", "abs"),
        (f"Served p50 latency, batch {batch}", BENCHMARK_METRICS, f"{bs}.{bench.SERVED_P50}", "{:.2f} ms", "rel"),
        (f"Speedup vs PyTorch eager, batch {batch}", BENCHMARK_METRICS, f"{bs}.{speedup['pytorch']}", "{:.1f}×", "rel"),
        (
            f"Speedup vs pad-to-128, batch {batch}",
            BENCHMARK_METRICS,
            f"{bs}.{speedup['ort_fp32_pad128']}",
            "{:.1f}×",
            "rel",
        ),
        ("Served model size", EXPORT_METRICS, "served.size_mb", "{:.1f} MB", "rel"),
        ("Served cold start", BENCHMARK_METRICS, f"{head}.{bench.SERVED_COLD_START}", "{:.2f} s", "rel"),
    ]


def smallest_batch(metrics: dict) -> int:
    """The smallest batch size in the benchmark headline of either revision (1 if there is none)."""
    pattern = re.compile(rf"{re.escape(bench.HEADLINE)}\.bs(\d+)\.{re.escape(bench.SERVED_P50)}")
    sizes = [int(m[1]) for key in metrics.get(BENCHMARK_METRICS, {}) if (m := pattern.fullmatch(key))]
    return min(sizes, default=1)


def change(old: float | None, new: float | None, kind: str) -> str:
    if old is None or new is None:
        return MISSING
    if kind == "abs":
        return f"{new - old:+.4f}"
    return f"{(new - old) / abs(old):+.1%}" if old else MISSING


def key_table(metrics: dict, base: str) -> str:
    """metrics: `dvc metrics diff --all --json`, i.e. {file: {flattened key: {"old": …, "new": …}}}."""
    lines = [f"| | `{base}` | this PR | change |", "|---|---|---|---|"]
    for label, path, key, form, kind in key_rows(smallest_batch(metrics)):
        values = metrics.get(path, {}).get(key, {})
        old, new = number(values.get("old")), number(values.get("new"))
        shown = [MISSING if v is None else form.format(v) for v in (old, new)]
        lines.append(f"| {label} | {shown[0]} | {shown[1]} | {change(old, new, kind)} |")
    return "\n".join(lines)


def machine(text: str | None) -> dict | None:
    """The benchmark's machine fingerprint from run.json text; None if absent or unreadable (older format)."""
    try:
        found = json.loads(text).get(bench.MACHINE) if text else None
    except (json.JSONDecodeError, AttributeError):
        return None
    return found if isinstance(found, dict) else None


def machine_note(base: str) -> str | None:
    """A warning line when both revisions' benchmarks have fingerprints and they differ."""
    shown = subprocess.run(["git", "show", f"{base}:{BENCHMARK_RUN}"], capture_output=True, text=True)
    old = machine(shown.stdout if shown.returncode == 0 else None)
    new = machine(Path(BENCHMARK_RUN).read_text() if Path(BENCHMARK_RUN).is_file() else None)
    if not old or not new or old == new:
        return None

    def show(value) -> str:  # cpu_flags is a list
        if isinstance(value, list):
            return " ".join(map(str, value)) or "none"
        return MISSING if value is None else str(value)

    keys = sorted(old.keys() | new.keys())
    diffs = [f"{key} {show(old.get(key))} → {show(new.get(key))}" for key in keys if old.get(key) != new.get(key)]
    return (
        f"⚠️ **Timing ran on a different machine or runtime than `{base}`** ({'; '.join(diffs)}): "
        "compare the speedups, each measured side by side in one run, not the absolute times."
    )


def details(summary: str, body: str) -> str:
    """A collapsed section; the blank lines let GitHub render the markdown inside."""
    return f"<details><summary>{summary}</summary>\n\n{body}\n\n</details>"


def table_rows(markdown: str) -> int:
    """Data rows of a DVC markdown table (DVC prints a bare header row when nothing changed)."""
    return max(len(markdown.strip().splitlines()) - 2, 0)


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
    return lines


def build_report(base: str, out: Path, with_plots: bool = True) -> str:
    dvc = Dvc()
    params_md = dvc("params", "diff", base, "--md").strip()
    metrics_md = dvc("metrics", "diff", base, "--md").strip()
    metrics_all = json.loads(dvc("metrics", "diff", base, "--all", "--json") or "{}")

    top = [f"### Pipeline: this PR vs `{base}` ({git_short(base)})", key_table(metrics_all, base)]
    note = machine_note(base)
    if note:
        top.append(note)

    n_params, n_metrics = table_rows(params_md), table_rows(metrics_md)
    sections = [
        details(f"Parameters changed ({n_params})", params_md if n_params else "_No parameter changes._"),
        details(f"All metric changes ({n_metrics})", metrics_md if n_metrics else "_No metric changed._"),
    ]
    if with_plots:
        image_dir = out.parent / f"{out.stem}-images"
        plots = render_plots(dvc, base, image_dir, f"./{image_dir.name}/")
        sections.append(details(f"Plots ({len(plots)})", "\n".join(plots) or "_No plots declared in dvc.yaml._"))
    warnings = list(dict.fromkeys(dvc.warnings))
    if warnings:
        sections.append(details(f"DVC warnings ({len(warnings)})", "\n".join(f"- {w}" for w in warnings)))
    return "\n\n".join(top + sections) + "\n"


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
