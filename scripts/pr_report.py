"""Markdown report of a pipeline run against a base revision, for the PR comment (CML `cml comment update`).

    python -m scripts.pr_report --base origin/main --out report.md

On top, for a 30-second read: a table of the key figures, base → this PR — test MCC, accuracy and macro F1
(evaluate), the served model's MCC and size (export), its p50 latency at the smallest batch size with the same-run
speedups over PyTorch eager and pad-to-128, and its cold start (benchmark headline) — with, for the test metrics,
the 95 % interval of the change from a paired bootstrap over both revisions' committed per-sentence predictions
(cola/bootstrap.py) and a verdict (better / worse / within noise); and a warning when the timings come
from a different machine than the base's (the benchmark's fingerprints differ). Below, collapsed: Mermaid charts
GitHub draws inline (validation MCC and loss per epoch, served vs PyTorch latency and throughput per batch size,
MCC of each ONNX variant; scripts/pr_charts.py), parameter changes (`dvc params diff --md`), every metric change
(`dvc metrics diff --md`), what changed in the model card (reports/export/model_card.json), every plot declared in
dvc.yaml rendered to PNG for both revisions (DVC's own Vega-Lite templates, rendered offline by vl-convert) and
DVC's warnings.
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
from cola import benchmark as bench
from cola import bootstrap as pb
from cola import paths
from scripts import pr_charts as charts

EVALUATE_METRICS = paths.EVALUATE_METRICS.relative_to(paths.ROOT).as_posix()  # test metrics at the top level
EXPORT_METRICS = paths.EXPORT_METRICS.relative_to(paths.ROOT).as_posix()  # "served" = the bundle's variant
BENCHMARK_DIR = paths.BENCHMARK_REPORT_DIR.relative_to(paths.ROOT).as_posix()
BENCHMARK_METRICS = f"{BENCHMARK_DIR}/{bench.METRICS_JSON}"
BENCHMARK_RUN = f"{BENCHMARK_DIR}/{bench.RUN_JSON}"
BENCHMARK_VARIANTS = f"{BENCHMARK_DIR}/{bench.VARIANTS_JSON}"
EXPORT_VARIANTS = paths.EXPORT_METRICS.with_name("variants.json").relative_to(paths.ROOT).as_posix()
MODEL_CARD = paths.EXPORT_METRICS.with_name("model_card.json").relative_to(paths.ROOT).as_posix()  # the bundle's card
PREDICTIONS = (paths.EVALUATE_REPORT_DIR / "predictions.csv").relative_to(paths.ROOT).as_posix()
TRAIN_CURVES = (paths.TRAIN_REPORT_DIR / "plots" / "metrics" / "val").relative_to(paths.ROOT).as_posix()  # DVCLive
PARAMS = "params.yaml"
MISSING = "—"
NO_SERVED_PREDICTIONS = "no per-sentence served predictions: plain difference"


class ReportError(RuntimeError):
    pass


class Dvc:
    """Runs the dvc CLI; keeps what DVC warned about (e.g. a revision without metrics) for the report."""

    def __init__(self) -> None:
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


def key_rows(batch: int) -> list[tuple[str, str, str, str, str, str | None]]:
    """(label, metrics file, DVC's flattened key, value format, change: "abs" difference or "rel" percent,
    what says whether the change is real: a paired_bootstrap metric, "served" (no per-sentence data) or None)."""
    head, bs = bench.HEADLINE, f"{bench.HEADLINE}.bs{batch}"
    speedup = bench.SPEEDUP_VS
    return [
        ("Test MCC (evaluate)", EVALUATE_METRICS, "mcc", "{:.4f}", "abs", "mcc"),
        ("Test accuracy (evaluate)", EVALUATE_METRICS, "accuracy", "{:.4f}", "abs", "accuracy"),
        ("Test macro F1 (evaluate)", EVALUATE_METRICS, "f1_macro", "{:.4f}", "abs", "f1_macro"),
        ("Served MCC (export, test split)", EXPORT_METRICS, "served.mcc", "{:.4f}", "abs", "served"),
        (f"Served p50 latency, batch {batch}", BENCHMARK_METRICS, f"{bs}.{bench.SERVED_P50}", "{:.2f} ms", "rel", None),
        (
            f"Speedup vs PyTorch eager, batch {batch}",
            BENCHMARK_METRICS,
            f"{bs}.{speedup['pytorch']}",
            "{:.1f}×",
            "rel",
            None,
        ),
        (
            f"Speedup vs pad-to-128, batch {batch}",
            BENCHMARK_METRICS,
            f"{bs}.{speedup['ort_fp32_pad128']}",
            "{:.1f}×",
            "rel",
            None,
        ),
        ("Served model size", EXPORT_METRICS, "served.size_mb", "{:.1f} MB", "rel", None),
        ("Served cold start", BENCHMARK_METRICS, f"{head}.{bench.SERVED_COLD_START}", "{:.2f} s", "rel", None),
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


def is_it_real(
    paired: str | None, evidence: dict[str, pb.Change] | str, old: float | None, new: float | None
) -> tuple[str, str]:
    """(95 % interval of the change, verdict) for a key row; evidence is the bootstrap or why there is none.
    old/new: the row's metrics.json values, which the predictions must reproduce to speak for them."""
    if paired is None:
        return MISSING, MISSING
    if paired == "served":
        return NO_SERVED_PREDICTIONS, MISSING
    if isinstance(evidence, str):
        return evidence, MISSING
    found = evidence[paired]
    if any(v is not None and abs(v - p) > 1e-4 for v, p in ((old, found.base), (new, found.new))):
        return f"{PREDICTIONS} does not reproduce this figure (stale?): plain difference", MISSING
    return f"[{found.low:+.4f}, {found.high:+.4f}]", f"**{found.verdict}**"


