"""Pipeline tier: the real DVC CLI on a real git repo (a copy of this project) with the smoke config.

Checks what a user relies on: every stage runs and writes its outputs, a second `dvc repro` skips everything,
the truth table (docs/pipeline.md: for every edit of raw data, imported code or a param, `dvc status` lists exactly
the stages the dependency rules expect), a param read only by `evaluate` reruns only `evaluate`, and
`dvc exp run -S model.lr=...` makes an experiment.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from cola.paths import ROOT
from tests import pipeline_rules as rules

pytestmark = [pytest.mark.slow, pytest.mark.integration]

PROJECT = [
    "cola",
    "stages",
    "app",
    "contract",
    "runtime",
    "conf",
    "hydra_plugins",  # registers the config schema when `dvc exp run -S` composes conf/
    "dvc_plots_template",  # .dvc/config's plots.html_template
    "data/minimal_pairs.tsv",  # the model card's behavioural checks (export_onnx)
    "dvc.yaml",
    ".dvc/config",
    ".dvc/.gitignore",
    ".gitignore",
    "pyproject.toml",
]
# Smoke settings, written into the copy's conf/config.yaml so `dvc exp run` (which recomposes) keeps them.
SMOKE_DEFAULTS = {"train: default": "train: smoke", "benchmark: default": "benchmark: smoke"}
SMOKE_VALUES = {"data": {"max_train_rows": 240, "max_test_rows": 48}}


def run(repo, *args, check=True, stdout_only=False):
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(repo)}
    result = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=1200)
    output = result.stdout + result.stderr
    if check:
        assert result.returncode == 0, f"{' '.join(args)} failed ({result.returncode}):\n{output[-4000:]}"
    return result.stdout if stdout_only else output


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w@-]+)'", output))


def default_stages(repo) -> set[str]:
    """Stages `dvc repro` runs: frozen ones (e.g. monitor, run on demand) are outside the default path."""
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    return {name for name, stage in stages.items() if not stage.get("frozen")}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cola_dir):
    """The project copy after its first `dvc repro`, everything committed; shared by the module's tests and never
    changed by them: a test that edits, commits or runs anything gets its own copy (`repo`)."""
    repo = tmp_path_factory.mktemp("pipeline")
    for name in PROJECT:
        source, target = ROOT / name, repo / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)
    config = (repo / "conf" / "config.yaml").read_text()
    for old, new in SMOKE_DEFAULTS.items():
        assert old in config, f"conf/config.yaml no longer has {old!r}; update SMOKE_DEFAULTS"
        config = config.replace(old, new)
    values = {**SMOKE_VALUES, "data": {**SMOKE_VALUES["data"], "local_dir": str(cola_dir)}}
    (repo / "conf" / "config.yaml").write_text(config + "\n" + yaml.safe_dump(values))
    run(repo, sys.executable, "-m", "cola.config")  # compose params.yaml inside the copy
    run(repo, "git", "init", "-q", "-b", "main")
    run(repo, sys.executable, "-m", "stages.get_data")  # data/raw + data/raw.dvc, as on a fresh clone
    run(repo, "git", "add", "-A")
    run(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base")
    output = run(repo, "dvc", "repro")
    run(repo, "git", "add", "-A")  # dvc.lock and the reports, as after `make pipeline` and a commit
    run(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first repro")
    return repo, output


@pytest.fixture
def first_repro(trained) -> str:
    return trained[1]


@pytest.fixture
def repo(trained, tmp_path):
    """This test's own copy of the trained project (workspace, git history, DVC cache): a few seconds instead of a
    new `dvc repro`, and nothing it does reaches another test."""
    copy = tmp_path / "project"
    shutil.copytree(trained[0], copy, symlinks=True)
    return copy


def test_first_repro_runs_every_stage_and_writes_outputs(repo, first_repro, cola_dir):
    assert ran_stages(first_repro) == default_stages(repo)
    for path in [
        "data/prepared/train.parquet",
        "data/prepared/validation.parquet",
        "data/prepared/test.parquet",
        "data/prepared/summary.json",
        "data/reference/stats.json",
        "models/model/config.json",
        "models/model/model.safetensors",
        "reports/train/metrics.json",
        "reports/train/misclassified_validation.csv",
        "reports/evaluate/metrics.json",
        "reports/evaluate/plots/confusion.json",
        "reports/evaluate/misclassified.csv",
        "artifacts/bundle/model.onnx",
        "artifacts/bundle/manifest.json",
        "reports/export/metrics.json",
        "reports/benchmark/metrics.json",
        "dvc.lock",
    ]:
        assert (repo / path).is_file(), f"{path} was not written"
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert set(lock) == default_stages(repo)
    summary = json.loads((repo / "data/prepared/summary.json").read_text())
    assert summary["rows"]["test"] == 48
    raw = next(dep for dep in lock["prepare"]["deps"] if dep["path"] == "data/raw")
    tracked = yaml.safe_load((repo / "data/raw.dvc").read_text())
    assert raw["md5"] == tracked["outs"][0]["md5"]  # dvc.lock pins the exact raw bytes the run used
    assert tracked["meta"] == {"source": "local", "location": str(cola_dir)}
    for name in ("train.tsv", "validation.tsv"):
        assert (repo / "data/raw" / name).read_bytes() == (cola_dir / name).read_bytes()


def test_metrics_and_plots_commands_work(repo, first_repro):
    metrics = json.loads(run(repo, "dvc", "metrics", "show", "--json", stdout_only=True))
    text = json.dumps(metrics)
    for path in ("reports/evaluate/metrics.json", "reports/export/metrics.json", "reports/benchmark/metrics.json"):
        assert path in text, f"{path} missing from dvc metrics show"
    assert '"mcc"' in text
    run(repo, "dvc", "plots", "show", "-o", "plots_html")
    html = (repo / "plots_html" / "index.html").read_text()
    assert "Confusion matrix (test)" in html and "Training curves" in html


def test_second_repro_skips_everything(repo, first_repro):
    output = run(repo, "dvc", "repro")
    assert ran_stages(output) == set()
    assert "Data and pipelines are up to date" in run(repo, "dvc", "status")


def changed_stages(repo) -> set[str]:
    return set(json.loads(run(repo, "dvc", "status", "--json", stdout_only=True)))


def changed_value(value):
    """A different value of the same kind (nothing runs: `dvc status` only compares)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, list):
        return [*value, value[-1] if value else 1]
    return 1 if value is None else f"{value}-changed"


