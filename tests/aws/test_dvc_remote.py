"""The project's DVC remotes (.dvc/config) with the real dvc CLI: S3 through moto_server, and the local default.

Each test builds a throwaway git+DVC repository that carries the project's .dvc/config and a one-stage pipeline
writing outputs shaped like the real ones (a prepared-data directory, a model directory, a bundle file), so what is
pushed and pulled goes through the same remote definitions a developer uses.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import yaml

from tests.aws.awsenv import REPO_ROOT
from tests.net import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BUCKET, PREFIX = "cola-dvc-test", "team/cola"
OUTPUTS = ("data/prepared", "models/model", "artifacts/bundle/model.onnx")

STAGE = """\
import os
from pathlib import Path

for name in ("train", "validation", "test"):
    path = Path("data/prepared") / f"{name}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(3000))
Path("models/model").mkdir(parents=True, exist_ok=True)
Path("models/model/model.safetensors").write_bytes(os.urandom(50_000))
Path("models/model/config.json").write_text('{"num_labels": 2}')
Path("artifacts/bundle").mkdir(parents=True, exist_ok=True)
Path("artifacts/bundle/model.onnx").write_bytes(os.urandom(20_000))
"""

DVC_YAML = """\
stages:
  build:
    cmd: python build.py
    deps: [build.py]
    outs: [data/prepared, models/model, artifacts/bundle/model.onnx]
"""


def dvc(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def snapshot(root: Path, paths) -> dict[str, bytes]:
    files = {}
    for rel in paths:
        target = root / rel
        for file in [target] if target.is_file() else sorted(p for p in target.rglob("*") if p.is_file()):
            files[file.relative_to(root).as_posix()] = file.read_bytes()
    return files


def wipe(repo: Path) -> None:
    shutil.rmtree(repo / ".dvc" / "cache")
    for rel in OUTPUTS:
        target = repo / rel
        shutil.rmtree(target) if target.is_dir() else target.unlink()


@pytest.fixture
def pipeline_repo(tmp_path, monkeypatch) -> Path:
    """A committed git+DVC repo with the project's remotes and a reproduced pipeline; HOME is a temp dir."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the local default remote lives under ~/.cache
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=repo, check=True)
    dvc(repo, "init", "-q")
    shutil.copy(REPO_ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    (repo / "build.py").write_text(STAGE)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    dvc(repo, "repro", "-q")
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "pipeline"], cwd=repo, check=True)
    return repo


def use_s3(repo: Path, endpoint: str, url: str = f"s3://{BUCKET}/{PREFIX}") -> None:
    """What docs/deploy.md tells a team to do: bucket and endpoint only in .dvc/config.local."""
    dvc(repo, "remote", "modify", "--local", "s3", "url", url)
    dvc(repo, "remote", "modify", "--local", "s3", "endpointurl", endpoint)


def test_project_config_declares_the_remotes():
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / ".dvc" / "config")
    assert config["'remote \"s3\"'"]["url"].startswith("s3://")
    default = config["core"]["remote"]
    assert config[f"'remote \"{default}\"'"]["url"].startswith("~/")  # zero-setup: a local directory
    committed = (REPO_ROOT / ".dvc" / "config").read_text().lower()
    for secret in ("endpointurl", "access_key", "secret", "session_token", "profile"):
        assert secret not in committed, f".dvc/config must not carry {secret}: it belongs in .dvc/config.local or env"


def test_push_wipe_pull_through_s3_is_byte_identical(pipeline_repo, aws_env):
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    use_s3(pipeline_repo, aws_env)
    before = snapshot(pipeline_repo, OUTPUTS)
    assert len(before) == 6

    pushed = dvc(pipeline_repo, "push", "-r", "s3")
    assert "pushed" in pushed.stdout
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert keys and all(k.startswith(f"{PREFIX}/files/md5/") for k in keys)

    wipe(pipeline_repo)
    assert snapshot(pipeline_repo, [p for p in OUTPUTS if (pipeline_repo / p).exists()]) == {}
    dvc(pipeline_repo, "pull", "-r", "s3")
    assert snapshot(pipeline_repo, OUTPUTS) == before
    assert "up to date" in dvc(pipeline_repo, "status").stdout


def test_default_local_remote_works_without_any_setup(pipeline_repo):
    before = snapshot(pipeline_repo, OUTPUTS)
    dvc(pipeline_repo, "push")  # no -r: the committed default remote
    storage = Path(os.environ["HOME"]) / ".cache" / "cola-mlops" / "dvc-remote"
    assert any(storage.rglob("*")), f"nothing was pushed to {storage}"
    wipe(pipeline_repo)
    dvc(pipeline_repo, "pull")
    assert snapshot(pipeline_repo, OUTPUTS) == before


