"""scripts/pr_report.py on two real runs of a tiny DVC pipeline: a base on main, a changed parameter on a branch."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.aws.awsenv import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCRIPT = REPO_ROOT / "scripts" / "pr_report.py"

# Writes what the real stages write, in the same places and formats: evaluate metrics + plots, train curves,
# export metrics, and the benchmark's metrics.json (headline built by the real cola.benchmark.headline) and
# run.json. FAKE_CPU sets the machine the benchmark "ran" on; FAKE_BENCHMARK=old writes the format the benchmark
# had before the headline (no run.json).
STAGE = """\
import json
import os
from pathlib import Path
import yaml
from cola import benchmark

p = yaml.safe_load(open("params.yaml"))["train"]
lr, epochs = p["lr"], p["epochs"]
for d in ("reports/evaluate/plots", "reports/train", "reports/export", "reports/benchmark"):
    Path(d).mkdir(parents=True, exist_ok=True)
json.dump({"mcc": round(0.40 + lr * 10, 4), "accuracy": round(0.70 + lr * 5, 4)},
          open("reports/evaluate/metrics.json", "w"))
json.dump({"served": {"mcc": round(0.40 + lr * 5, 4), "size_mb": 22.04}, "variants": {"int8": {"size_mb": 22.04}}},
          open("reports/export/metrics.json", "w"))
p50 = {"bundle": {1: 2 + lr * 1000, 32: 40.0}, "pytorch": {1: 12.0, 32: 120.0},
       "ort_fp32_pad128": {1: 30.0, 32: 1000.0}}
results = {v: {f"bs{bs}": {"p50_ms": ms, "p95_ms": ms * 2} for bs, ms in by_bs.items()} for v, by_bs in p50.items()}
cold = {"bundle": round(0.3 + lr * 50, 3), "torch_transformers": 4.0}
if os.environ.get("FAKE_BENCHMARK") == "old":
    metrics = {"goals": {"served_bs1_p50_ms": 1.7, "served_mcc_drop_vs_fp32": 0.01}, "settings": {"threads": 1},
               "variants": {"bundle": {"mcc": 0.31, "bs1": {"p50_ms": 2.0, "iterations": 900}}}}
else:
    metrics = {"headline": benchmark.headline(results, cold, [1, 32]), "variants": results, "cold_start_s": cold}
    machine = {"cpu": os.environ.get("FAKE_CPU", "Test CPU 9000"), "cpu_flags": ["avx2", "avx512f"],
               "logical_cores": 2, "python": "3.11.7", "onnxruntime": "1.32.0", "torch": "2.13.0"}
    json.dump({"machine": machine, "settings": {"threads": 1}}, open("reports/benchmark/run.json", "w"))
json.dump(metrics, open("reports/benchmark/metrics.json", "w"))
with open("reports/train/loss.tsv", "w") as f:
    f.write("step\\tloss\\n" + "".join(f"{s}\\t{1 / (1 + s * lr * 100):.4f}\\n" for s in range(epochs)))
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
      - reports/train/loss.tsv:
          cache: false
      - reports/evaluate:
          cache: false
      - reports/export:
          cache: false
      - reports/benchmark:
          cache: false
"""

# The top table of the base run (lr 0.001) vs the PR run (lr 0.002); DVC-free, so exact.
TOP_TABLE = """\
| | `main` | this PR | change |
|---|---|---|---|
| Test MCC (evaluate) | 0.4100 | 0.4200 | +0.0100 |
| Served MCC (export, test split) | 0.4050 | 0.4100 | +0.0050 |
| Served p50 latency, batch 1 | 3.00 ms | 4.00 ms | +33.3% |
| Speedup vs PyTorch eager, batch 1 | 4.0× | 3.0× | -25.0% |
| Speedup vs pad-to-128, batch 1 | 10.0× | 7.5× | -25.0% |
| Served model size | 22.0 MB | 22.0 MB | +0.0% |
| Served cold start | 0.35 s | 0.40 s | +14.3% |"""

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
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=repo, capture_output=True, text=True, timeout=300)


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
        (repo / "params.yaml").write_text("train:\n  lr: 0.001\n  epochs: 4\n")
        (repo / "stage.py").write_text(STAGE)
        (repo / "dvc.yaml").write_text(DVC_YAML)
        run(repo, sys.executable, "-m", "dvc", "repro", "-q", env=base_env or {})
        run(repo, *git, "add", "-A")
        run(repo, *git, "commit", "-qm", "base run")
        run(repo, *git, "checkout", "-qb", "faster-lr")
        (repo / "params.yaml").write_text("train:\n  lr: 0.002\n  epochs: 4\n")
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
    assert len([line for line in top.splitlines() if line.strip()]) <= 12
    assert DIFFERENT_MACHINE not in markdown  # same fingerprint in both runs

    # Everything else is collapsed, below the table.
    summaries = re.findall(r"<details><summary>([^<]+)</summary>", markdown)
    assert summaries == ["Parameters changed (1)", "All metric changes (10)", "Plots (2)"]
    assert markdown.count("<details>") == markdown.count("</details>") == 3 and "<details open" not in markdown
    flat = squeeze(markdown.split("<details>", 1)[1])
    assert "| params.yaml | train.lr | 0.001 | 0.002 |" in flat
    assert "train.epochs" not in flat  # unchanged parameters stay out
    assert "| reports/evaluate/metrics.json | mcc | 0.41 | 0.42 | 0.01 |" in flat
    assert "| reports/benchmark/metrics.json | headline.bs1.served_p50_ms | 3.0 | 4.0 | 1.0 |" in flat

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
    top = top_of((repo / "report.md").read_text())
    assert "| Test MCC (evaluate) | 0.4100 | 0.4200 | +0.0100 |" in top
    assert "| Served p50 latency, batch 1 | — | 4.00 ms | — |" in top
    assert "| Speedup vs PyTorch eager, batch 1 | — | 3.0× | — |" in top
    assert "| Served cold start | — | 0.40 s | — |" in top
    assert DIFFERENT_MACHINE not in top  # the base has no fingerprint to compare with


def test_report_without_changes_says_so(make_runs):
    repo = make_runs()
    subprocess.run(["git", "checkout", "-q", "--", "."], cwd=repo, check=True)  # back to the base run
    result = report(repo, "--base", "main", "--no-plots")
    assert result.returncode == 0, result.stderr
    markdown = (repo / "report.md").read_text()
    assert "<summary>Parameters changed (0)</summary>\n\n_No parameter changes._" in markdown
    assert "<summary>All metric changes (0)</summary>\n\n_No metric changed._" in markdown
    assert "| Served p50 latency, batch 1 | 3.00 ms | 3.00 ms | +0.0% |" in markdown
    assert DIFFERENT_MACHINE not in markdown


def test_unknown_base_revision_is_a_clear_error(make_runs):
    repo = make_runs()
    result = report(repo, "--base", "origin/nope", "--no-plots")
    assert result.returncode == 1
    assert "`dvc params diff origin/nope --md` failed" in result.stderr
    assert "fetch-depth: 0" in result.stderr and "Traceback" not in result.stderr
    assert not (repo / "report.md").exists()
