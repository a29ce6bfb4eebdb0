"""The PR-report and deploy workflows, run step by step (scripts/run_workflow_locally.py) in a throwaway git+DVC
repository against moto_server: every `run:` step as written, with the real dvc, git and scripts; only `cml`,
`docker` and the `uses:` actions are stood in for (they need GitHub or a Docker engine; see the runner's docstring).

The repository carries the project's workflows and scripts and a one-stage pipeline (`export_onnx` writes
artifacts/bundle from a param), so a "PR" is a param or code edit on a branch, and CI works in a fresh clone
(no DVC cache, outputs only from the remote), as on GitHub.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import boto3
import pytest

from tests.aws.awsenv import DUMMY_AWS_ENV, REGION, REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))
from run_workflow_locally import Runner, install_stubs  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = "example/cola-mlops"
BUCKET = "cola-ci-dvc"
WORKFLOWS = REPO_ROOT / ".github" / "workflows"
# Downloads only: `pip install` of what this machine already has, the image's wheels from PyPI.
PR_SKIP = {"Install"}
DEPLOY_SKIP = {"Install DVC and boto3 (pinned in the requirements files)", "Fetch the image's wheels"}
# Needs a public API Gateway URL for its smoke test; tests/aws/test_deploy_lambda.py covers this script end to end.
DEPLOY_STEP = "Deploy, smoke-test, roll back on failure"
PROJECT_PATHS = [
    ".github/workflows",
    "scripts",
    "stages",
    "cola",
    "app",
    "contract",
    "docker/Dockerfile.lambda",
    "docker/requirements-lambda.txt",
    "docker/fetch-wheels.sh",
    ".dockerignore",
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
DVC_YAML = """stages:
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


class FakeGitHubApi(http.server.BaseHTTPRequestHandler):
    """GitHub's REST API for the one question the deploy gate asks: successful ci runs for a commit."""

    green: set[str] = set()
    asked: list[str] = []

    def do_GET(self):
        FakeGitHubApi.asked.append(self.path)
        sha = next(
            (p.split("=", 1)[1] for p in self.path.split("?", 1)[-1].split("&") if p.startswith("head_sha=")), ""
        )
        body = json.dumps({"total_count": int(sha in FakeGitHubApi.green)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

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
    # what is there was pulled (main's v1 bundle), nothing was rerun
    assert (tmp_path / "ci" / "artifacts" / "bundle" / "model.onnx").read_text() == "weights v1\n"


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


# --- deploy -----------------------------------------------------------------------------------------------------


def merge_to_main(origin: Path, version: int) -> str:
    """A PR that ran the pipeline and pushed, merged: main's new commit records the new bundle."""
    pr_branch(origin, version, push=True)
    sh(origin, "git", "checkout", "-q", "main")
    sh(origin, "git", "merge", "-q", "--no-ff", "-m", "Merge PR", "feature")
    return sh(origin, "git", "rev-parse", "HEAD")


def run_deploy(
    origin: Path,
    tmp_path: Path,
    endpoint: str,
    event_name: str,
    event: dict,
    ref: str = "refs/heads/main",
    api: str = "",
):
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
            "AWS_DEPLOY_ROLE_ARN": "arn:aws:iam::123456789012:role/cola-deploy",
            "LAMBDA_ROLE_ARN": "arn:aws:iam::123456789012:role/cola-serving-lambda",
        },
        secrets={"GITHUB_TOKEN": "ghs_dummy"},
        skip=DEPLOY_SKIP,
        stop_before=DEPLOY_STEP,
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
    ecr = boto3.client("ecr", region_name=REGION)
    try:
        images = ecr.list_images(repositoryName="cola-serving")["imageIds"]
    except ecr.exceptions.RepositoryNotFoundException:
        return []
    return [image["imageTag"] for image in images if "imageTag" in image]


def test_deploy_after_green_ci_builds_exactly_the_locked_bundle(origin, tmp_path, aws_env):
    sha = merge_to_main(origin, 2)
    jobs, log = run_deploy(origin, tmp_path, aws_env, "workflow_run", ci_completed(sha))
    assert jobs["gate"].outputs == {"deploy": "true", "sha": sha}, jobs["gate"].log
    assert jobs["deploy"].status == "success", jobs["deploy"].log
    assert (
        "artifacts/bundle matches dvc.lock"
        in jobs["deploy"].step("Pull the serving bundle that dvc.lock records, and verify it").output
    )
    [build] = [c for c in stub_calls(log, "docker") if c["args"][0] == "build"]
    assert build["args"][-2].endswith(f"/cola-serving:{sha}") and build["bundle_files"] == [
        "manifest.json",
        "model.onnx",
    ]
    assert ecr_tags() == [sha]


def test_deploy_refuses_a_bundle_that_differs_from_dvc_lock(origin, tmp_path, aws_env):
    sha = merge_to_main(origin, 2)
    # Someone overwrote the remote object of the locked model file (same key, other bytes).
    s3 = boto3.client("s3", region_name=REGION)
    model_md5 = __import__("hashlib").md5(b"weights v2\n").hexdigest()
    key = f"cola/files/md5/{model_md5[:2]}/{model_md5[2:]}"
    s3.head_object(Bucket=BUCKET, Key=key)  # it is where DVC put it
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"weights tampered\n")
    jobs, log = run_deploy(origin, tmp_path, aws_env, "workflow_run", ci_completed(sha))
    pull = jobs["deploy"].step("Pull the serving bundle that dvc.lock records, and verify it")
    assert jobs["deploy"].status == "failure" and pull.outcome == "failure"
    assert "::error::artifacts/bundle is not the bundle this commit's dvc.lock records" in pull.output
    assert stub_calls(log, "docker") == [] and ecr_tags() == []


