"""AWS emulation for the tests: a real moto_server process on 127.0.0.1, spoken to over HTTP by boto3 and DVC."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.aws.awsenv import DUMMY_AWS_ENV
from tests.net import free_port


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory) -> str:
    """Start `moto_server` once per session; return its endpoint URL."""
    binary = shutil.which("moto_server")
    command = [binary] if binary else [sys.executable, "-m", "moto.server"]
    port = free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto_server.log"
    # The IAM tests attach AWS managed policies (AWSLambdaBasicExecutionRole), which moto only knows with this flag.
    env = {**os.environ, **DUMMY_AWS_ENV, "MOTO_IAM_LOAD_MANAGED_POLICIES": "true"}
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [*command, "-H", "127.0.0.1", "-p", str(port)], stdout=log_file, stderr=subprocess.STDOUT, env=env
        )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"moto_server did not start on {endpoint}; log:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.2)
    yield endpoint
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture
def aws_env(moto_endpoint, monkeypatch) -> str:
    """Fresh emulated account for one test; boto3 in this process and in child processes talks to moto."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")).close()
    for key, value in {**DUMMY_AWS_ENV, "AWS_ENDPOINT_URL": moto_endpoint}.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(key, raising=False)
    return moto_endpoint