def key_table(metrics: dict, base: str, evidence: dict[str, pb.Change] | str) -> str:
    """metrics: `dvc metrics diff --all --json`, i.e. {file: {flattened key: {"old": …, "new": …}}};
    evidence: significance()."""
    lines = [
        f"| | `{base}` | this PR | change | 95 % interval of the change | is it real? |",
        "|---|---|---|---|---|---|",
    ]
    for label, path, key, form, kind, paired in key_rows(smallest_batch(metrics)):
        values = metrics.get(path, {}).get(key, {})
        old, new = number(values.get("old")), number(values.get("new"))
        shown = [MISSING if v is None else form.format(v) for v in (old, new)]
        interval, verdict = is_it_real(paired, evidence, old, new)
        lines.append(f"| {label} | {shown[0]} | {shown[1]} | {change(old, new, kind)} | {interval} | {verdict} |")
    return "\n".join(lines)


def revision_text(rev: str | None, path: str) -> str | None:
    """A file as committed in `rev` (git show), or in the working tree for rev None: the PR is the checkout."""
    if rev is None:
        return Path(path).read_text() if Path(path).is_file() else None
    shown = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True)
    return shown.stdout if shown.returncode == 0 else None


def revision_json(rev: str | None, path: str) -> dict | None:
    try:
        found = json.loads(revision_text(rev, path) or "null")
    except json.JSONDecodeError:
        return None
    return found if isinstance(found, dict) else None


def significance(base: str) -> dict[str, pb.Change] | str:
    """The paired bootstrap of both revisions' test predictions, or a short reason why there is none."""
    texts: dict[str, str] = {}
    for rev, name in ((base, f"`{base}`"), (None, "this PR")):
        text = revision_text(rev, PREDICTIONS)
        if text is None:
            return f"no per-sentence predictions ({PREDICTIONS}) in {name}: plain difference"
        texts[name] = text
    try:
        old, new = (pb.read_predictions(text, f"{PREDICTIONS} in {name}") for name, text in texts.items())
        return pb.paired_bootstrap(*pb.pair(old, new))
    except pb.PredictionsError as exc:
        return f"{exc}: plain difference"


def significance_note(evidence: dict[str, pb.Change] | str) -> str | None:
    if isinstance(evidence, str):
        return None
    return (
        f"<sub>Interval: paired bootstrap over the test sentences both revisions predicted ({pb.RESAMPLES:,} "
        f"resamples, seed {pb.SEED}); better / worse only when the interval excludes 0.</sub>"
    )


