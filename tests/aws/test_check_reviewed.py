"""scripts/check_reviewed.py on real git+DVC repositories, run as the workflows run it.

`bundle` (the deploy) accepts exactly the bundle dvc.lock records, by DVC's own md5, and names what else it finds;
`pr --no-remote` (fork PRs) reports only git-visible staleness; `pr --remote` with a moto S3 remote (the fixtures of
test_dvc_remote.py) names exactly the outputs the remote lacks, by listing, and downloads nothing -- not the missing
outputs, not the pushed ones (issue 19: the PR check pulled ~414 MB on every run). The fast tests come first: mutation
testing (mutation.toml) runs this file with -x once per mutant."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import boto3
import pytest
import yaml

from tests.aws.awsenv import checkout_env, script
from tests.aws.test_dvc_remote import BUCKET, OUTPUTS, dvc, pipeline_repo, use_s3, wipe  # noqa: F401 (fixture)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def reviewed(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(script("check_reviewed", *args), cwd=repo, env=checkout_env(), capture_output=True, text=True)


def downloaded(repo: Path) -> list[str]:
    cache = repo / ".dvc" / "cache"
    files = [p for p in cache.rglob("*") if p.is_file()] if cache.exists() else []
    return [p.relative_to(repo).as_posix() for p in files] + [o for o in OUTPUTS if (repo / o).exists()]


# ---- `bundle` (the deploy) and what git alone shows (`pr --no-remote`), on a repo with a directory bundle ----

BUILD = """\
from pathlib import Path

import yaml

threshold = yaml.safe_load(open("params.yaml"))["threshold"]
bundle = Path("artifacts/bundle")
(bundle / "tokenizer").mkdir(parents=True, exist_ok=True)
(bundle / "model.onnx").write_bytes(b"onnx" * 100)
(bundle / "tokenizer" / "vocab.txt").write_text("[PAD]\\nthe\\n")
(bundle / "manifest.json").write_text('{"threshold": %s}' % threshold)
"""

BUNDLE_DVC_YAML = """\
stages:
  build:
    cmd: python build.py
    deps: [build.py]
    params: [threshold]
    outs: [artifacts/bundle]
  report:
    cmd: ls -R artifacts/bundle > report.txt
    deps: [artifacts/bundle, notes.txt]
    outs: [report.txt]
"""


@pytest.fixture(scope="module")
def bundle_template(tmp_path_factory) -> Path:
    """Built once (DVC's own md5s in dvc.lock, a *.dvc-tracked folder in a subfolder); each test edits a copy."""
    repo = tmp_path_factory.mktemp("bundle") / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=repo, check=True)
    dvc(repo, "init", "-q")
    (repo / "build.py").write_text(BUILD)
    (repo / "params.yaml").write_text("threshold: 0.5\n")
    (repo / "dvc.yaml").write_text(BUNDLE_DVC_YAML)
    (repo / "notes.txt").write_text("a dep outside git and DVC, like data on a shared drive\n")
    (repo / ".gitignore").write_text("/notes.txt\n")
    # an output DVC does not cache (its bytes are in git): not a tracked output
    (repo / "card.txt").write_text("card\n")
    (repo / "card.txt.dvc").write_text(
        "outs:\n- md5: 4c8cc118326d90e9e56019bac1dc0671\n  size: 5\n  hash: md5\n  path: card.txt\n  cache: false\n"
    )
    (repo / "inputs" / "raw").mkdir(parents=True)
    (repo / "inputs" / "raw" / "a.tsv").write_text("x\t1\n")
    dvc(repo, "add", "-q", "inputs/raw")
    dvc(repo, "repro", "-q")
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "pipeline"], cwd=repo, check=True)
    return repo


@pytest.fixture
def bundle_repo(bundle_template, tmp_path) -> Path:
    return Path(shutil.copytree(bundle_template, tmp_path / "repo", symlinks=True))


def locked_md5(repo: Path, path: str = "artifacts/bundle") -> str:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return next(out["md5"] for out in lock["stages"]["build"]["outs"] if out["path"] == path)


def test_bundle_check_accepts_the_bundle_dvc_lock_records(bundle_repo):
    (bundle_repo / "artifacts" / "bundle" / "empty").mkdir()  # DVC hashes files only: an empty folder is no change
    done = reviewed(bundle_repo, "bundle")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == f"check_reviewed: artifacts/bundle matches dvc.lock ({locked_md5(bundle_repo)})\n"


@pytest.mark.parametrize(
    "edit",
    [
        lambda b: (b / "tokenizer" / "vocab.txt").write_text("[PAD]\nthe\na\n"),  # a nested file's bytes
        lambda b: (b / "extra.txt").write_text("x"),  # a file more
        lambda b: (b / "manifest.json").unlink(),  # a file less
        lambda b: (b / "tokenizer" / "vocab.txt").rename(b / "vocab.txt"),  # same bytes, another place
        # DVC's md5 of this one sorts after the recorded one (the others' before): the check is equality, not order
        lambda b: (b / "manifest.json").write_text('{"threshold": 0.6}'),
    ],
    ids=["bytes", "added", "removed", "moved", "sorts-after"],
)
def test_bundle_check_refuses_any_other_bundle(bundle_repo, edit):
    edit(bundle_repo / "artifacts" / "bundle")
    done = reviewed(bundle_repo, "bundle")
    locked = locked_md5(bundle_repo)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    first = done.stdout.splitlines()[0]
    assert first.startswith("::error::artifacts/bundle is not the bundle this commit's dvc.lock records: md5 ")
    assert first.endswith(f".dir != {locked} -- refusing to deploy")
    # the md5 it names is DVC's own for the edited folder: `dvc commit` records exactly that
    actual = first.split("md5 ", 1)[1].split(" != ", 1)[0]
    dvc(bundle_repo, "commit", "-f", "-q", "build")
    assert locked_md5(bundle_repo) == actual != locked


