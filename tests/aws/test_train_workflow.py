"""The `train` workflow (.github/workflows/train.yml), run step by step (tests/aws/workflow_runner.py) on this CPU:
moto_server's S3 is the DVC remote, a bare git repository is `origin` ("GitHub"), and every job runs in its own
fresh clone of it, as on GitHub's machines. The project is this one with the smoke config on the CoLA-format
fixture (tests/fixtures/cola), its pipeline cut after `train`, its raw data pushed to the remote. Every `run:` step
is the real one (dvc, git, make, scripts/train_plan.py, the stages); `cml` and `gh` are the runner's stubs, and the
steps that only pip-install what this machine has are skipped.

A two-experiment sweep is pushed as DVC experiments; a second clone pulls them (`dvc exp pull origin`), lists them
with their metrics (`dvc exp show`) and restores one's model from the remote (`dvc exp apply` + `dvc pull`), as a
person choosing the winner would. A bad -S key or value fails the plan job before any experiment job starts.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import yaml

from tests.aws.awsenv import DUMMY_AWS_ENV, REGION, REPO_ROOT
from tests.aws.test_workflow_runs import host_env, stub_calls  # the deploy tests' runner machine
from tests.aws.workflow_runner import Runner

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BUCKET = "cola-mlops-dvc"  # .dvc/config's remote "s3"
REPO = "example/cola-mlops"
PROJECT = [
    ".github/workflows/train.yml",
    "scripts/__init__.py",
    "scripts/train_plan.py",
    "cola",
    "stages",
    "app",
    "contract",
    "runtime",
    "conf",
    "hydra_plugins",
    "dvc_plots_template",
    "data/minimal_pairs.tsv",
    "dvc.yaml",
    ".dvc/config",
    ".dvc/.gitignore",
    ".gitignore",
    "Makefile",
    "requirements.txt",
]
# Downloads only: this machine has what they install.
SKIP = {
    "Install DVC and Hydra (pinned in requirements.txt; no torch for a check)",
    "Install the pipeline's requirements",
    "Install DVC (pinned in requirements.txt)",
}
PLAN_STEP = "Check every experiment's overrides (the typed config, as dvc exp run -S composes it)"
SMOKE_DEFAULTS = {"train: default": "train: smoke", "benchmark: default": "benchmark: smoke"}
# The copy's pipeline ends at train (evaluate, export and benchmark add minutes and nothing this test checks).
PIPELINE = ["prepare", "train"]


def sh(cwd: Path, *command: str, env: dict | None = None) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env)
    assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
    return done.stdout.strip()


def local_s3(clone: Path, endpoint: str) -> None:
    """Per-machine DVC config (.dvc/config.local, git-ignored): where 'S3' is. On GitHub it is real S3."""
    (clone / ".dvc").mkdir(exist_ok=True)
    (clone / ".dvc" / "config.local").write_text(f"['remote \"s3\"']\n    endpointurl = {endpoint}\n")


@pytest.fixture
def origin(tmp_path, aws_env, cola_dir) -> Path:
    """The 'GitHub' repository (bare): the project with the smoke config, its raw data in the (moto) S3 remote."""
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
    seed = tmp_path / "seed"
    for name in PROJECT:
        source, target = REPO_ROOT / name, seed / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target)
    config = (seed / "conf" / "config.yaml").read_text()
    for old, new in SMOKE_DEFAULTS.items():
        assert old in config, f"conf/config.yaml no longer has {old!r}"
        config = config.replace(old, new)
    values = {"data": {"local_dir": str(cola_dir), "max_train_rows": 240, "max_test_rows": 48}}
    (seed / "conf" / "config.yaml").write_text(config + "\n" + yaml.safe_dump(values))
    pipeline = yaml.safe_load((seed / "dvc.yaml").read_text())
    pipeline["stages"] = {name: pipeline["stages"][name] for name in PIPELINE}
    (seed / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(seed), "DVC_NO_ANALYTICS": "1"}
    sh(seed, sys.executable, "-m", "cola.config", env=env)
    sh(seed, "git", "init", "-q", "-b", "main")
    sh(seed, sys.executable, "-m", "stages.get_data", env=env)  # data/raw + data/raw.dvc
    sh(seed, "git", "add", "-A")
    sh(seed, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "project, smoke config")
    local_s3(seed, aws_env)
    sh(seed, "dvc", "push", "-q", "-r", "s3", "data/raw.dvc", env=env)
    bare = tmp_path / "origin.git"
    sh(tmp_path, "git", "clone", "-q", "--bare", str(seed), str(bare))
    return bare


def run_train(
    origin: Path,
    tmp_path: Path,
    endpoint: str,
    inputs: dict,
    variables: dict | None = None,
    open_pr: int | None = None,
    **runner_options,
):
    """Dispatch train.yml on main with `inputs`; every job in a fresh clone of origin (a new machine)."""
    machines: dict[str, Path] = {}

    def fresh_clone(label: str) -> Path:
        clone = tmp_path / f"machine-{len(machines)}"
        sh(tmp_path, "git", "clone", "-q", "--no-checkout", str(origin), str(clone))
        local_s3(clone, endpoint)
        machines[label] = clone
        return clone

    env, log = host_env(tmp_path, endpoint, DVC_NO_ANALYTICS="1", WANDB_MODE="disabled")
    if open_pr:  # GitHub's answer to `gh pr list --head <branch>`: this PR is open for the branch
        gh = tmp_path / "stubs" / "gh"
        gh.write_text(gh.read_text() + f"if sys.argv[1:3] == ['pr', 'list']:\n    print({open_pr})\n")
    runner = Runner(
        workflow=REPO_ROOT / ".github" / "workflows" / "train.yml",
        workdir=tmp_path,  # replaced by a fresh clone for every job
        event_name="workflow_dispatch",
        event={"inputs": {"params": "", "sweep": "", "hardware": "", "stage": "", **inputs}},
        repository=REPO,
        sha=sh(origin, "git", "rev-parse", "main"),
        ref="refs/heads/main",
        host_env=env,
        aws_credentials={k: DUMMY_AWS_ENV[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")},
        variables={
            "AWS_REGION": REGION,
            "AWS_TRAIN_ROLE_ARN": "arn:aws:iam::123456789012:role/cola-train",
            **(variables or {}),
        },
        skip=SKIP,
        job_workdir=fresh_clone,
        **{"secrets": {"GITHUB_TOKEN": "ghs_dummy"}, **runner_options},
    )
    return runner.run(), machines, log


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_a_sweep_runs_one_job_per_experiment_and_another_clone_pulls_compares_and_restores_them(
    origin, tmp_path, aws_env
):
    inputs = {"name": "lr", "sweep": "model.lr=1e-4,3e-4", "stage": "train"}
    jobs, machines, log = run_train(origin, tmp_path, aws_env, inputs)
    assert jobs["plan"].status == "success", jobs["plan"].log
    assert json.loads(jobs["plan"].outputs["matrix"])["include"] == [
        {"name": "lr-1", "overrides": ["model.lr=0.0001", "hardware=cpu"]},
        {"name": "lr-2", "overrides": ["model.lr=0.0003", "hardware=cpu"]},
    ]
    assert jobs["runners"].status == "skipped"  # TRAIN_CML_LAUNCH unset: the runners exist already
    experiment = jobs["experiment"]
    assert experiment.status == "success", experiment.log
    assert [run.matrix["name"] for run in experiment.runs] == ["lr-1", "lr-2"]
    for run in experiment.runs:
        assert run.step("Check the GPU").outcome == "skipped"  # hardware=cpu
        assert f"[{run.matrix['name']}]" in run.summary and "best_val_mcc" in run.summary, run.summary
    report = jobs["report"]
    assert report.status == "success", report.log
    assert "[lr-1]" in report.summary and "[lr-2]" in report.summary, report.summary
    assert "Not pushed" not in report.summary
    [pr_lookup] = stub_calls(log, "gh")
    assert pr_lookup["args"][:4] == ["pr", "list", "--head", "main"]
    assert stub_calls(log, "cml") == []  # no open PR for main (the stub answers none): the summary only
    # nothing but experiments reached origin: main is where it was, and one ref per experiment
    assert sh(origin, "git", "rev-parse", "main") == sh(tmp_path / "seed", "git", "rev-parse", "main")
    refs = sh(origin, "git", "for-each-ref", "--format=%(refname)").splitlines()
    assert sorted(r.rsplit("/", 1)[-1] for r in refs if r.startswith("refs/exps/")) == ["lr-1", "lr-2"]
    assert [r for r in refs if not r.startswith("refs/exps/")] == ["refs/heads/main"]

    # A colleague's clone: pull the experiments, compare them, restore one's model from the S3 remote.
    mine = tmp_path / "colleague"
    sh(tmp_path, "git", "clone", "-q", str(origin), str(mine))
    local_s3(mine, aws_env)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    sh(mine, "dvc", "exp", "pull", "-r", "s3", "origin", env=env)  # the experiments of HEAD, outputs from S3
    shown = sh(mine, "dvc", "exp", "show", "--csv", "--keep", r"Experiment|model\.lr$|best_val_mcc", env=env)
    rows = {row["Experiment"]: row for row in csv.DictReader(io.StringIO(shown)) if row["Experiment"]}
    assert set(rows) == {"lr-1", "lr-2"}, shown
    for name, lr in (("lr-1", 1e-4), ("lr-2", 3e-4)):
        assert float(rows[name]["model.lr"]) == pytest.approx(lr)
        assert -1 <= float(rows[name]["best_val_mcc"]) <= 1, shown
    columns = ["--drop", ".*", "--keep", r"Experiment|model\.lr$|best_val_mcc"]
    print(sh(mine, "dvc", "exp", "show", "--md", *columns, env=env))  # for the record (pytest -s)

    sh(mine, "dvc", "exp", "apply", "lr-2", env=env)
    shutil.rmtree(mine / ".dvc" / "cache", ignore_errors=True)  # only the remote has it now
    shutil.rmtree(mine / "models" / "model", ignore_errors=True)
    sh(mine, "dvc", "pull", "-r", "s3", "models/model", env=env)
    trained_on_the_runner = machines[next(label for label in machines if "lr-2" in label)]
    weights = "models/model/model.safetensors"
    assert md5(mine / weights) == md5(trained_on_the_runner / weights)
    assert "Data and pipelines are up to date" in sh(mine, "dvc", "status", "train", env=env)
    assert yaml.safe_load((mine / "params.yaml").read_text())["model"]["lr"] == pytest.approx(3e-4)


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        ({"params": "model.lrr=1e-4"}, "model.lrr: Key 'lrr' not in 'ModelConfig'"),  # unknown key
        ({"params": "model.lr=abc"}, "model.lr: Value 'abc' of type 'str' could not be converted to Float"),
        ({"sweep": "model.lr=1e-4,-1"}, "experiment bad-2 (model.lr=-1 hardware=cpu): "),  # bounds, 2nd of a sweep
        ({"hardware": "tpu"}, "Could not find 'hardware/tpu'"),
        ({"hardware": "gpu", "params": "train.trainer.precision=bf16-mix"}, "precision='bf16-mix' must be one of"),
    ],
)
def test_a_bad_override_fails_the_plan_with_one_line_before_any_experiment(origin, tmp_path, aws_env, inputs, expected):
    jobs, machines, log = run_train(origin, tmp_path, aws_env, {"name": "bad", **inputs})
    plan = jobs["plan"]
    step = plan.step(PLAN_STEP)
    assert plan.status == "failure" and step.outcome == "failure"
    errors = [line for line in step.output.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("::error::train refused before any training:"), step.output
    assert expected in errors[0] and "Traceback" not in step.output
    assert jobs["runners"].status == "skipped" and jobs["experiment"].status == "skipped"
    assert jobs["report"].status == "skipped"
    assert list(machines) == ["plan"]  # no machine besides the plan's was ever used
    assert re.search(r"refs/exps/", sh(origin, "git", "for-each-ref")) is None


LAUNCH_STEP = "Launch GPU runners on AWS (spot; each terminates after the idle timeout)"


@pytest.mark.parametrize("token", [True, False])
def test_cml_launches_one_spot_gpu_runner_per_parallel_slot_with_the_training_role(origin, tmp_path, aws_env, token):
    """TRAIN_CML_LAUNCH=true: the runners job asks `cml runner launch` (the stub) for min(experiments, max parallel)
    instances with the variables' settings, after assuming the training role; the experiments then default to the
    GPU group and the runners' label. Stopped before the experiments install anything (what they do on a runner is
    the test above)."""
    variables = {"TRAIN_CML_LAUNCH": "true", "TRAIN_MAX_PARALLEL": "2", "TRAIN_INSTANCE_TYPE": "g6.xlarge"}
    secrets = {"GITHUB_TOKEN": "ghs_dummy", **({"CML_RUNNER_TOKEN": "github_pat_dummy"} if token else {})}
    inputs = {"name": "lr", "sweep": "model.lr=1e-5,3e-5,1e-4"}
    jobs, machines, log = run_train(
        origin, tmp_path, aws_env, inputs, variables, secrets=secrets, stop_before="Install the pipeline's requirements"
    )
    assert jobs["plan"].outputs["runners"] == "2"
    assert all(
        o[-1] == "hardware=gpu" for o in (e["overrides"] for e in json.loads(jobs["plan"].outputs["matrix"])["include"])
    )
    runners = jobs["runners"]
    assert "assumed arn:aws:iam::123456789012:role/cola-train" in runners.log
    launches = [call for call in stub_calls(log, "cml") if call["args"][:2] == ["runner", "launch"]]
    if not token:
        assert runners.status == "failure" and launches == []
        step = runners.step(LAUNCH_STEP)
        assert "::error::secret CML_RUNNER_TOKEN is not set" in step.output
        assert jobs["experiment"].status == "skipped"  # no runner would ever take them
        return
    assert runners.status == "success", runners.log
    assert len(launches) == 2 and all(call["repo_token"] for call in launches)
    for i, call in enumerate(launches, start=1):
        assert set(call["args"]) >= {
            "--cloud=aws",
            f"--cloud-region={REGION}",
            "--cloud-type=g6.xlarge",
            "--cloud-spot",
            "--idle-timeout=600",
            "--labels=cml-gpu",
            f"--name=cml-train-4242-{i}",
        }


def test_the_table_goes_to_the_open_pull_request_of_the_dispatched_branch(origin, tmp_path, aws_env):
    """The report job comments on the branch's open PR (gh answers #7 here) with the table, also when experiments
    failed: stopped before the experiments install anything, none was pushed, and the report says so and fails."""
    jobs, _, log = run_train(
        origin, tmp_path, aws_env, {"name": "ls", "params": "train.label_smoothing=0.1"}, open_pr=7,
        stop_before="Install the pipeline's requirements",
    )  # fmt: skip
    report = jobs["report"]
    [comment] = stub_calls(log, "cml")
    assert comment["args"] == ["comment", "create", "--target=pr/7", "report.md"]
    assert "Not pushed (failed): ls" in comment["report"] and "| Experiment" in comment["report"]
    assert report.status == "failure" and report.step("Fail unless every experiment succeeded").outcome == "failure"
