"""scripts/pr_report.py on two real runs of a tiny DVC pipeline: a base on main, a changed parameter on a branch;
its Mermaid charts through the real Mermaid CLI (tier "mermaid")."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.aws.awsenv import REPO_ROOT, checkout_env, script
from tests.aws.mermaid import render_markdown

pytestmark = [pytest.mark.integration, pytest.mark.slow]


# Writes what the real stages write, in the same places and formats: evaluate metrics, plots and per-sentence
# predictions (the PR, lr 0.002, fixes half the base's errors), DVCLive validation curves, export metrics and
# variants.json, and the benchmark's metrics.json (headline built by the real cola.benchmark.headline), variants.json
# and run.json. FAKE_CPU sets the machine the benchmark "ran" on; FAKE_BENCHMARK=old writes the format the benchmark
# had before the headline and variants.json (no run.json); FAKE_PREDICTIONS=none writes no predictions.csv (as
# before the evaluate stage kept them); FAKE_METRICS=stale moves metrics.json's MCC away from the predictions;
# FAKE_CARD=none writes no model card (as before export_onnx wrote one).
STAGE = """\
import json
import os
from pathlib import Path
import pandas as pd
import yaml
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from cola import benchmark

p = yaml.safe_load(open("params.yaml"))["train"]
lr, epochs = p["lr"], p["epochs"]
for d in ("reports/evaluate/plots", "reports/train/plots/metrics/val", "reports/export", "reports/benchmark"):
    Path(d).mkdir(parents=True, exist_ok=True)
labels = [int(i % 3 != 0) for i in range(300)]
wrong_every = round(lr * 5000)  # lr 0.001: every 5th sentence wrong; lr 0.002: every 10th (a subset)
preds = [1 - y if i % wrong_every == 0 else y for i, y in enumerate(labels)]
if os.environ.get("FAKE_PREDICTIONS") != "none":
    pd.DataFrame({"sentence": [f"sentence {i}, quoted" for i in range(300)], "label": labels, "pred": preds,
                  "prob_acceptable": [0.9 if y else 0.1 for y in preds]}).to_csv(
        "reports/evaluate/predictions.csv", index=False)
stale = 0.05 if os.environ.get("FAKE_METRICS") == "stale" else 0  # metrics.json no longer from these predictions
json.dump({"mcc": matthews_corrcoef(labels, preds) + stale, "accuracy": accuracy_score(labels, preds),
           "f1_macro": f1_score(labels, preds, average="macro")}, open("reports/evaluate/metrics.json", "w"))
variants = {"fp32": {"mcc": round(0.40 + lr * 5, 4), "size_mb": 86.0},
            "int8": {"mcc": round(0.40 + lr * 5, 4), "size_mb": 22.04}}
json.dump({"served": {"mcc": variants["int8"]["mcc"], "size_mb": 22.04}}, open("reports/export/metrics.json", "w"))
json.dump(variants, open("reports/export/variants.json", "w"))
if os.environ.get("FAKE_CARD") != "none":  # the bundle card's copy (cola/model_card.py), two fields that move with lr
    card = {"training": {"lr": lr, "pooling": "mean"}, "limits": ["English | only"],
            "evaluation": {"metrics": {"mcc": {"value": variants["int8"]["mcc"]}}}}
    json.dump(card, open("reports/export/model_card.json", "w"))
p50 = {"bundle": {1: 2 + lr * 1000, 32: 40.0}, "pytorch": {1: 12.0, 32: 120.0},
       "ort_fp32_pad128": {1: 30.0, 32: 1000.0}}
results = {v: {f"bs{bs}": {"p50_ms": ms, "p95_ms": ms * 2, "sentences_per_s": bs * 1000 / ms}
               for bs, ms in by_bs.items()} for v, by_bs in p50.items()}
cold = {"bundle": round(0.3 + lr * 50, 3), "torch_transformers": 4.0}
if os.environ.get("FAKE_BENCHMARK") == "old":
    metrics = {"goals": {"served_bs1_p50_ms": 1.7, "served_mcc_drop_vs_fp32": 0.01}, "settings": {"threads": 1},
               "variants": {"bundle": {"mcc": 0.31, "bs1": {"p50_ms": 2.0, "iterations": 900}}}}
else:
    metrics = {"headline": benchmark.headline(results, cold, [1, 32])}
    json.dump({"variants": results, "cold_start_s": cold}, open("reports/benchmark/variants.json", "w"))
    machine = {"cpu": os.environ.get("FAKE_CPU", "Test CPU 9000"), "cpu_flags": ["avx2", "avx512f"],
               "logical_cores": 2, "python": "3.11.7", "onnxruntime": "1.32.0", "torch": "2.13.0"}
    json.dump({"machine": machine, "settings": {"threads": 1}}, open("reports/benchmark/run.json", "w"))
