"""scripts/deploy_gate.py on real git repositories (and real GTO tags): what decides a deploy, and under which model
version. The gate runs as the workflow runs it: `python -m scripts.deploy_gate` with GitHub's env, in a checkout,
writing $GITHUB_OUTPUT. LIVE_SHA stands for the serving stack's DeployedSha output (the workflow reads it with
scripts/serving_stack.py; tests/aws/test_workflow_runs.py reads it from moto's CloudFormation)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from scripts import deploy_gate
from tests.aws.awsenv import REPO_ROOT, checkout_env, script
from tests.aws.github_api import FakeGitHubApi

pytestmark = pytest.mark.integration

REPO = "example/cola-mlops"


def lock(bundle: str, benchmark: str = "b0") -> str:
    """A dvc.lock with the bundle (export_onnx) and another stage's output, as DVC writes them."""
    return (
        "schema: '2.0'\nstages:\n  export_onnx:\n    cmd: python -m stages.export_onnx\n    outs:\n"
        f"    - path: artifacts/bundle\n      hash: md5\n      md5: {bundle}.dir\n      size: 10\n      nfiles: 2\n"
        f"  benchmark:\n    cmd: python -m stages.benchmark\n    outs:\n"
        f"    - path: reports/benchmark/variants.json\n      hash: md5\n      md5: {benchmark}\n      size: 3\n"
    )


class Repo:
    def __init__(self, path: Path):
        self.path = path
        path.mkdir()
        self.git("init", "-q", "-b", "main")
        self.git("config", "user.email", "ci@example.com")
        self.git("config", "user.name", "ci")

    def git(self, *args: str) -> str:
        done = subprocess.run(["git", *args], cwd=self.path, capture_output=True, text=True)
        assert done.returncode == 0, f"git {args}: {done.stderr}"
        return done.stdout.strip()

    def commit(self, message: str, **files: str) -> str:
        for name, text in files.items():
            target = self.path / name.replace("__", "/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD")

    def gto(self, *args: str) -> str:
        done = subprocess.run(["gto", *args], cwd=self.path, capture_output=True, text=True)
        assert done.returncode == 0, f"gto {args}: {done.stdout}{done.stderr}"
        return done.stdout

    def gate(self, tmp_path: Path, **env: str) -> tuple[int, dict[str, str], str]:
        output = tmp_path / f"output-{len(list(tmp_path.glob('output-*')))}"
        output.touch()
        base = {"PATH": __import__("os").environ["PATH"], "GITHUB_REPOSITORY": REPO, "GITHUB_OUTPUT": str(output)}
        done = subprocess.run(
            script("deploy_gate"), cwd=self.path, env=checkout_env({**base, **env}), capture_output=True, text=True
        )
        outputs = dict(line.split("=", 1) for line in output.read_text().splitlines())
        return done.returncode, outputs, done.stdout + done.stderr


def ci_run(sha: str, **changed: str) -> dict[str, str]:
    facts = {
        "GITHUB_EVENT_NAME": "workflow_run",
        "CI_CONCLUSION": "success",
        "CI_EVENT": "push",
        "CI_HEAD_BRANCH": "main",
        "CI_HEAD_SHA": sha,
        "CI_HEAD_REPO": REPO,
    }
    return {**facts, **changed}


@pytest.fixture
def repo(tmp_path) -> Repo:
    repo = Repo(tmp_path / "repo")
    (repo.path / "dvc.yaml").write_text((REPO_ROOT / "dvc.yaml").read_text())  # the project's artifacts: section
    repo.commit("first", **{"app__main.py": "v1\n", "README.md": "x\n", "dvc.lock": lock("aaa")})
    return repo


