"""scripts/check_reviewed.py `pr` on a real git+DVC repository with a moto S3 remote (the fixtures of
test_dvc_remote.py): it names exactly the outputs the remote lacks, by listing, and downloads nothing -- not the
missing outputs, not the pushed ones (issue 19: the PR check pulled ~414 MB on every run)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from tests.aws.awsenv import REPO_ROOT
from tests.aws.test_dvc_remote import BUCKET, OUTPUTS, dvc, pipeline_repo, use_s3, wipe  # noqa: F401 (fixture)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def check(repo: Path) -> subprocess.CompletedProcess:
    script = REPO_ROOT / "scripts" / "check_reviewed.py"
    return subprocess.run(
        [sys.executable, str(script), "pr", "--remote", "s3"], cwd=repo, capture_output=True, text=True
    )


def downloaded(repo: Path) -> list[str]:
    cache = repo / ".dvc" / "cache"
    files = [p for p in cache.rglob("*") if p.is_file()] if cache.exists() else []
    return [p.relative_to(repo).as_posix() for p in files] + [o for o in OUTPUTS if (repo / o).exists()]


@pytest.mark.parametrize(
    "pushed", [[], ["artifacts/bundle/model.onnx"], ["data/prepared", "models/model"], list(OUTPUTS)]
)
def test_pr_check_names_what_the_remote_lacks_without_downloading(pipeline_repo, aws_env, pushed):  # noqa: F811
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    use_s3(pipeline_repo, aws_env)
    if pushed:
        dvc(pipeline_repo, "push", "-r", "s3", *pushed)
    wipe(pipeline_repo)  # what CI has: a clone with no cache and no outputs
    done = check(pipeline_repo)
    missing = [o for o in OUTPUTS if o not in pushed]
    if missing:
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert (
            f"::error::outputs recorded in dvc.lock are not in the DVC remote 's3': {', '.join(sorted(missing))} --"
            in done.stdout
        )
    else:
        assert done.returncode == 0, done.stdout + done.stderr
        assert "all 3 outputs are in 's3' (listed, not downloaded); dvc.lock is current" in done.stdout
    assert downloaded(pipeline_repo) == []


def test_pr_check_fails_on_a_stale_stage_without_the_data(pipeline_repo, aws_env):  # noqa: F811
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    use_s3(pipeline_repo, aws_env)
    dvc(pipeline_repo, "push", "-r", "s3")
    wipe(pipeline_repo)
    (pipeline_repo / "build.py").write_text((pipeline_repo / "build.py").read_text() + "# edited, not re-run\n")
    done = check(pipeline_repo)
    assert done.returncode == 1
    assert "::error::dvc.lock is stale: `dvc repro` would change it (stages: build)" in done.stdout
    assert "build: build.py modified" in done.stdout and downloaded(pipeline_repo) == []
