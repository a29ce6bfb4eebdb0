"""The PR-report and deploy workflows, run step by step (tests/aws/workflow_runner.py) in a throwaway git+DVC
repository against moto_server: every `run:` step as written, with the real dvc, git, gto and scripts (ECR and
CloudFormation in moto); only `cml`, `docker`, `sam` and the `uses:` actions are stood in for (they need GitHub, a
Docker engine, or a SAM transform moto lacks; see the runner's docstring). The release job's `gto ... --push` pushes
real tags to the "GitHub" repository.

The repository carries the project's workflows and scripts and a one-stage pipeline (`export_onnx` writes
artifacts/bundle from a param), so a "PR" is a param or code edit on a branch, and CI works in a fresh clone
(no DVC cache, outputs only from the remote), as on GitHub.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import boto3
import pytest
import yaml

from tests.aws.awsenv import DUMMY_AWS_ENV, REGION, REPO_ROOT
from tests.aws.github_api import FakeGitHubApi
from tests.aws.workflow_runner import Runner, install_stubs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = "example/cola-mlops"
BUCKET = "cola-ci-dvc"
WORKFLOWS = REPO_ROOT / ".github" / "workflows"
# Downloads only: `pip install` of what this machine already has, the image's wheels from PyPI.
PR_SKIP = {"Install"}
DEPLOY_SKIP = {
    "Install boto3 (pinned in requirements-dev.txt)",
    "Install DVC, boto3 and the SAM CLI (pinned)",
    "Fetch the image's wheels",
    "Install GTO (pinned in requirements-dev.txt)",
}
PULL_STEP = "Pull the serving bundle that dvc.lock records, and verify it"
PROJECT_PATHS = [
    ".github/workflows",
    "scripts",
    "stages",
    "cola",
    "app",
    "contract",
    "runtime",
    "docker/Dockerfile.lambda",
    "docker/requirements-lambda.txt",
    "docker/fetch-wheels.sh",
    ".dockerignore",
    "deploy/template.yaml",
    "deploy/hooks",
    "requirements.txt",
    "requirements-dev.txt",
]

MAKE_BUNDLE = """import json, pathlib, yaml
version = yaml.safe_load(open("params.yaml"))["export"]["version"]
bundle = pathlib.Path("artifacts/bundle"); bundle.mkdir(parents=True, exist_ok=True)
(bundle / "model.onnx").write_text(f"weights v{version}\\n")
(bundle / "manifest.json").write_text(json.dumps({"version": version}))
pathlib.Path("reports/export").mkdir(parents=True, exist_ok=True)
pathlib.Path("reports/export/metrics.json").write_text(json.dumps({"served": {"test_mcc": 0.1 * version}}))
"""
DVC_YAML = """artifacts:
  cola-classifier:
    path: artifacts/bundle
    type: model
stages:
  export_onnx:
    cmd: python make_bundle.py
    deps: [make_bundle.py]
    params: [export.version]
    outs: [artifacts/bundle]
    metrics:
      - reports/export/metrics.json:
          cache: false