def test_an_image_change_that_never_deployed_is_deployed_by_the_next_docs_only_commit(repo, tmp_path):
    """Issue 19's reproduction: A changes the image but its deploy never happens (ci cancelled, deploy failed or
    replaced in the queue); B after it changes only docs. Against its parent B has nothing to deploy; against what
    is live it must deploy A's change."""
    live = repo.git("rev-parse", "HEAD")
    a = repo.commit("A: image change", **{"app__main.py": "v2\n"})
    b = repo.commit("B: docs only", **{"README.md": "better docs\n"})
    status, out, log = repo.gate(tmp_path, **ci_run(b), LIVE_SHA=live)
    assert status == 0 and out["deploy"] == "true" and out["sha"] == b, log
    assert f"since the live commit {live}, changed app/main.py" in log
    # What the old gate did (B vs its first parent A = what is live only if A had deployed):
    _, out, log = repo.gate(tmp_path, **ci_run(b), LIVE_SHA=a)
    assert out["deploy"] == "false" and "nothing the image depends on changed since the live commit" in log


@pytest.mark.parametrize(
    "change, deploys",
    [
        ({"README.md": "docs\n", "tests__test_x.py": "pass\n", "stages__train.py": "x\n"}, False),
        ({"dvc.lock": lock("aaa", benchmark="b1")}, False),  # another stage's output re-ran: same bundle
        ({"dvc.lock": lock("bbb")}, True),  # a new bundle
        ({"contract__bundle.py": "x\n"}, True),
        ({"deploy__template.yaml": "x\n"}, True),
        ({"deploy__hooks__pre_traffic.py": "x\n"}, True),
        ({"docker__Dockerfile.lambda": "x\n"}, True),
        ({"docker__requirements-lambda.txt": "x\n"}, True),
        ({".github__workflows__deploy.yml": "x\n"}, True),
        ({".dockerignore": "x\n"}, True),
        ({"docker__fetch-wheels.sh": "x\n"}, True),
        # a file input covers only itself; a folder input only what is under it
        ({"docker__Dockerfile.lambda.orig": "x\n", "deploy__template.yaml.bak": "x\n", "app.md": "x\n"}, False),
    ],
)
def test_deploys_exactly_when_an_input_of_the_image_or_its_deployment_differs_from_live(
    repo, tmp_path, change, deploys
):
    live = repo.git("rev-parse", "HEAD")
    head = repo.commit("change", **change)
    status, out, log = repo.gate(tmp_path, **ci_run(head), LIVE_SHA=live)
    assert status == 0 and out["deploy"] == str(deploys).lower(), log
    if not deploys:  # nothing to register either
        assert out == {"deploy": "false", "register": "false", "sha": head, "version": ""}, log


def test_nothing_live_deploys(repo, tmp_path):
    head = repo.commit("docs", **{"README.md": "y\n"})
    _, out, log = repo.gate(tmp_path, **ci_run(head), LIVE_SHA="")
    assert out["deploy"] == "true" and "nothing is live" in log


def test_the_live_commit_itself_is_not_redeployed(repo, tmp_path):
    head = repo.git("rev-parse", "HEAD")
    _, out, log = repo.gate(tmp_path, **ci_run(head), LIVE_SHA=head)
    assert out == {"deploy": "false", "register": "false", "sha": head, "version": ""} and "it is what is live" in log


@pytest.mark.parametrize("live", ["unknown", "diverged"])
def test_a_live_commit_outside_mains_history_deploys(repo, tmp_path, live):
    if live == "unknown":
        live_sha = "0123456789abcdef0123456789abcdef01234567"
    else:  # e.g. a branch deployed by hand, or history rewritten since
        repo.git("checkout", "-q", "-b", "elsewhere")
        live_sha = repo.commit("elsewhere", **{"README.md": "z\n"})
        repo.git("checkout", "-q", "main")
    head = repo.commit("docs", **{"README.md": "y\n"})
    _, out, log = repo.gate(tmp_path, **ci_run(head), LIVE_SHA=live_sha)
    assert out["deploy"] == "true" and f"the live commit {live_sha} is not in main's history" in log