def test_bundle_check_names_a_missing_bundle_and_locked_only_needs_none(bundle_repo):
    shutil.rmtree(bundle_repo / "artifacts" / "bundle")
    locked = locked_md5(bundle_repo)
    done = reviewed(bundle_repo, "bundle")
    assert done.returncode == 1 and done.stdout == (
        f"::error::artifacts/bundle is missing: `dvc pull` did not fetch the bundle that dvc.lock records ({locked})\n"
    )
    done = reviewed(bundle_repo, "bundle", "--locked-only")
    assert done.returncode == 0 and done.stdout == f"check_reviewed: dvc.lock records artifacts/bundle as {locked}\n"


@pytest.mark.parametrize("args", [[], ["--locked-only"]])
def test_bundle_check_refuses_a_path_dvc_lock_does_not_record(bundle_repo, args):
    done = reviewed(bundle_repo, "bundle", "--path", "artifacts/other", *args)
    assert done.returncode == 1 and done.stdout == (
        "::error::artifacts/other is not an output recorded in dvc.lock: nothing to verify the deploy against; "
        "refusing to deploy\n"
    )


def test_outputs_of_dvc_files_count_relative_to_their_folder(bundle_repo):
    recorded = yaml.safe_load((bundle_repo / "inputs" / "raw.dvc").read_text())["outs"][0]["md5"]
    done = reviewed(bundle_repo, "bundle", "--path", "inputs/raw")
    assert done.returncode == 0 and done.stdout == f"check_reviewed: inputs/raw matches dvc.lock ({recorded})\n"
    done = reviewed(bundle_repo, "bundle", "--path", "card.txt")  # cache: false
    assert done.returncode == 1 and "::error::card.txt is not an output recorded in dvc.lock" in done.stdout


def test_without_a_remote_only_git_visible_staleness_is_reported(bundle_repo):
    shutil.rmtree(bundle_repo / "artifacts" / "bundle")  # what a fork PR's CI has: no outputs, no cache
    (bundle_repo / "report.txt").unlink()
    shutil.rmtree(bundle_repo / ".dvc" / "cache")
    (bundle_repo / "notes.txt").unlink()  # not in git: absent in CI, which is not staleness either
    done = reviewed(bundle_repo, "pr", "--no-remote")
    assert done.returncode == 0 and [line.split(":", 3)[:3] for line in done.stdout.splitlines()] == [
        ["", "", "warning"]  # only the fork notice: absent outputs (and report's absent dep) are not staleness
    ]
    (bundle_repo / "params.yaml").write_text("threshold: 0.7\n")
    (bundle_repo / "build.py").write_text(BUILD + "# edited, not re-run\n")
    done = reviewed(bundle_repo, "pr", "--no-remote")
    warnings = done.stdout.splitlines()
    assert done.returncode == 0 and len(warnings) == 2, done.stdout
    assert warnings[0] == "::warning::dvc.lock is stale for build: build.py modified, params.yaml modified"
    assert warnings[1].startswith("::warning::fork PR: no access to the DVC remote")
    # a changed command, in a stage DVC also reports as "always changed" (which it lists first, and which says nothing)
    edited = BUNDLE_DVC_YAML.replace("cmd: ls -R", "always_changed: true\n    cmd: ls -lR")
    (bundle_repo / "dvc.yaml").write_text(edited)
    done = reviewed(bundle_repo, "pr", "--no-remote")
    assert "::warning::dvc.lock is stale for report: cmd changed\n" in done.stdout, done.stdout


# ---- `pr --remote`: what the remote lacks, and staleness, with a moto S3 remote


@pytest.mark.parametrize(
    "pushed", [[], ["artifacts/bundle/model.onnx"], ["data/prepared", "models/model"], list(OUTPUTS)]
)
def test_pr_check_names_what_the_remote_lacks_without_downloading(pipeline_repo, aws_env, pushed):  # noqa: F811
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    use_s3(pipeline_repo, aws_env)
    if pushed:
        dvc(pipeline_repo, "push", "-r", "s3", *pushed)
    wipe(pipeline_repo)  # what CI has: a clone with no cache and no outputs
    done = reviewed(pipeline_repo, "pr", "--remote", "s3")
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
    done = reviewed(pipeline_repo, "pr", "--remote", "s3")
    assert done.returncode == 1
    assert "::error::dvc.lock is stale: `dvc repro` would change it (stages: build)" in done.stdout
    assert "build: build.py modified" in done.stdout and downloaded(pipeline_repo) == []
