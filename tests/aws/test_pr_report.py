"""scripts/pr_report.py on two real runs of a tiny DVC pipeline: a base on main, a changed parameter on a branch."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.aws.awsenv import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCRIPT = REPO_ROOT / "scripts" / "pr_report.py"

# Writes what the real stages write, in the same places: evaluate metrics + plots, train curves, benchmark latency.
STAGE = """\
import json
from pathlib import Path
import yaml

p = yaml.safe_load(open("params.yaml"))["train"]
lr, epochs = p["lr"], p["epochs"]
for d in ("reports/evaluate/plots", "reports/train", "reports/benchmark"):
    Path(d).mkdir(parents=True, exist_ok=True)
json.dump({"test": {"mcc": round(0.40 + lr * 10, 4), "accuracy": round(0.70 + lr * 5, 4)}},
          open("reports/evaluate/metrics.json", "w"))
json.dump({"onnx_int8": {"latency_ms": {"p50": round(3 + lr * 1000, 3), "p95": round(5 + lr * 2000, 3)}}},
          open("reports/benchmark/metrics.json", "w"))
with open("reports/train/loss.tsv", "w") as f:
    f.write("step\\tloss\\n" + "".join(f"{s}\\t{1 / (1 + s * lr * 100):.4f}\\n" for s in range(epochs)))
pairs = [(0, 0), (0, 1), (1, 1), (1, 1), (1, 0 if lr < 0.0015 else 1)]
json.dump([{"actual": a, "predicted": b} for a, b in pairs], open("reports/evaluate/plots/confusion.json", "w"))
"""

DVC_YAML = """\
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
      - reports/evaluate/plots:
          cache: false
    metrics:
      - reports/evaluate/metrics.json:
          cache: false
      - reports/benchmark/metrics.json:
          cache: false
"""


def run(repo: Path, *command: str) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=repo, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}\n{result.stderr}"
    return result


def report(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=repo, capture_output=True, text=True, timeout=300
    )


def squeeze(markdown: str) -> str:
    """DVC pads its tables; compare cells, not spaces."""
    return re.sub(r" +", " ", markdown)


@pytest.fixture
def two_runs(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    run(repo, *git, "init", "-q", "-b", "main")
    run(repo, sys.executable, "-m", "dvc", "init", "-q")
    (repo / "params.yaml").write_text("train:\n  lr: 0.001\n  epochs: 4\n")
    (repo / "stage.py").write_text(STAGE)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    run(repo, sys.executable, "-m", "dvc", "repro", "-q")
    run(repo, *git, "add", "-A")
    run(repo, *git, "commit", "-qm", "base run")
    run(repo, *git, "checkout", "-qb", "faster-lr")
    (repo / "params.yaml").write_text("train:\n  lr: 0.002\n  epochs: 4\n")
    run(repo, sys.executable, "-m", "dvc", "repro", "-q")
    return repo


def test_report_shows_param_change_metric_deltas_latency_and_plots(two_runs):
    result = report(two_runs, "--base", "main", "--out", "pr/report.md")
    assert result.returncode == 0, result.stderr
    markdown = (two_runs / "pr" / "report.md").read_text()
    flat = squeeze(markdown)

    assert "| params.yaml | train.lr | 0.001 | 0.002 |" in flat
    assert "train.epochs" not in flat  # unchanged parameters stay out
    assert "| reports/evaluate/metrics.json | test.mcc | 0.41 | 0.42 | 0.01 |" in flat
    assert "| reports/evaluate/metrics.json | test.accuracy | 0.705 | 0.71 | 0.005 |" in flat
    assert "| reports/benchmark/metrics.json | onnx_int8.latency_ms.p50 | 4 | 5 | +1 (+25.0%) |" in flat
    assert "| reports/benchmark/metrics.json | onnx_int8.latency_ms.p95 | 7 | 9 | +2 (+28.6%) |" in flat

    images = re.findall(r"!\[([^\]]+)\]\(\./(report-images/[^)]+\.png)\)", markdown)
    assert [title for title, _ in images] == ["Training curves", "Confusion matrix (test)"]
    for _, path in images:
        assert (two_runs / "pr" / path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "DVC warnings" not in markdown


def test_report_without_changes_says_so(two_runs):
    subprocess.run(["git", "checkout", "-q", "--", "."], cwd=two_runs, check=True)  # back to the base run
    result = report(two_runs, "--base", "main", "--no-plots")
    assert result.returncode == 0, result.stderr
    markdown = (two_runs / "report.md").read_text()
    assert "_No parameter changes._" in markdown and "_No metric changed._" in markdown
    assert "| reports/benchmark/metrics.json | onnx_int8.latency_ms.p50 | 4 | 4 | +0 (+0.0%) |" in squeeze(
        markdown
    )


def test_unknown_base_revision_is_a_clear_error(two_runs):
    result = report(two_runs, "--base", "origin/nope", "--no-plots")
    assert result.returncode == 1
    assert "`dvc params diff origin/nope --md` failed" in result.stderr
    assert "fetch-depth: 0" in result.stderr and "Traceback" not in result.stderr
    assert not (two_runs / "report.md").exists()