@pytest.mark.parametrize(
    "changed",
    [
        {"CI_CONCLUSION": "failure"},
        {"CI_CONCLUSION": "cancelled"},
        {"CI_EVENT": "pull_request"},
        {"CI_HEAD_BRANCH": "feature"},  # issue 26: branch varied alone
        {"CI_HEAD_REPO": "someone/cola-mlops-fork"},
    ],
)
def test_each_ci_condition_alone_stops_a_deploy(repo, tmp_path, changed):
    live = repo.git("rev-parse", "HEAD")
    head = repo.commit("image change", **{"app__main.py": "v2\n"})
    _, out, _ = repo.gate(tmp_path, **ci_run(head), LIVE_SHA=live)
    assert out["deploy"] == "true"  # the baseline deploys: only `changed` differs below
    status, out, log = repo.gate(tmp_path, **ci_run(head, **changed), LIVE_SHA=live)
    assert status == 0 and out == {"deploy": "false", "register": "false", "sha": head, "version": ""}, log
    assert "only a successful push to main of this repository deploys" in log


def test_unexpected_event_is_refused(repo, tmp_path):
    status, _, log = repo.gate(tmp_path, GITHUB_EVENT_NAME="push", GITHUB_SHA=repo.git("rev-parse", "HEAD"))
    assert status == 1 and "::error::deploy refused: unexpected event 'push'" in log


def test_model_version_first_same_bundle_and_new_bundle(repo, tmp_path):
    first = repo.git("rev-parse", "HEAD")
    _, out, _ = repo.gate(tmp_path, **ci_run(first), LIVE_SHA="")
    assert (out["version"], out["register"]) == ("v1.0.0", "true")
    repo.gto("register", "cola-classifier", first, "--version", "v1.0.0")
    code_only = repo.commit("code", **{"app__main.py": "v2\n"})
    _, out, _ = repo.gate(tmp_path, **ci_run(code_only), LIVE_SHA=first)
    assert (out["deploy"], out["version"], out["register"]) == ("true", "v1.0.0", "false")
    new_bundle = repo.commit("retrained", **{"dvc.lock": lock("bbb")})
    _, out, _ = repo.gate(tmp_path, **ci_run(new_bundle), LIVE_SHA=code_only)
    assert (out["version"], out["register"]) == ("v1.1.0", "true")
    repo.gto("register", "cola-classifier", new_bundle, "--version", "v1.1.0")
    back = repo.commit("git revert of the model", **{"dvc.lock": lock("aaa")})
    _, out, _ = repo.gate(tmp_path, **ci_run(back), LIVE_SHA=new_bundle)
    assert (out["version"], out["register"]) == ("v1.0.0", "false")  # that bundle is v1.0.0 already
    newest = repo.commit("retrained again", **{"dvc.lock": lock("ccc")})
    _, out, _ = repo.gate(tmp_path, **ci_run(newest), LIVE_SHA=back)
    assert (out["version"], out["register"]) == ("v1.2.0", "true")  # the newest version's next minor


def dispatch(repo: Repo, ref: str = "refs/heads/main", version: str = "") -> dict[str, str]:
    return {
        "GITHUB_EVENT_NAME": "workflow_dispatch",
        "GITHUB_REF": ref,
        "GITHUB_SHA": repo.git("rev-parse", "HEAD"),
        "VERSION": version,
    }


def test_dispatch_of_a_version_deploys_exactly_its_commit(repo, tmp_path):
    v1 = repo.git("rev-parse", "HEAD")
    repo.gto("register", "cola-classifier", v1, "--version", "v1.0.0")
    repo.commit("retrained", **{"dvc.lock": lock("bbb")})
    status, out, log = repo.gate(tmp_path, **dispatch(repo, version="v1.0.0"), LIVE_SHA="whatever")
    assert status == 0 and out == {"deploy": "true", "register": "false", "sha": v1, "version": "v1.0.0"}, log


