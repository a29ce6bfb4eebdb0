"""deploy/github-setup.sh, run as written by bash. `gh` and `aws` are stand-ins (GitHub's API and a real AWS account
cannot exist here): a small fake of the endpoints the script calls, keeping the environment's branch policies and
the variables as state, so running the script twice shows it converges instead of duplicating."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.aws.awsenv import REPO_ROOT

SCRIPT = REPO_ROOT / "deploy" / "github-setup.sh"

GH = r"""#!/usr/bin/env python3
import json, os, sys
from pathlib import Path
state_file = Path(os.environ["FAKE_STATE"])
state = json.loads(state_file.read_text())
args = sys.argv[1:]
state["calls"].append(args)
def done(out=""):
    state_file.write_text(json.dumps(state))
    print(out)
    sys.exit(0)
if args[0] == "variable":
    state["variables"][args[2]] = args[args.index("--body") + 1]
    done()
method = args[args.index("--method") + 1] if "--method" in args else "GET"
path = next(a for a in args[1:] if "/" in a and not a.startswith("-"))
body = json.loads(sys.stdin.read()) if "--input" in args else None
if path.startswith("users/"):
    done(str(1000 + len(path)))  # users/alice -> 1011
if path.startswith("orgs/"):
    done("77")
if path.endswith("/environments/production") and method == "PUT":
    state["environment"] = body
    done()
if path.endswith("/deployment-branch-policies"):
    if method == "GET":
        done("\n".join(f"{p['id']} {p['type']} {p['name']}" for p in state["policies"]))
    fields = dict(a.split("=", 1) for a in args if "=" in a and not a.startswith("-"))
    state["policies"].append({"id": len(state["calls"]), **fields})
    done()
if "/deployment-branch-policies/" in path and method == "DELETE":
    state["policies"] = [p for p in state["policies"] if str(p["id"]) != path.rsplit("/", 1)[1]]
    done()
if path.endswith("/oidc/customization/sub"):
    state["oidc"] = body
    done()
sys.exit(f"fake gh: unexpected call {args}")
"""

AWS = r"""#!/usr/bin/env bash
# fake aws: the bootstrap stack's outputs
case "$*" in
  *DeployRoleArn*) echo arn:aws:iam::123456789012:role/cola-serving-github-deploy ;;
  *ReportRoleArn*) echo arn:aws:iam::123456789012:role/cola-serving-github-pr-report ;;
  *TrainRoleArn*) echo arn:aws:iam::123456789012:role/cola-serving-github-train ;;
  *EcrRepositoryUri*) echo 123456789012.dkr.ecr.eu-west-1.amazonaws.com/cola-serving ;;
  *DvcRemoteUrl*) echo s3://cola-dvc-123/dvc ;;
  *ArtifactsBucketName*) echo cola-artifacts-123 ;;
  *) echo "fake aws: unexpected $*" >&2; exit 1 ;;
esac
"""


@pytest.fixture
def fakes(tmp_path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("gh", GH), ("aws", AWS)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    state = tmp_path / "state.json"
    stale = {"id": 5, "type": "branch", "name": "release/*"}  # someone allowed another branch by hand
    state.write_text(json.dumps({"calls": [], "variables": {}, "policies": [stale], "environment": None}))
    return tmp_path


def setup(fakes: Path, *extra: str, **env: str) -> subprocess.CompletedProcess:
    environ = {
        **os.environ,
        "PATH": f"{fakes / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "FAKE_STATE": str(fakes / "state.json"),
        "AWS_REGION": "eu-west-1",
        **env,
    }
    command = ["bash", str(SCRIPT), "org/cola", "cola-bootstrap", "alice", "team:ml-leads", *extra]
    return subprocess.run(command, env=environ, capture_output=True, text=True)


def test_protects_production_pins_the_oidc_subject_and_sets_the_variables_idempotently(fakes):
    for _ in range(2):
        done = setup(fakes, RESERVED_CONCURRENCY="20")
        assert done.returncode == 0, done.stderr
    state = json.loads((fakes / "state.json").read_text())
    environment = state["environment"]
    assert environment["reviewers"] == [{"type": "User", "id": 1011}, {"type": "Team", "id": 77}]
    assert environment["deployment_branch_policy"] == {"protected_branches": False, "custom_branch_policies": True}
    assert [(p["type"], p["name"]) for p in state["policies"]] == [("branch", "main")]  # once, and nothing else
    assert state["oidc"] == {"use_default": False, "include_claim_keys": ["repo", "context", "job_workflow_ref"]}
    assert state["variables"] == {
        "AWS_REGION": "eu-west-1",
        "AWS_DEPLOY_ROLE_ARN": "arn:aws:iam::123456789012:role/cola-serving-github-deploy",
        "AWS_REPORT_ROLE_ARN": "arn:aws:iam::123456789012:role/cola-serving-github-pr-report",
        "AWS_TRAIN_ROLE_ARN": "arn:aws:iam::123456789012:role/cola-serving-github-train",
        "ECR_REPOSITORY": "cola-serving",
        "DVC_S3_URL": "s3://cola-dvc-123/dvc",
        "SAM_ARTIFACTS_BUCKET": "cola-artifacts-123",
        "RESERVED_CONCURRENCY": "20",
    }


def test_without_reviewers_it_prints_its_usage_and_changes_nothing(fakes):
    done = subprocess.run(["bash", str(SCRIPT), "org/cola"], capture_output=True, text=True)
    assert done.returncode == 2 and "github-setup.sh <org>/<repo> <bootstrap-stack> <reviewer>" in done.stderr
    assert json.loads((fakes / "state.json").read_text())["calls"] == []