"""


def sh(cwd: Path, *command: str) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
    return done.stdout.strip()


def commit(repo: Path, message: str) -> str:
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-q", "-m", message)
    return sh(repo, "git", "rev-parse", "HEAD")


def set_version(repo: Path, version: int) -> None:
    (repo / "params.yaml").write_text(f"export:\n  version: {version}\n")


class Tripwire(http.server.BaseHTTPRequestHandler):
    """An AWS endpoint that must never be called: counts requests, answers 500."""

    hits: list[str] = []

    def do_any(self):
        Tripwire.hits.append(f"{self.command} {self.path}")
        self.send_response(500)
        self.end_headers()

    do_GET = do_PUT = do_POST = do_HEAD = do_any

    def log_message(self, *args):
        pass


def serve(handler) -> str:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def origin(tmp_path, aws_env):
    """The 'GitHub' repository: main with a pipeline run whose outputs are pushed to the (moto) S3 remote."""
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
    repo = tmp_path / "origin"
    repo.mkdir()
    sh(repo, "git", "init", "-q", "-b", "main")
    sh(repo, "git", "config", "user.email", "ci@example.com")
    sh(repo, "git", "config", "user.name", "ci")
    for path in PROJECT_PATHS:
        for name in sh(REPO_ROOT, "git", "ls-files", "--cached", "--others", "--exclude-standard", path).splitlines():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, repo / name)
    (repo / "make_bundle.py").write_text(MAKE_BUNDLE)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    (repo / "README.md").write_text("toy\n")
    set_version(repo, 1)
    sh(repo, "dvc", "init", "-q")
    sh(repo, "dvc", "remote", "add", "s3", f"s3://{BUCKET}/cola")
    local_s3(repo, aws_env)
    sh(repo, "dvc", "repro", "-q")
    commit(repo, "pipeline v1")
    sh(repo, "dvc", "push", "-q", "-r", "s3")
    return repo


def local_s3(repo: Path, endpoint: str) -> None:
    """Per-machine DVC config (.dvc/config.local, never committed): where 'S3' is. On GitHub it is real S3."""
    sh(repo, "dvc", "remote", "modify", "--local", "s3", "endpointurl", endpoint)


def ci_clone(origin: Path, tmp_path: Path, endpoint: str, name: str = "ci") -> Path:
    """What actions/checkout gives: a fresh clone (no DVC cache, no outputs) with origin/* refs."""
    clone = tmp_path / name
    sh(tmp_path, "git", "clone", "-q", "--no-checkout", str(origin), str(clone))
    (clone / ".dvc").mkdir()  # checked out by the workflow's checkout step; this file is git-ignored
    (clone / ".dvc" / "config.local").write_text(f"['remote \"s3\"']\n    endpointurl = {endpoint}\n")
    return clone


def host_env(tmp_path: Path, endpoint: str, **extra: str) -> tuple[dict, Path]:
    """The runner machine: stubs first on PATH; AWS_* only as given (configure-aws-credentials adds keys)."""
    log = install_stubs(tmp_path / "stubs")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GITHUB_"))}
    env.update(
        {
            "PATH": f"{tmp_path / 'stubs'}{os.pathsep}{env['PATH']}",
            "STUB_LOG": str(log),
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
            **extra,
        }
    )
    return env, log


def stub_calls(log: Path, tool: str) -> list[dict]:
    lines = log.read_text().splitlines() if log.exists() else []
    return [call for call in map(json.loads, lines) if call["tool"] == tool]


def run_pr(origin: Path, tmp_path: Path, endpoint: str, head_repo: str = REPO, env_extra: dict | None = None):
    head = sh(origin, "git", "rev-parse", "HEAD")
    branch = sh(origin, "git", "rev-parse", "--abbrev-ref", "HEAD")
    clone = ci_clone(origin, tmp_path, endpoint)
    env, log = host_env(tmp_path, endpoint, **(env_extra or {}))
    event = {
        "pull_request": {
            "number": 7,
            "base": {"ref": "main"},
            "head": {"ref": branch, "sha": head, "repo": {"full_name": head_repo}},
        }
    }
    runner = Runner(
        workflow=WORKFLOWS / "pr-report.yml",
        workdir=clone,
        event_name="pull_request",
        event=event,
        repository=REPO,
        sha=head,
        ref="refs/pull/7/merge",
        host_env=env,
        aws_credentials={k: DUMMY_AWS_ENV[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")},
        variables={"AWS_REGION": REGION, "AWS_REPORT_ROLE_ARN": "arn:aws:iam::123456789012:role/cola-pr-report"},
        secrets={"GITHUB_TOKEN": "ghs_dummy"},
        skip=PR_SKIP,
        artifacts=tmp_path / "artifacts",
    )
    return runner.run()["report"], log


def pr_branch(origin: Path, version: int, push: bool) -> None:
    sh(origin, "git", "checkout", "-q", "-b", "feature")
    set_version(origin, version)
    sh(origin, "dvc", "repro", "-q")
    commit(origin, f"pipeline v{version}")
    if push:
        sh(origin, "dvc", "push", "-q", "-r", "s3")


CHECK = "Check that the outputs are pushed and dvc.lock is current"


def test_pr_with_outputs_pushed_is_green_and_updates_one_watermarked_comment(origin, tmp_path, aws_env):
    pr_branch(origin, 2, push=True)
    job, log = run_pr(origin, tmp_path, aws_env)
    assert job.status == "success", job.log
    assert "dvc.lock is current" in job.step(CHECK).output
    assert_nothing_downloaded(tmp_path / "ci")
    [comment] = stub_calls(log, "cml")
    assert comment["args"][:3] == ["comment", "update", "--target=pr"]
    assert "--watermark-title=cola-pr-report" in comment["args"]
    assert not any(arg.startswith("--publish") for arg in comment["args"])  # no public asset host
    assert "Pipeline: this PR vs `origin/main`" in comment["report"] and "artifact `pr-report`" in comment["report"]
    assert "Pipeline: this PR" in job.summary
    assert (tmp_path / "artifacts" / "pr-report" / "report.md").exists()


def test_pr_with_outputs_not_pushed_fails_clearly(origin, tmp_path, aws_env):
    pr_branch(origin, 2, push=False)
    job, log = run_pr(origin, tmp_path, aws_env)
    assert job.status == "failure"
    check = job.step(CHECK)
    assert check.outcome == "failure"
    assert "::error::outputs recorded in dvc.lock are not in the DVC remote 's3': artifacts/bundle" in check.output
    assert_nothing_downloaded(tmp_path / "ci")
    assert "dvc push -r s3" in check.output
    assert stub_calls(log, "cml") == []  # no report of unreviewable outputs


def test_pr_with_stale_dvc_lock_fails_clearly_without_retraining(origin, tmp_path, aws_env):
    sh(origin, "git", "checkout", "-q", "-b", "feature")
    (origin / "make_bundle.py").write_text(MAKE_BUNDLE + "# changed, pipeline not rerun\n")
    commit(origin, "edit the stage, forget dvc repro")
    job, _ = run_pr(origin, tmp_path, aws_env)
    check = job.step(CHECK)
    assert job.status == "failure" and check.outcome == "failure"
    assert "::error::dvc.lock is stale: `dvc repro` would change it (stages: export_onnx)" in check.output
    assert "make_bundle.py modified" in check.output
    assert_nothing_downloaded(tmp_path / "ci")  # and nothing was rerun


def assert_nothing_downloaded(clone: Path) -> None:
    """The PR check lists the remote; it never pulls (issue 19: ~414 MB per PR before)."""
    assert not (clone / "artifacts" / "bundle").exists()
    cache = clone / ".dvc" / "cache"
    assert [p for p in cache.rglob("*") if p.is_file()] == [] if cache.exists() else True


def run_fork_pr(origin, tmp_path):
    """The PR job as a fork PR sees it: AWS keys on the machine and the endpoint a tripwire, so any AWS call from any
    step is counted in Tripwire.hits."""
    Tripwire.hits = []
    tripwire = serve(Tripwire)
    keys = {k: DUMMY_AWS_ENV[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    return run_pr(origin, tmp_path, tripwire, head_repo="someone/cola-mlops-fork", env_extra=keys)


def test_fork_pr_reports_to_the_summary_green_without_aws(origin, tmp_path, aws_env):
    pr_branch(origin, 3, push=False)  # a fork cannot push to our remote
    job, log = run_fork_pr(origin, tmp_path)
    assert job.status == "success", job.log
    assert Tripwire.hits == []
    assert job.step("AWS credentials for the DVC remote (same-repository PRs only)").outcome == "skipped"
    assert job.step(CHECK).outcome == "skipped"
    assert (
        "fork PR: no access to the DVC remote"
        in job.step("Check what git alone can show (fork PR, no remote access)").output
    )
    assert "Pipeline: this PR vs `origin/main`" in job.summary
    assert stub_calls(log, "cml") == []  # read-only token: no comment


def test_fork_pr_with_stale_dvc_lock_is_warned_green_without_aws(origin, tmp_path, aws_env):
    sh(origin, "git", "checkout", "-q", "-b", "feature")
    (origin / "make_bundle.py").write_text(MAKE_BUNDLE + "# changed, pipeline not rerun\n")
    commit(origin, "fork edits the stage, forgets dvc repro")
    job, _ = run_fork_pr(origin, tmp_path)
    assert job.status == "success", job.log
    assert (
        "::warning::dvc.lock is stale for export_onnx: make_bundle.py modified"
        in job.step("Check what git alone can show (fork PR, no remote access)").output
    )
    assert Tripwire.hits == []


# --- deploy -----------------------------------------------------------------------------------------------------

STACK = "cola-serving"
ARTIFACTS_BUCKET = "cola-sam-artifacts"
IMAGE_URI = re.compile(r"^123456789012\.dkr\.ecr\.us-east-1\.amazonaws\.com/cola-serving@sha256:[0-9a-f]{64}$")


@pytest.fixture
def account(aws_env):
    """What deploy/bootstrap.yaml creates once (moto): the ECR repository (immutable tags) and the artifacts bucket."""
    boto3.client("ecr", region_name=REGION).create_repository(
        repositoryName="cola-serving", imageTagMutability="IMMUTABLE"
    )
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=ARTIFACTS_BUCKET)
    return aws_env


def merge_to_main(origin: Path, version: int) -> str:
    """A PR that ran the pipeline and pushed, merged: main's new commit records the new bundle."""
    pr_branch(origin, version, push=True)
    sh(origin, "git", "checkout", "-q", "main")
    sh(origin, "git", "merge", "-q", "--no-ff", "-m", "Merge PR", "feature")
    sh(origin, "git", "branch", "-q", "-D", "feature")
    return sh(origin, "git", "rev-parse", "HEAD")


def run_deploy(origin: Path, tmp_path: Path, endpoint: str, event_name: str, event: dict, ref: str = "refs/heads/main",
               api: str = "", variables: dict | None = None):  # fmt: skip
    sha = sh(origin, "git", "rev-parse", "main")
    clone = ci_clone(origin, tmp_path, endpoint, name=f"deploy-{len(list(tmp_path.glob('deploy-*')))}")
    env, log = host_env(tmp_path, endpoint, **({"GITHUB_API_URL": api} if api else {}))
    runner = Runner(
        workflow=WORKFLOWS / "deploy.yml",
        workdir=clone,
        event_name=event_name,
        event=event,
        repository=REPO,
        sha=sha,
        ref=ref,
        host_env=env,
        aws_credentials={k: DUMMY_AWS_ENV[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")},
        variables={
            "AWS_REGION": REGION,
            "AWS_DEPLOY_ROLE_ARN": "arn:aws:iam::123456789012:role/cola-serving-github-deploy",
            "AWS_REPORT_ROLE_ARN": "arn:aws:iam::123456789012:role/cola-serving-github-pr-report",
            "SAM_ARTIFACTS_BUCKET": ARTIFACTS_BUCKET,
            **(variables or {}),
        },
        secrets={"GITHUB_TOKEN": "ghs_dummy"},
        skip=DEPLOY_SKIP,
    )
    return runner.run(), log


def ci_completed(
    sha: str, conclusion: str = "success", event: str = "push", branch: str = "main", repo: str = REPO
) -> dict:
    return {
        "workflow_run": {
            "conclusion": conclusion,
            "event": event,
            "head_branch": branch,
            "head_sha": sha,
            "head_repository": {"full_name": repo},
        }
    }


def ecr_tags() -> list[str]:
    images = boto3.client("ecr", region_name=REGION).list_images(repositoryName="cola-serving")["imageIds"]
    return sorted(image["imageTag"] for image in images if "imageTag" in image)


def live() -> dict[str, str]:
    """The serving stack's outputs in (moto's) CloudFormation; {} when there is no stack."""
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    try:
        [stack] = cloudformation.describe_stacks(StackName=STACK)["Stacks"]
    except cloudformation.exceptions.ClientError:
        return {}
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def sam_parameters(call: dict) -> dict[str, str]:
    args = call["args"]
    return dict(a.split("=", 1) for a in args[args.index("--parameter-overrides") + 1 :])


def registry_tags(origin: Path) -> set[str]:
    return set(sh(origin, "git", "tag", "--list", "cola-classifier*").split())


def gto_prod(origin: Path) -> str:
    return sh(origin, "gto", "show", "cola-classifier#prod", "--ref")


def test_first_deploy_builds_the_locked_bundle_hands_the_template_to_sam_and_registers_prod(origin, tmp_path, account):
    sha = merge_to_main(origin, 2)
    jobs, log = run_deploy(origin, tmp_path, account, "workflow_run", ci_completed(sha))
    assert jobs["gate"].outputs == {"deploy": "true", "sha": sha, "version": "v1.0.0", "register": "true"}
    assert "nothing is live" in jobs["gate"].log
    assert jobs["deploy"].status == "success", jobs["deploy"].log
    assert "artifacts/bundle matches dvc.lock" in jobs["deploy"].step(PULL_STEP).output
    [build] = [c for c in stub_calls(log, "docker") if c["args"][0] == "build"]
    assert build["args"][-2] == f"123456789012.dkr.ecr.us-east-1.amazonaws.com/cola-serving:{sha}"
    assert build["bundle_files"] == ["manifest.json", "model.onnx"]
    assert ecr_tags() == [sha]
    [sam] = stub_calls(log, "sam")
    assert {"--no-fail-on-empty-changeset", "--no-confirm-changeset", "CAPABILITY_IAM"} <= set(sam["args"])
    params = sam_parameters(sam)
    image = params.pop("ImageUri")
    assert IMAGE_URI.match(image) and params == {"GitSha": sha, "ModelVersion": "v1.0.0"}
    assert sam["args"][sam["args"].index("--image-repository") + 1] == image.split("@")[0]
    assert live()["DeployedSha"] == sha and live()["ModelVersion"] == "v1.0.0"
    assert f"| DeployedSha | `{sha}` |" in jobs["deploy"].summary
    assert jobs["release"].status == "success", jobs["release"].log
    assert registry_tags(origin) == {"cola-classifier@v1.0.0", "cola-classifier#prod#1"}
    assert gto_prod(origin) == "cola-classifier@v1.0.0"


def test_settings_come_from_repository_variables_and_a_bad_one_fails_in_one_line(origin, tmp_path, account):
    sha = merge_to_main(origin, 2)
    settings = {"RESERVED_CONCURRENCY": "5", "API_AUTH": "JWT", "THROTTLING_RATE_LIMIT": "20", "ARCHITECTURE": "arm64"}
    jobs, log = run_deploy(origin, tmp_path, account, "workflow_run", ci_completed(sha), variables=settings)
    assert jobs["deploy"].status == "success", jobs["deploy"].log
    [build] = [c for c in stub_calls(log, "docker") if c["args"][0] == "build"]
    assert build["args"][build["args"].index("--platform") + 1] == "linux/arm64"  # the function's architecture
    params = sam_parameters(stub_calls(log, "sam")[0])
    assert {k: params[k] for k in ("ReservedConcurrency", "ApiAuth", "ThrottlingRateLimit", "Architecture")} == {
        "ReservedConcurrency": "5", "ApiAuth": "JWT", "ThrottlingRateLimit": "20", "Architecture": "arm64"
    }  # fmt: skip
    boto3.client("cloudformation", region_name=REGION).delete_stack(StackName=STACK)
    jobs, _ = run_deploy(
        origin, tmp_path, account, "workflow_run", ci_completed(sha), variables={"RESERVED_CONCURRENCY": "ten"}
    )
    step = jobs["deploy"].step(
        "Deploy the stack (CloudFormation + CodeDeploy shift the traffic and roll back on AWS's side)"
    )
    assert step.outcome == "failure" and "Parameter 'ReservedConcurrency' must match pattern" in step.output
    assert "Traceback" not in step.output and live() == {} and jobs["release"].status == "skipped"


def test_an_undeployed_image_change_is_deployed_by_the_next_docs_only_commit(origin, tmp_path, account):
    """Issue 19, end to end: A changes the image but its ci run is cancelled; B after it only changes docs. The gate
    reads what is live from CloudFormation and deploys B, which carries A's change."""
    first = merge_to_main(origin, 2)
    run_deploy(origin, tmp_path, account, "workflow_run", ci_completed(first))
    (origin / "app" / "changed.py").write_text("# A\n")
    a = commit(origin, "A: image change")
    jobs, _ = run_deploy(origin, tmp_path, account, "workflow_run", ci_completed(a, conclusion="cancelled"))
    assert jobs["deploy"].status == "skipped" and live()["DeployedSha"] == first
    (origin / "README.md").write_text("toy, better documented\n")
    b = commit(origin, "B: docs only")
    jobs, log = run_deploy(origin, tmp_path, account, "workflow_run", ci_completed(b))
    assert jobs["gate"].outputs["deploy"] == "true", jobs["gate"].log
    assert f"since the live commit {first}, changed app/changed.py" in jobs["gate"].log
    assert jobs["deploy"].status == "success" and live()["DeployedSha"] == b
    # same bundle as v1.0.0: no new version, prod stays
    assert sam_parameters(stub_calls(log, "sam")[-1])["ModelVersion"] == "v1.0.0"
    assert registry_tags(origin) == {"cola-classifier@v1.0.0", "cola-classifier#prod#1"}
    (origin / "README.md").write_text("toy, even better documented\n")
    c = commit(origin, "C: docs only")
    jobs, _ = run_deploy(origin, tmp_path, account, "workflow_run", ci_completed(c))
    assert jobs["gate"].outputs["deploy"] == "false" and jobs["deploy"].status == "skipped"


@pytest.mark.parametrize("image_kept", [True, False])
def test_rollback_to_a_version_deploys_exactly_its_commit_and_bundle(origin, tmp_path, account, image_kept):
    v1 = merge_to_main(origin, 2)
    run_deploy(origin, tmp_path, account, "workflow_run", ci_completed(v1))
    v2 = merge_to_main(origin, 3)
    jobs, log = run_deploy(origin, tmp_path, account, "workflow_run", ci_completed(v2))
    assert jobs["gate"].outputs["version"] == "v1.1.0" and live()["DeployedSha"] == v2
    assert gto_prod(origin) == "cola-classifier@v1.1.0"
    if not image_kept:  # expired by the ECR lifecycle policy: rebuilt from v1's dvc.lock bundle
        boto3.client("ecr", region_name=REGION).batch_delete_image(
            repositoryName="cola-serving", imageIds=[{"imageTag": v1}]
        )
    builds = len([c for c in stub_calls(log, "docker") if c["args"][0] == "build"])

    jobs, log = run_deploy(origin, tmp_path, account, "workflow_dispatch", {"inputs": {"version": "v1.0.0"}})
    assert jobs["gate"].outputs == {"deploy": "true", "sha": v1, "version": "v1.0.0", "register": "false"}
    assert jobs["deploy"].status == "success", jobs["deploy"].log
    new_builds = [c for c in stub_calls(log, "docker") if c["args"][0] == "build"][builds:]
    if image_kept:
        assert new_builds == [] and jobs["deploy"].step(PULL_STEP).outcome == "skipped"
    else:
        [build] = new_builds
        assert build["args"][-2].endswith(f":{v1}")
        assert (tmp_path / "deploy-2" / "artifacts" / "bundle" / "model.onnx").read_text() == "weights v2\n"
    params = sam_parameters(stub_calls(log, "sam")[-1])
    assert (params["GitSha"], params["ModelVersion"]) == (v1, "v1.0.0") and live()["DeployedSha"] == v1
    assert gto_prod(origin) == "cola-classifier@v1.0.0"
    history = sh(origin, "gto", "history", "cola-classifier")
    assert "cola-classifier#prod#3" in history

    # main still holds v1.1.0: automatic deploys wait for a deliberate one
    (origin / "app" / "changed.py").write_text("# after the rollback\n")
    head = commit(origin, "image change after the rollback")
    jobs, _ = run_deploy(origin, tmp_path, account, "workflow_run", ci_completed(head))
    assert jobs["gate"].outputs["deploy"] == "false" and "prod was rolled back to v1.0.0" in jobs["gate"].log


def test_deploy_refuses_a_bundle_that_differs_from_dvc_lock(origin, tmp_path, account):
    sha = merge_to_main(origin, 2)
    # Someone overwrote the remote object of the locked model file (same key, other bytes).
    s3 = boto3.client("s3", region_name=REGION)
    model_md5 = __import__("hashlib").md5(b"weights v2\n").hexdigest()
    key = f"cola/files/md5/{model_md5[:2]}/{model_md5[2:]}"
    s3.head_object(Bucket=BUCKET, Key=key)  # it is where DVC put it
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"weights tampered\n")
    jobs, log = run_deploy(origin, tmp_path, account, "workflow_run", ci_completed(sha))
    pull = jobs["deploy"].step(PULL_STEP)
    assert jobs["deploy"].status == "failure" and pull.outcome == "failure"
    assert "::error::artifacts/bundle is not the bundle this commit's dvc.lock records" in pull.output
    assert_nothing_changed(origin, log)


def assert_nothing_changed(origin: Path, log: Path) -> None:
    assert stub_calls(log, "docker") == [] and ecr_tags() == []
    assert stub_calls(log, "sam") == [] and live() == {}
    assert registry_tags(origin) == set()


def test_a_bundle_not_recorded_in_dvc_lock_is_refused_before_anything_changes(origin, tmp_path, account):
    lock = yaml.safe_load((origin / "dvc.lock").read_text())
    for stage in lock["stages"].values():
        stage["outs"] = [out for out in stage.get("outs", []) if out["path"] != "artifacts/bundle"]
    (origin / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    sha = commit(origin, "a dvc.lock without the bundle")
    jobs, log = run_deploy(origin, tmp_path, account, "workflow_run", ci_completed(sha))
    pull = jobs["deploy"].step(PULL_STEP)
    assert pull.outcome == "failure", jobs["deploy"].log
    assert "::error::artifacts/bundle is not an output recorded in dvc.lock" in pull.output
    assert "dvc pull" not in pull.output and not (tmp_path / "deploy-0" / "artifacts" / "bundle").exists()
    assert_nothing_changed(origin, log)


def test_deploy_refuses_when_the_locked_bundle_was_never_pushed(origin, tmp_path, account):
    """E.g. a fork PR merged before a maintainer pushed its outputs: nothing is built."""
    pr_branch(origin, 4, push=False)
    sh(origin, "git", "checkout", "-q", "main")
    sh(origin, "git", "merge", "-q", "--no-ff", "-m", "Merge fork PR", "feature")
    sha = sh(origin, "git", "rev-parse", "HEAD")
    jobs, log = run_deploy(origin, tmp_path, account, "workflow_run", ci_completed(sha))
    pull = jobs["deploy"].step(PULL_STEP)
    assert jobs["deploy"].status == "failure" and pull.outcome == "failure"
    assert "artifacts/bundle" in pull.output
    assert_nothing_changed(origin, log)


def test_deploy_skipped_unless_ci_passed_on_a_push_to_main(origin, tmp_path, account):
    """Each condition varied alone: tests/aws/test_deploy_gate.py; here, that a skipping gate runs nothing else."""
    sha = merge_to_main(origin, 2)
    jobs, log = run_deploy(origin, tmp_path, account, "workflow_run", ci_completed(sha, branch="feature"))
    assert jobs["gate"].status == "success" and jobs["gate"].outputs["deploy"] == "false"
    assert "only a successful push to main of this repository deploys" in jobs["gate"].log
    assert jobs["deploy"].status == "skipped" and jobs["release"].status == "skipped"
    assert_nothing_changed(origin, log)


def test_dispatch_from_another_branch_is_refused(origin, tmp_path, account):
    jobs, log = run_deploy(origin, tmp_path, account, "workflow_dispatch", {}, ref="refs/heads/feature")
    assert jobs["gate"].status == "failure"
    assert "::error::deploy refused: dispatched on refs/heads/feature; only refs/heads/main deploys" in jobs["gate"].log
    assert jobs["deploy"].status == "skipped"
    assert_nothing_changed(origin, log)


def test_dispatch_on_main_deploys_only_a_commit_ci_passed_on_and_reuses_its_image(origin, tmp_path, account):
    sha = sh(origin, "git", "rev-parse", "main")
    with FakeGitHubApi() as github:
        jobs, _ = run_deploy(origin, tmp_path, account, "workflow_dispatch", {}, api=github.url)
        assert jobs["gate"].status == "failure" and f"no successful ci run (push to main) for {sha}" in jobs["gate"].log
        assert jobs["deploy"].status == "skipped"
        github.runs[sha] = 1
        jobs, log = run_deploy(origin, tmp_path, account, "workflow_dispatch", {}, api=github.url)
        assert jobs["gate"].outputs["deploy"] == "true" and jobs["deploy"].status == "success"
        assert ecr_tags() == [sha]
        assert {path for path, _, _ in github.asked} == {f"/repos/{REPO}/actions/workflows/ci.yml/runs"}
        # a dispatch always deploys, even what is live (e.g. after changing a repository variable); the image is reused
        jobs, log = run_deploy(origin, tmp_path, account, "workflow_dispatch", {}, api=github.url)
    assert jobs["deploy"].status == "success"
    assert (
        "was pushed before (tags are immutable)"
        in jobs["deploy"].step("The commit's image, if an earlier run pushed it").output
    )
    assert len([c for c in stub_calls(log, "docker") if c["args"][0] == "build"]) == 1
    assert len(stub_calls(log, "sam")) == 2 and live()["DeployedSha"] == sha


def run_promote(origin: Path, tmp_path: Path, endpoint: str, stage_tag: str):
    clone = ci_clone(origin, tmp_path, endpoint, name="promote")
    env, log = host_env(tmp_path, endpoint)
    runner = Runner(
        workflow=WORKFLOWS / "promote.yml",
        workdir=clone,
        event_name="push",
        event={"ref": f"refs/tags/{stage_tag}"},
        repository=REPO,
        sha=sh(origin, "git", "rev-parse", f"{stage_tag}^{{commit}}"),
        ref=f"refs/tags/{stage_tag}",
        host_env=env,
        aws_credentials={},
        secrets={"GITHUB_TOKEN": "ghs_dummy"},
    )
    return runner.run()["dispatch"], log


def test_a_prod_tag_pushed_by_a_person_dispatches_the_deploy_of_that_version_on_main(origin, tmp_path, aws_env):
    sh(origin, "gto", "register", "cola-classifier", "HEAD", "--version", "v1.0.0")
    sh(origin, "gto", "assign", "cola-classifier", "--version", "v1.0.0", "--stage", "prod")
    (origin / "README.md").write_text("later\n")
    commit(origin, "later")
    job, log = run_promote(origin, tmp_path, aws_env, "cola-classifier#prod#1")
    assert job.status == "success", job.log
    [dispatch] = stub_calls(log, "gh")
    assert dispatch["token"] and dispatch["args"] == [
        "workflow", "run", "deploy.yml", "--repo", REPO, "--ref", "main", "-f", "version=v1.0.0"
    ]  # fmt: skip


def test_a_prod_tag_on_an_unregistered_commit_dispatches_nothing(origin, tmp_path, aws_env):
    sh(origin, "git", "tag", "cola-classifier#prod#1")  # by hand, without a registered version
    job, log = run_promote(origin, tmp_path, aws_env, "cola-classifier#prod#1")
    assert job.status == "failure" and "no registered cola-classifier version" in job.log
    assert stub_calls(log, "gh") == []