@pytest.mark.parametrize("runs", [0, 1, 2])
def test_dispatch_of_main_deploys_its_head_only_if_github_has_a_green_ci_push_run(repo, tmp_path, runs):
    head = repo.git("rev-parse", "HEAD")
    with FakeGitHubApi(runs={head: runs}) as github:
        status, out, log = repo.gate(tmp_path, **dispatch(repo), GITHUB_API_URL=github.url, GITHUB_TOKEN="t0ken")
    [(path, query, headers)] = github.asked
    assert path == f"/repos/{REPO}/actions/workflows/ci.yml/runs"
    assert query == {"head_sha": head, "branch": "main", "event": "push", "status": "success", "per_page": "1"}
    assert headers["Authorization"] == "Bearer t0ken"
    if runs == 0:
        assert status == 1 and out == {}, log
        assert f"::error::deploy refused: no successful ci run (push to main) for {head}" in log
    else:
        assert status == 0 and out == {"deploy": "true", "register": "true", "sha": head, "version": "v1.0.0"}, log
        assert f"manual dispatch of main at {head}, ci green" in log


def test_dispatch_of_main_is_refused_in_one_line_when_github_cannot_answer(repo, tmp_path):
    head = repo.git("rev-parse", "HEAD")
    with FakeGitHubApi(runs={head: 1}, status=401) as github:
        status, out, log = repo.gate(tmp_path, **dispatch(repo), GITHUB_API_URL=github.url, GITHUB_TOKEN="t0ken")
    assert status == 1 and out == {} and "Traceback" not in log, log
    assert log.strip() == (
        f"::error::deploy refused: could not ask GitHub whether ci passed on {head} "
        f"({github.url}/repos/{REPO}/actions/workflows/ci.yml/runs): HTTP Error 401: Unauthorized"
    )


@pytest.mark.parametrize(
    "ref, version, error",
    [
        ("refs/heads/feature", "", "dispatched on refs/heads/feature; only refs/heads/main deploys"),
        ("refs/heads/feature", "v1.0.0", "dispatched on refs/heads/feature; only refs/heads/main deploys"),
        ("refs/tags/v1.0.0", "", "dispatched on refs/tags/v1.0.0; only refs/heads/main deploys"),  # sorts after main
        ("refs/heads/main", "v9.9.9", "cola-classifier@v9.9.9 is not a registered version"),
        ("refs/heads/main", "latest", "cola-classifier@latest is not a registered version"),
        ("refs/heads/main", "v2.0.0", "cola-classifier@v2.0.0 is on "),
    ],
)
def test_dispatch_refusals(repo, tmp_path, ref, version, error):
    repo.gto("register", "cola-classifier", "HEAD", "--version", "v1.0.0")
    repo.git("checkout", "-q", "-b", "side")
    repo.commit("side", **{"app__main.py": "side\n"})
    repo.gto("register", "cola-classifier", "HEAD", "--version", "v2.0.0")  # a version off main
    repo.git("checkout", "-q", "main")
    status, out, log = repo.gate(tmp_path, **dispatch(repo, ref=ref, version=version))
    assert status == 1 and out == {} and f"::error::deploy refused: {error}" in log
    assert version != "v2.0.0" or "which is not on main" in log