def set_key(params: dict, key: str, change) -> dict:
    *parents, leaf = key.split(".")
    node = params
    for part in parents:
        node = node[part]
    node[leaf] = change(node[leaf])
    return params


def test_truth_table_status_lists_exactly_the_expected_stages(repo, first_repro):
    """Each edit alone, then restored: `dvc status` must list exactly what the dependency rules expect."""
    raw = repo / "data/raw/train.tsv"
    params_file = repo / "params.yaml"
    params_text = params_file.read_text()
    wrong = []
    for edit, expected in rules.truth_table(repo):
        if edit.startswith("one byte of"):
            target, original = raw, raw.read_bytes()
            changed = original[:-2] + bytes([original[-2] ^ 1]) + original[-1:]  # a label 0 <-> 1
        elif edit.startswith("a comment in"):
            target = repo / edit.removeprefix("a comment in ")
            original = target.read_bytes()
            changed = original + b"\n# truth-table probe\n"
        else:
            key = edit.removeprefix("params.yaml ")
            target, original = params_file, params_text.encode()
            params = yaml.safe_load(params_text)
            changed = yaml.safe_dump(set_key(params, key, changed_value), sort_keys=False).encode()
        target.unlink()  # a new file, never a write into a cache-linked one
        target.write_bytes(changed)
        try:
            seen = changed_stages(repo)
        finally:
            target.unlink()
            target.write_bytes(original)
        if seen != expected:
            wrong.append(f"{edit}: dvc status lists {sorted(seen)}, expected {sorted(expected)}")
    assert not wrong, "\n".join(wrong)
    assert changed_stages(repo) == set()