@pytest.mark.parametrize(
    "ci",
    [
        {"conclusion": "failure"},
        {"event": "pull_request", "repo": "someone/cola-mlops-fork"},  # a fork's branch named main
    ],
)
def test_deploy_skipped_unless_ci_passed_on_a_push_to_main(origin, tmp_path, aws_env, ci):
    sha = merge_to_main(origin, 2)
    jobs, log = run_deploy(origin, tmp_path, aws_env, "workflow_run", ci_completed(sha, **ci))
    assert jobs["gate"].status == "success" and jobs["gate"].outputs["deploy"] == "false"
    assert "only a successful push to main of this repository deploys" in jobs["gate"].log
    assert jobs["deploy"].status == "skipped" and ecr_tags() == []


def test_docs_only_change_does_not_redeploy(origin, tmp_path, aws_env):
    (origin / "README.md").write_text("toy, better documented\n")
    sha = commit(origin, "docs")
    jobs, _ = run_deploy(origin, tmp_path, aws_env, "workflow_run", ci_completed(sha))
    assert jobs["gate"].outputs["deploy"] == "false"
    assert "nothing the image depends on changed" in jobs["gate"].log
    assert jobs["deploy"].status == "skipped"


def test_dispatch_from_another_branch_is_refused(origin, tmp_path, aws_env):
    jobs, _ = run_deploy(origin, tmp_path, aws_env, "workflow_dispatch", {}, ref="refs/heads/feature")
    assert jobs["gate"].status == "failure"
    assert "::error::deploy refused: dispatched on refs/heads/feature; only refs/heads/main deploys" in jobs["gate"].log
    assert jobs["deploy"].status == "skipped" and ecr_tags() == []


def test_dispatch_on_main_deploys_only_a_commit_ci_passed_on(origin, tmp_path, aws_env):
    sha = sh(origin, "git", "rev-parse", "main")
    FakeGitHubApi.green, FakeGitHubApi.asked = set(), []
    api = serve(FakeGitHubApi)
    jobs, _ = run_deploy(origin, tmp_path, aws_env, "workflow_dispatch", {}, api=api)
    assert jobs["gate"].status == "failure" and f"no successful ci run (push to main) for {sha}" in jobs["gate"].log
    assert jobs["deploy"].status == "skipped"
    FakeGitHubApi.green = {sha}
    jobs, _ = run_deploy(origin, tmp_path, aws_env, "workflow_dispatch", {}, api=api)
    assert jobs["gate"].outputs == {"deploy": "true", "sha": sha} and jobs["deploy"].status == "success"
    assert ecr_tags() == [sha]
    assert all("/actions/workflows/ci.yml/runs?" in path and "status=success" in path for path in FakeGitHubApi.asked)


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


def test_deploy_refuses_when_the_locked_bundle_was_never_pushed(origin, tmp_path, aws_env):
    """E.g. a fork PR merged before a maintainer pushed its outputs: nothing is built."""
    pr_branch(origin, 4, push=False)
    sh(origin, "git", "checkout", "-q", "main")
    sh(origin, "git", "merge", "-q", "--no-ff", "-m", "Merge fork PR", "feature")
    sha = sh(origin, "git", "rev-parse", "HEAD")
    jobs, log = run_deploy(origin, tmp_path, aws_env, "workflow_run", ci_completed(sha))
    pull = jobs["deploy"].step("Pull the serving bundle that dvc.lock records, and verify it")
    assert jobs["deploy"].status == "failure" and pull.outcome == "failure"
    assert "artifacts/bundle" in pull.output
    assert stub_calls(log, "docker") == [] and ecr_tags() == []