def cache_snapshot(repo: Path) -> dict[str, bytes]:
    return snapshot(repo, [".dvc/cache"])


@pytest.mark.parametrize("failure", ["missing bucket", "unreachable endpoint"])
def test_remote_failure_is_clear_and_loses_nothing(pipeline_repo, aws_env, failure):
    if failure == "missing bucket":
        use_s3(pipeline_repo, aws_env, url="s3://no-such-bucket/cola")
        expected = "The specified bucket does not exist"
    else:
        endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        use_s3(pipeline_repo, endpoint)
        expected = f'Could not connect to the endpoint URL: "{endpoint}/'
    outputs, cache = snapshot(pipeline_repo, OUTPUTS), cache_snapshot(pipeline_repo)
    assert cache

    push = dvc(pipeline_repo, "push", "-r", "s3", check=False)
    assert push.returncode != 0 and expected in push.stderr and "Traceback" not in push.stderr
    assert snapshot(pipeline_repo, OUTPUTS) == outputs
    assert cache_snapshot(pipeline_repo) == cache

    # A pull only talks to the remote for what the cache lacks: lose the bundle file, then try to get it back.
    bundle_object = cache_path(pipeline_repo, "artifacts/bundle/model.onnx")
    bundle_object.unlink()
    (pipeline_repo / "artifacts/bundle/model.onnx").unlink()
    pull = dvc(pipeline_repo, "pull", "-r", "s3", check=False)
    assert pull.returncode != 0 and expected in pull.stderr and "Traceback" not in pull.stderr
    lost = bundle_object.relative_to(pipeline_repo).as_posix()
    assert cache_snapshot(pipeline_repo) == {k: v for k, v in cache.items() if k != lost}
    assert snapshot(pipeline_repo, OUTPUTS[:2]) == {k: v for k, v in outputs.items() if "bundle" not in k}


def cache_path(repo: Path, out: str) -> Path:
    """Where DVC keeps the object for a file output (content-addressed by the md5 in dvc.lock)."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    md5 = next(o["md5"] for o in lock["stages"]["build"]["outs"] if o["path"] == out)
    return repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def test_raw_data_reaches_a_machine_without_the_source_through_s3(tmp_path, aws_env, monkeypatch):
    """`python -m stages.get_data` versions data/raw on a machine that has the source; `dvc push` to S3; a clone
    on a machine without the source (and, here, without the Hub) gets the same bytes with `dvc pull`."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # never reach for the Hub from a test
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    source = tmp_path / "source"
    source.mkdir()
    (source / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"sentence {i} .\t{i % 2}\n" for i in range(30)))
    (source / "validation.tsv").write_text("sentence\tlabel\nthe cat sat .\t1\ncat the sat .\t0\n")
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]

    origin = tmp_path / "origin"
    origin.mkdir()
    for name in ("cola", "stages", "contract"):  # what stages.get_data imports
        shutil.copytree(REPO_ROOT / name, origin / name, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["data"].update(source="local", local_dir=str(source))
    (origin / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=origin, check=True)
    dvc(origin, "init", "-q")
    shutil.copy(REPO_ROOT / ".dvc" / "config", origin / ".dvc" / "config")
    got = subprocess.run(
        [sys.executable, "-m", "stages.get_data"],
        cwd=origin,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(origin)},
    )
    assert got.returncode == 0, got.stderr
    assert yaml.safe_load((origin / "data/raw.dvc").read_text())["meta"]["location"] == str(source)
    use_s3(origin, aws_env)
    dvc(origin, "push", "-r", "s3", "data/raw.dvc")
    subprocess.run([*git, "add", "-A"], cwd=origin, check=True)
    subprocess.run([*git, "commit", "-qm", "raw data"], cwd=origin, check=True)

    shutil.rmtree(source)  # the other machine has no source
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(origin), str(clone)], check=True)
    use_s3(clone, aws_env)
    assert not (clone / "data/raw").exists()
    dvc(clone, "pull", "-r", "s3", "data/raw.dvc")
    assert snapshot(clone, ["data/raw"]) == snapshot(origin, ["data/raw"])
    assert "up to date" in dvc(clone, "status", "data/raw.dvc").stdout

    # Re-importing there fails with one clear line (what, why, the way out) and leaves the pulled bytes alone.
    again = subprocess.run(
        [sys.executable, "-m", "stages.get_data"],
        cwd=clone,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(clone)},
    )
    assert again.returncode == 2 and "Traceback" not in again.stderr  # cola.config.run_main: one line, exit 2
    assert len(again.stderr.strip().splitlines()) == 1, again.stderr
    assert f"data.local_dir {source} does not exist" in again.stderr
    assert snapshot(clone, ["data/raw"]) == snapshot(origin, ["data/raw"])