def machine(text: str | None) -> dict | None:
    """The benchmark's machine fingerprint from run.json text; None if absent or unreadable (older format)."""
    try:
        found = json.loads(text).get(bench.MACHINE) if text else None
    except (json.JSONDecodeError, AttributeError):
        return None
    return found if isinstance(found, dict) else None


def machine_note(base: str) -> str | None:
    """A warning line when both revisions' benchmarks have fingerprints and they differ."""
    old, new = (machine(revision_text(rev, BENCHMARK_RUN)) for rev in (base, None))
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


def curve(rev: str | None, metric: str) -> list[float] | None:
    """A DVCLive validation curve (step<TAB>value per logged epoch), or None if absent or unreadable."""
    text = revision_text(rev, f"{TRAIN_CURVES}/{metric}.tsv")
    try:
        return [float(line.split("\t")[-1]) for line in (text or "").strip().splitlines()[1:]] or None
    except ValueError:
        return None


def variant_figures(rev: str | None, stage: str) -> dict:
    """{variant: figures} of the export (quality) or benchmark (timing) stage; before variants.json existed they
    were under "variants" in the stage's metrics.json."""
    if stage == "export":
        return revision_json(rev, EXPORT_VARIANTS) or (revision_json(rev, EXPORT_METRICS) or {}).get("variants") or {}
    found = revision_json(rev, BENCHMARK_VARIANTS) or revision_json(rev, BENCHMARK_METRICS) or {}
    return found.get("variants") or {}


def served_variant(rev: str | None) -> str | None:
    import yaml  # a dvc dependency

    try:
        found = (yaml.safe_load(revision_text(rev, PARAMS) or "") or {}).get("export", {}).get("served_variant")
    except (yaml.YAMLError, AttributeError):
        return None
    return found if isinstance(found, str) else None


def training_chart(base: str, metric: str, title: str) -> str | None:
    series, length, note = charts.pair_series(f"{base}", curve(base, metric), "this PR", curve(None, metric))
    if not series:
        return None
    block = charts.xychart(title, "epoch", list(range(1, length + 1)), metric, series)
    return block + (f"\n\n<sub>{note}</sub>" if note else "")


def benchmark_chart(base: str, figure: str, title: str, y_title: str) -> str | None:
    """The served path vs PyTorch eager per batch size, both revisions: the batch sizes this PR's series share;
    a base series that lacks one of them (another benchmark setup) is left out rather than cutting the chart."""
    colours = {
        (bench.SERVED, base): charts.BASE_COLOUR,
        (bench.SERVED, None): charts.NEW_COLOUR,
        ("pytorch", base): charts.BASE_COLOUR_2,
        ("pytorch", None): charts.NEW_COLOUR_2,
    }
    by_rev = {rev: variant_figures(rev, "benchmark") for rev in (base, None)}
    wanted = {}
    for (variant, rev), colour in colours.items():
        runs = by_rev[rev].get(variant)
        if isinstance(runs, dict):
            sizes = {
                int(k[2:]): v.get(figure) for k, v in runs.items() if re.fullmatch(r"bs\d+", k) and isinstance(v, dict)
            }
            name = f"{'served' if variant == bench.SERVED else variant} {base if rev else 'this PR'}"
            numeric = {bs: v for bs, v in sizes.items() if v is not None and number(v) is not None}
            wanted[name] = (numeric, colour, rev is None)
    leading = [set(sizes) for sizes, _, new in wanted.values() if new] or [set(s) for s, _, _ in wanted.values()]
    common = sorted(set.intersection(*leading)) if leading else []
    if not common:
        return None
    series = [
        charts.Series(name, [sizes[bs] for bs in common], colour)
        for name, (sizes, colour, _) in wanted.items()
        if set(common) <= set(sizes)
    ]
    return charts.xychart(title, "batch size", common, y_title, series)