def test_after_a_rollback_automatic_deploys_hold_until_a_deliberate_one(repo, tmp_path):
    v1 = repo.git("rev-parse", "HEAD")
    repo.gto("register", "cola-classifier", v1, "--version", "v1.0.0")
    repo.gto("assign", "cola-classifier", "--version", "v1.0.0", "--stage", "prod")
    v2 = repo.commit("retrained", **{"dvc.lock": lock("bbb")})
    repo.gto("register", "cola-classifier", v2, "--version", "v1.1.0")
    repo.gto("assign", "cola-classifier", "--version", "v1.1.0", "--stage", "prod")
    head = repo.commit("image change", **{"app__main.py": "v3\n"})
    _, out, _ = repo.gate(tmp_path, **ci_run(head), LIVE_SHA=v2)
    assert out["deploy"] == "true"
    # v1.1.0 misbehaves: a person rolls back (the tag push dispatches deploy.yml with v1.0.0, which goes live)
    repo.gto("assign", "cola-classifier", "--version", "v1.0.0", "--stage", "prod", "--force")
    _, out, log = repo.gate(tmp_path, **ci_run(head), LIVE_SHA=v1)
    assert out == {"deploy": "false", "register": "false", "sha": head, "version": ""}, log
    assert "prod was rolled back to v1.0.0 (newest: v1.1.0)" in log
    status, out, _ = repo.gate(tmp_path, **dispatch(repo, version="v1.0.0"))
    assert status == 0 and out["deploy"] == "true" and out["sha"] == v1  # a rollback itself is never held
    # promoting v1.1.0 again (what the release job does after a deliberate deploy of main) lifts the hold
    repo.gto("assign", "cola-classifier", "--version", "v1.1.0", "--stage", "prod", "--force")
    _, out, _ = repo.gate(tmp_path, **ci_run(head), LIVE_SHA=v1)
    assert out["deploy"] == "true"


def test_the_registry_of_this_repository(repo):
    """dvc.yaml declares the bundle under the name the workflows use; .gto allows only the `prod` stage."""
    import yaml

    declared = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["artifacts"]
    assert (
        declared[deploy_gate.ARTIFACT]["path"] == deploy_gate.BUNDLE
        and declared[deploy_gate.ARTIFACT]["type"] == "model"
    )
    (repo.path / ".gto").write_text((REPO_ROOT / ".gto").read_text())
    repo.commit("registry config")
    repo.gto("register", "cola-classifier", "HEAD", "--version", "v1.0.0")
    typo = subprocess.run(["gto", "assign", "cola-classifier", "--version", "v1.0.0", "--stage", "prd"], cwd=repo.path,
                          capture_output=True, text=True)  # fmt: skip
    assert typo.returncode == 1 and "Allowed stages are" in typo.stdout + typo.stderr
    repo.gto("assign", "cola-classifier", "--version", "v1.0.0", "--stage", "prod")
    assert repo.gto("show", "cola-classifier#prod", "--ref").strip() == "cola-classifier@v1.0.0"
    assert "assignment" in repo.gto("history", "cola-classifier")


def commit_whose_hash(repo: Repo, wanted, tries: int = 64) -> str:
    """Empty commits until one's hash satisfies `wanted` (each try is a coin flip of at least 1/4 below)."""
    for attempt in range(tries):
        sha = repo.commit(f"retrained {attempt}")
        if wanted(sha):
            return sha
    raise AssertionError(f"{tries} commits, none with the wanted hash")


def test_a_rollback_is_recognised_by_the_prod_commit_and_semver_not_by_text_order(repo, tmp_path):
    """The prod assignment is matched to its version by commit identity, and "newest" is semver (v1.11.0 > v1.9.0,
    which text order gets wrong); versions sit on commits whose hashes sort on both sides of prod's."""
    prod = commit_whose_hash(repo, lambda sha: "4" <= sha < "c")  # mid-range: both sides stay likely
    repo.gto("register", "cola-classifier", prod, "--version", "v1.9.0")
    repo.gto("register", "cola-classifier", commit_whose_hash(repo, lambda sha: sha > prod), "--version", "v1.10.0")
    repo.gto("register", "cola-classifier", commit_whose_hash(repo, lambda sha: sha < prod), "--version", "v1.11.0")
    repo.gto("assign", "cola-classifier", "--version", "v1.11.0", "--stage", "prod")
    repo.gto("assign", "cola-classifier", "--version", "v1.9.0", "--stage", "prod")  # the rollback
    head = repo.commit("image change", **{"app__main.py": "v2\n"})
    _, out, log = repo.gate(tmp_path, **ci_run(head), LIVE_SHA=prod)
    assert out["deploy"] == "false" and "prod was rolled back to v1.9.0 (newest: v1.11.0)" in log, log