json.dump(metrics, open("reports/benchmark/metrics.json", "w"))
with open("reports/train/loss.tsv", "w") as f:
    f.write("step\\tloss\\n" + "".join(f"{s}\\t{1 / (1 + s * lr * 100):.4f}\\n" for s in range(epochs)))
for name, curve in {"mcc": lambda s: 0.1 + s * lr * 50, "loss": lambda s: 0.7 - s * lr * 50}.items():
    with open(f"reports/train/plots/metrics/val/{name}.tsv", "w") as f:
        f.write(f"step\\t{name}\\n" + "".join(f"{(s + 1) * 10}\\t{curve(s):.4f}\\n" for s in range(epochs)))
pairs = [(0, 0), (0, 1), (1, 1), (1, 1), (1, 0 if lr < 0.0015 else 1)]
json.dump([{"actual": a, "predicted": b} for a, b in pairs], open("reports/evaluate/plots/confusion.json", "w"))
"""

DVC_YAML = """\
metrics:
  - reports/evaluate/metrics.json
  - reports/export/metrics.json
  - reports/benchmark/metrics.json
plots:
  - Training curves:
      template: linear
      x: step
      y:
        reports/train/loss.tsv: loss
  - Confusion matrix (test):
      template: confusion
      x: actual
      y:
        reports/evaluate/plots/confusion.json: predicted
stages:
  run:
    cmd: python stage.py
    deps: [stage.py]
    params: [train]
    outs:
      - reports/train:
          cache: false
      - reports/evaluate:
          cache: false
      - reports/export:
          cache: false
      - reports/benchmark:
          cache: false