def variants_chart(base: str) -> str | None:
    """Test MCC of each exported variant: bars for this PR, a line for the base where it has the same variants."""
    new, old = variant_figures(None, "export"), variant_figures(base, "export")
    names = [
        name for name, figures in new.items() if isinstance(figures, dict) and number(figures.get("mcc")) is not None
    ]
    if not names:
        return None
    served = served_variant(None)
    categories = [f"{name} (served)" if name == served else name for name in names]
    series = [charts.Series("this PR", [new[name]["mcc"] for name in names], charts.NEW_COLOUR, "bar")]
    if all(number((old.get(name) or {}).get("mcc")) is not None for name in names):
        series.append(charts.Series(base, [old[name]["mcc"] for name in names], charts.BASE_COLOUR))
    return charts.xychart("Test MCC per exported variant", "variant", categories, "MCC", series, horizontal=True)


def inline_charts(base: str) -> list[str]:
    """Mermaid blocks for the comment; a chart without data in either revision is left out, a broken one says so."""
    makers = [
        ("Validation MCC per epoch", lambda: training_chart(base, "mcc", "Validation MCC per epoch")),
        ("Validation loss per epoch", lambda: training_chart(base, "loss", "Validation loss per epoch")),
        (
            "Latency per batch",
            lambda: benchmark_chart(base, "p50_ms", "p50 latency per batch call (ms)", "ms"),
        ),
        (
            "Throughput",
            lambda: benchmark_chart(base, "sentences_per_s", "Throughput (sentences per s)", "sentences/s"),
        ),
        ("Variants", lambda: variants_chart(base)),
    ]
    blocks = []
    for title, make in makers:
        try:
            block = make()
        except charts.ChartError as exc:
            block = f"_{title}: not drawn ({charts.label(exc)})._"
        if block:
            blocks.append(block)
    return blocks


def flatten(value, prefix: str = "") -> dict[str, object]:
    """{"a": {"b": 1}, "c": [x, y]} -> {"a.b": 1, "c": [x, y]}: lists (labels, limits) stay one value."""
    if not isinstance(value, dict):
        return {prefix: value}
    found: dict[str, object] = {}
    for key, inner in value.items():
        found |= flatten(inner, f"{prefix}.{key}" if prefix else str(key))
    return found


def card_changes(base: str) -> tuple[int, str]:
    """The model card's fields that differ between the base and this PR (reports/export/model_card.json, the copy
    of the bundle's card), as a markdown table: (number of changed fields, markdown)."""
    old, new = revision_json(base, MODEL_CARD), revision_json(None, MODEL_CARD)
    if new is None:
        return 0, f"_No model card in this PR ({MODEL_CARD})._"
    if old is None:
        return 0, f"_The base has no model card: the whole card is new ({MODEL_CARD})._"
    before, after = flatten(old), flatten(new)

    def shown(value) -> str:
        text = MISSING if value is None else json.dumps(value) if isinstance(value, list) else str(value)
        return text.replace("|", "\\|")

    changed = [k for k in sorted(before.keys() | after.keys()) if before.get(k) != after.get(k)]
    rows = [f"| `{key}` | {shown(before.get(key))} | {shown(after.get(key))} |" for key in changed]
    table = "\n".join(["| field | base | this PR |", "|---|---|---|", *rows])
    return len(changed), table if rows else "_The model card is unchanged._"


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

    evidence = significance(base)
    top = [f"### Pipeline: this PR vs `{base}` ({git_short(base)})", key_table(metrics_all, base, evidence)]
    top += [note for note in (significance_note(evidence), machine_note(base)) if note]

    n_params, n_metrics = table_rows(params_md), table_rows(metrics_md)
    n_card, card_md = card_changes(base)
    blocks = inline_charts(base)
    sections = [
        details(
            f"Charts ({len(blocks)})",
            "\n\n".join(blocks) or "_No training curves, benchmark or variant figures in either revision._",
        ),
        details(f"Parameters changed ({n_params})", params_md if n_params else "_No parameter changes._"),
        details(f"All metric changes ({n_metrics})", metrics_md if n_metrics else "_No metric changed._"),
        details(f"Model card changes ({n_card})", card_md),
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