def test_param_read_only_by_evaluate_reruns_only_evaluate(repo, first_repro):
    conf = repo / "conf" / "evaluate" / "default.yaml"
    evaluate = yaml.safe_load(conf.read_text())
    conf.write_text(yaml.safe_dump({**evaluate, "batch_size": evaluate["batch_size"] // 2}))
    run(repo, sys.executable, "-m", "cola.config")
    assert ran_stages(run(repo, "dvc", "repro")) == {"evaluate"}
    run(repo, "git", "add", "-A")
    run(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "evaluate batch size")


def _lrs(node) -> list:
    """Every model.lr found in `dvc exp show --json` output, whatever its nesting."""
    if isinstance(node, dict):
        found = []
        if "params.yaml" in node and isinstance(node["params.yaml"], dict):
            lr = node["params.yaml"].get("data", {}).get("model", {}).get("lr")
            found.append(lr)
        for value in node.values():
            found += _lrs(value)
        return found
    if isinstance(node, list):
        return [lr for item in node for lr in _lrs(item)]
    return []


def workspace(repo) -> tuple[str, str]:
    """What `git status` and `dvc status` say: a failed experiment must leave both as they were."""
    return run(repo, "git", "status", "--porcelain", stdout_only=True), run(repo, "dvc", "status")


def test_exp_run_with_a_wrongly_typed_value_fails_before_any_stage(repo, first_repro):
    """The schema applies when DVC composes conf/: nothing runs, nothing is removed, params.yaml is untouched."""
    before = workspace(repo)
    output = run(repo, "dvc", "exp", "run", "-S", "model.lr=abc", check=False)
    assert "Error merging override model.lr=abc: Value 'abc' of type 'str' could not be converted to Float" in output
    assert ran_stages(output) == set()
    assert workspace(repo) == before
    assert "Data and pipelines are up to date" in before[1]


def test_exp_run_with_an_out_of_bounds_value_fails_in_one_line_that_says_how_to_restore(repo, first_repro):
    """Bounds are checked by the stage's first step, after DVC removed its outputs: the line says so, and the
    commands it names bring everything back."""
    before = workspace(repo)
    output = run(repo, "dvc", "exp", "run", "-S", "model.lr=-1", check=False)
    assert ran_stages(output) == {"train"}
    line = next(line for line in output.splitlines() if line.startswith("train failed:"))
    assert "model.lr=-1.0 must be > 0" in line and "Traceback" not in output, output[-3000:]
    assert not (repo / "models/model").exists() and not (repo / "reports/train/metrics.json").exists()  # as it says
    restore = [cmd for cmd in re.findall(r"`([^`]+)`", line) if re.match(r"(git|dvc) checkout", cmd)]
    assert restore == [
        "dvc checkout train",
        "git checkout HEAD -- reports/train",
        "git checkout HEAD -- params.yaml",
    ], line
    for command in restore:  # the line's own commands bring everything back
        run(repo, *command.split())
    assert workspace(repo) == before


def test_exp_run_set_param_makes_a_visible_experiment(repo, first_repro):
    output = run(repo, "dvc", "exp", "run", "-S", "model.lr=3e-5")
    assert "train" in ran_stages(output)
    lrs = _lrs(json.loads(run(repo, "dvc", "exp", "show", "--json", stdout_only=True)))
    assert 3e-5 in lrs, f"experiment with model.lr=3e-5 not in dvc exp show: {lrs}"
    assert any(lr != 3e-5 for lr in lrs)  # the baseline keeps its own lr