"""

# The top table of the base run (lr 0.001) vs the PR run (lr 0.002); DVC-free, so exact. The PR fixes 30 of the
# base's 60 errors on 300 sentences: every paired interval lies above 0.
SERVED_NOTE = "no per-sentence served predictions: plain difference"
TOP_TABLE = f"""\
| | `main` | this PR | change | 95 % interval of the change | is it real? |
|---|---|---|---|---|---|
| Test MCC (evaluate) | 0.5774 | 0.7826 | +0.2052 | [+0.1379, +0.2739] | **better** |
| Test accuracy (evaluate) | 0.8000 | 0.9000 | +0.1000 | [+0.0667, +0.1333] | **better** |
| Test macro F1 (evaluate) | 0.7847 | 0.8901 | +0.1054 | [+0.0715, +0.1402] | **better** |
| Served MCC (export, test split) | 0.4050 | 0.4100 | +0.0050 | {SERVED_NOTE} | — |
| Served p50 latency, batch 1 | 3.00 ms | 4.00 ms | +33.3% | — | — |
| Speedup vs PyTorch eager, batch 1 | 4.0× | 3.0× | -25.0% | — | — |
| Speedup vs pad-to-128, batch 1 | 10.0× | 7.5× | -25.0% | — | — |
| Served model size | 22.0 MB | 22.0 MB | +0.0% | — | — |
| Served cold start | 0.35 s | 0.40 s | +14.3% | — | — |"""
BOOTSTRAP_NOTE = "paired bootstrap over the test sentences both revisions predicted (2,000 resamples, seed 0)"

DIFFERENT_MACHINE = "Timing ran on a different machine or runtime"


def run(repo: Path, *command: str, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        command,
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
        env=None if env is None else {**os.environ, **env},
    )
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}\n{result.stderr}"
    return result


def report(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        script("pr_report", *args), cwd=repo, env=checkout_env(), capture_output=True, text=True, timeout=300
    )


def squeeze(markdown: str) -> str:
    """DVC pads its tables; compare cells, not spaces."""
    return re.sub(r" +", " ", markdown)


def top_of(markdown: str) -> str:
    """What a reader sees before the first collapsed section."""
    return markdown.split("<details>")[0]


@pytest.fixture
def make_runs(tmp_path, monkeypatch):
    """make_runs(base_env, pr_env): a base run committed on main, then lr 0.002 run (not committed) on a branch."""
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))  # the fake stage uses cola.benchmark.headline

    def make(base_env: dict | None = None, pr_env: dict | None = None) -> Path:
        repo = tmp_path / "repo"
        repo.mkdir()
        git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
        run(repo, *git, "init", "-q", "-b", "main")
        run(repo, sys.executable, "-m", "dvc", "init", "-q")
        (repo / "params.yaml").write_text("train:\n  lr: 0.001\n  epochs: 4\nexport:\n  served_variant: int8\n")
        (repo / "stage.py").write_text(STAGE)
        (repo / "dvc.yaml").write_text(DVC_YAML)
        run(repo, sys.executable, "-m", "dvc", "repro", "-q", env=base_env or {})
        run(repo, *git, "add", "-A")
        run(repo, *git, "commit", "-qm", "base run")
        run(repo, *git, "checkout", "-qb", "faster-lr")
        (repo / "params.yaml").write_text("train:\n  lr: 0.002\n  epochs: 4\nexport:\n  served_variant: int8\n")
        run(repo, sys.executable, "-m", "dvc", "repro", "-q", env=pr_env or {})
        return repo

    return make


def test_report_top_table_fits_a_screen_and_the_rest_is_collapsed(make_runs):
    repo = make_runs()
    result = report(repo, "--base", "main", "--out", "pr/report.md")
    assert result.returncode == 0, result.stderr
    markdown = (repo / "pr" / "report.md").read_text()
    top = top_of(markdown)

    assert TOP_TABLE in top
    assert BOOTSTRAP_NOTE in top
    assert len([line for line in top.splitlines() if line.strip()]) <= 13
    assert DIFFERENT_MACHINE not in markdown  # same fingerprint in both runs

    # Everything else is collapsed, below the table; the charts come first.
    summaries = re.findall(r"<details><summary>([^<]+)</summary>", markdown)
    assert summaries == [
        "Charts (5)", "Parameters changed (1)", "All metric changes (8)", "Model card changes (2)", "Plots (2)"
    ]  # fmt: skip
    assert markdown.count("<details>") == markdown.count("</details>") == 5 and "<details open" not in markdown
    assert "```mermaid" not in top
    flat = squeeze(markdown.split("<details>", 1)[1])
    assert "| params.yaml | train.lr | 0.001 | 0.002 |" in flat
    assert "train.epochs" not in flat  # unchanged parameters stay out
    assert "| reports/evaluate/metrics.json | mcc | 0.57735 | 0.78259 | 0.20524 |" in flat
    assert "| reports/benchmark/metrics.json | headline.bs1.served_p50_ms | 3.0 | 4.0 | 1.0 |" in flat
    card = markdown.split("<summary>Model card changes (2)</summary>")[1].split("</details>")[0]
    assert "| `evaluation.metrics.mcc.value` | 0.405 | 0.41 |" in card and "| `training.lr` | 0.001 | 0.002 |" in card
    assert "pooling" not in card and "limits" not in card  # unchanged fields stay out

    plots = markdown.split("<summary>Plots (2)</summary>")[1]
    images = re.findall(r"!\[([^\]]+)\]\(\./(report-images/[^)]+\.png)\)", plots)
    assert [title for title, _ in images] == ["Training curves", "Confusion matrix (test)"]
    for _, path in images:
        assert (repo / "pr" / path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "DVC warnings" not in markdown


def test_timing_from_another_machine_is_flagged(make_runs):
    repo = make_runs(pr_env={"FAKE_CPU": "Other CPU 1"})
    result = report(repo, "--base", "main", "--no-plots")
    assert result.returncode == 0, result.stderr
    top = top_of((repo / "report.md").read_text())
    notes = [line for line in top.splitlines() if DIFFERENT_MACHINE in line]
    assert len(notes) == 1 and "cpu Test CPU 9000 → Other CPU 1" in notes[0]
    assert "cpu_flags" not in notes[0]  # only what differs
    assert TOP_TABLE in top  # the figures are still shown


def test_base_with_the_old_benchmark_format_shows_dashes(make_runs):
    repo = make_runs(base_env={"FAKE_BENCHMARK": "old"})
    result = report(repo, "--base", "main", "--no-plots")
    assert result.returncode == 0, result.stderr
    markdown = (repo / "report.md").read_text()
    top = top_of(markdown)
    assert "| Test MCC (evaluate) | 0.5774 | 0.7826 | +0.2052 | [+0.1379, +0.2739] | **better** |" in top
    assert "| Served p50 latency, batch 1 | — | 4.00 ms | — | — | — |" in top
    assert "| Speedup vs PyTorch eager, batch 1 | — | 3.0× | — | — | — |" in top
    assert "| Served cold start | — | 0.40 s | — | — | — |" in top
    assert DIFFERENT_MACHINE not in top  # the base has no fingerprint to compare with
    # the base's old benchmark timed batch 1 only, and no PyTorch: the chart keeps this PR's batch sizes
    latency = markdown.split('title "p50 latency per batch call (ms)"')[1].split("```")[0]
    assert 'x-axis "batch size" ["1", "32"]' in latency
    assert re.findall(r'line "([^"]+)"', latency) == ["served this PR", "pytorch this PR"]


def test_report_without_changes_says_so(make_runs):
    repo = make_runs()
    subprocess.run(["git", "checkout", "-q", "--", "."], cwd=repo, check=True)  # back to the base run
    result = report(repo, "--base", "main", "--no-plots")
    assert result.returncode == 0, result.stderr
    markdown = (repo / "report.md").read_text()
    assert "<summary>Parameters changed (0)</summary>\n\n_No parameter changes._" in markdown
    assert "<summary>All metric changes (0)</summary>\n\n_No metric changed._" in markdown
    assert "<summary>Model card changes (0)</summary>\n\n_The model card is unchanged._" in markdown
    assert "| Served p50 latency, batch 1 | 3.00 ms | 3.00 ms | +0.0% |" in markdown
    assert "| Test MCC (evaluate) | 0.5774 | 0.5774 | +0.0000 | [+0.0000, +0.0000] | **within noise** |" in markdown
    assert (
        "| Test macro F1 (evaluate) | 0.7847 | 0.7847 | +0.0000 | [+0.0000, +0.0000] | **within noise** |" in markdown
    )
    assert DIFFERENT_MACHINE not in markdown


def test_a_revision_without_predictions_shows_the_plain_difference(make_runs):
    repo = make_runs(base_env={"FAKE_PREDICTIONS": "none"})
    result = report(repo, "--base", "main", "--no-plots")
    assert result.returncode == 0, result.stderr
    top = top_of((repo / "report.md").read_text())
    note = "no per-sentence predictions (reports/evaluate/predictions.csv) in `main`: plain difference"
    assert f"| Test MCC (evaluate) | 0.5774 | 0.7826 | +0.2052 | {note} | — |" in top
    assert f"| Test accuracy (evaluate) | 0.8000 | 0.9000 | +0.1000 | {note} | — |" in top
    assert BOOTSTRAP_NOTE not in top and "better" not in top


def test_predictions_that_do_not_reproduce_the_metric_are_not_used_for_it(make_runs):
    repo = make_runs(pr_env={"FAKE_METRICS": "stale"})
    result = report(repo, "--base", "main", "--no-plots")
    assert result.returncode == 0, result.stderr
    top = top_of((repo / "report.md").read_text())
    note = "reports/evaluate/predictions.csv does not reproduce this figure (stale?): plain difference"
    assert f"| Test MCC (evaluate) | 0.5774 | 0.8326 | +0.2552 | {note} | — |" in top
    assert "| Test accuracy (evaluate) | 0.8000 | 0.9000 | +0.1000 | [+0.0667, +0.1333] | **better** |" in top


def test_charts_render(make_runs, tmp_path):
    """The comment's Mermaid blocks through the real Mermaid CLI: each chart draws the series it names."""
    repo = make_runs()
    result = report(repo, "--base", "main", "--no-plots")
    assert result.returncode == 0, result.stderr
    markdown = (repo / "report.md").read_text()
    charts_section = markdown.split("<summary>Charts (5)</summary>")[1].split("</details>")[0]
    assert 'line "this PR" [0.1, 0.2, 0.3, 0.4]' in charts_section  # this PR's validation MCC curve, as written
    drawn = render_markdown(charts_section, tmp_path / "mermaid")
    base_new, benchmark = ["main", "this PR"], ["served main", "served this PR", "pytorch main", "pytorch this PR"]
    assert [(c.title, c.legend, [(kind, points) for kind, _, points in c.plots]) for c in drawn] == [
        ("Validation MCC per epoch", base_new, [("line", 4)] * 2),
        ("Validation loss per epoch", base_new, [("line", 4)] * 2),
        ("p50 latency per batch call (ms)", benchmark, [("line", 2)] * 4),
        ("Throughput (sentences per s)", benchmark, [("line", 2)] * 4),
        ("Test MCC per exported variant", ["this PR", "main"], [("bar", 2), ("line", 2)]),
    ]
    assert drawn[0].plots[0][1] == "#9e9e9e" and drawn[0].plots[1][1] == "#1f77b4"  # grey base, blue PR
    assert 'x-axis "variant" ["fp32", "int8 (served)"]' in charts_section


def test_unknown_base_revision_is_a_clear_error(make_runs):
    repo = make_runs()
    result = report(repo, "--base", "origin/nope", "--no-plots")
    assert result.returncode == 1
    assert "`dvc params diff origin/nope --md` failed" in result.stderr
    assert "fetch-depth: 0" in result.stderr and "Traceback" not in result.stderr
    assert not (repo / "report.md").exists()


def test_a_base_without_a_model_card_says_the_card_is_new(make_runs):
    repo = make_runs(base_env={"FAKE_CARD": "none"})
    result = report(repo, "--base", "main", "--no-plots")
    assert result.returncode == 0, result.stderr
    markdown = (repo / "report.md").read_text()
    assert "<summary>Model card changes (0)</summary>\n\n_The base has no model card: the whole card is new" in markdown
