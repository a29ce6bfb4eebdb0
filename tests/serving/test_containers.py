"""Both images built with podman (runc, as root) from a local Debian base, then run:
the API image answers /ready and /predict; the Lambda image runs awslambdaric against the loopback
Runtime API; the API container refuses overload and drains on `podman stop`. `bash docker/podman-setup.sh`
prepares podman, the cached base image and the wheels."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from cola.paths import ROOT
from tests.net import free_port
from tests.serving.labels import assert_labels_follow_the_threshold
from tests.serving.lambda_runtime import LambdaRuntimeAPI
from tests.serving.test_lambda import load_event
from tests.serving.test_lock import LAMBDA, SERVING
from tests.serving.test_overload import in_flight_requests, post

BASE_IMAGE = "localhost/cola-base:bookworm"
pytestmark = [pytest.mark.container, pytest.mark.slow]


def podman(*args: str, timeout: int = 900, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=check)


@pytest.fixture(scope="module")
def build_context(tiny_bundle, tmp_path_factory) -> Path:
    """The repo's layout as the Dockerfiles see it, with the tiny bundle as artifacts/bundle."""
    subprocess.run(["bash", "docker/podman-setup.sh"], cwd=ROOT, check=True, timeout=1800)
    context = tmp_path_factory.mktemp("context")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("app", "contract", "runtime", "docker"):  # what the Dockerfiles COPY
        shutil.copytree(ROOT / package, context / package, ignore=ignore)
    shutil.copytree(tiny_bundle, context / "artifacts" / "bundle")
    shutil.copyfile(ROOT / ".dockerignore", context / ".dockerignore")
    (context / "stray-secret.txt").write_text("must not reach the image")  # .dockerignore keeps it out
    return context


@pytest.fixture(scope="module")
def image(build_context):
    """build(dockerfile) -> tag; images are removed at the end."""
    tags = []

    def build(dockerfile: str) -> str:
        tag = f"localhost/cola-test-{Path(dockerfile).name.lower().replace('.', '-')}:{uuid.uuid4().hex[:8]}"
        podman("build", "--format", "docker", "--from", BASE_IMAGE, "-f", f"docker/{dockerfile}",
               "-t", tag, str(build_context))  # fmt: skip
        tags.append(tag)
        return tag

    yield build
    for tag in tags:
        podman("rmi", "-f", tag, check=False)
    podman("image", "prune", "-f", check=False)  # the untagged build stages (a few hundred MB each)


def installed(tag: str) -> set[str]:
    """The distributions in the image's venv, by canonical name."""
    script = "import importlib.metadata as m; print(*sorted({d.metadata['Name'] for d in m.distributions()}))"
    out = podman("run", "--rm", "--entrypoint", "python3", tag, "-c", script).stdout
    return {canonicalize_name(name) for name in out.split()}


def wait_http(url: str, container: str, limit_s: float = 120) -> None:
    deadline = time.monotonic() + limit_s  # a hang guard, not a speed assertion
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            state = podman("inspect", "-f", "{{.State.Running}}", container, check=False).stdout.strip()
            if state == "false":
                raise AssertionError(podman("logs", container, check=False).stdout) from None
            time.sleep(0.2)
    raise AssertionError(f"{url} not answering: {podman('logs', container, check=False).stdout}")


def test_api_image(image):
    tag = image("Dockerfile")
    inspected = json.loads(podman("image", "inspect", tag).stdout)[0]
    assert inspected["Config"]["User"] == "10001:10001" and inspected["Healthcheck"]["Test"]
    size_mb = inspected["Size"] / 1e6
    script = (
        "ls /srv; ls /srv/artifacts/bundle; "
        "command -v gcc cc || echo no-compiler; python3 -c 'import torch' 2>&1 | tail -1"
    )
    listing = podman("run", "--rm", "--entrypoint", "sh", tag, "-c", script).stdout
    assert "stray-secret.txt" not in listing and "manifest.json" in listing and "no-compiler" in listing
    assert "No module named 'torch'" in listing
    assert installed(tag) == set(SERVING)  # exactly the hashed lock, nothing more (no pip, no huggingface_hub)
    port, metrics_port = free_port(), free_port()
    name = f"cola-api-{uuid.uuid4().hex[:8]}"
    podman("run", "-d", "--name", name, "--network", "host", "-e", "COLA_HOST=127.0.0.1", "-e", f"COLA_PORT={port}",
           "-e", f"COLA_METRICS_PORT={metrics_port}", tag)  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/ready", name)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/predict", data=b'{"text": ["The cat sat.", "Sat cat the."]}',
            headers={"content-type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as response:
            body = json.loads(response.read())
        assert len(body["predictions"]) == 2
        for private in ("/metrics", "/docs", "/openapi.json"):  # the production surface (docs/serving.md)
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"http://127.0.0.1:{port}{private}", timeout=10)
            assert refused.value.code == 404
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
            assert b"cola_requests_total{" in response.read()  # for Prometheus, on the private port
        assert podman("healthcheck", "run", name, check=False).returncode == 0
        logs = podman("logs", name).stdout
        assert '"event":"prediction"' in logs and "The cat sat." not in logs  # no raw text by default
    finally:
        podman("rm", "-f", name, check=False)
    print(f"API image size: {size_mb:.0f} MB")
    assert size_mb <= 400


def test_lambda_image_with_the_runtime_interface_client(image, predictor):
    tag = image("Dockerfile.lambda")
    assert installed(tag) == set(SERVING) | set(LAMBDA)
    name = f"cola-lambda-{uuid.uuid4().hex[:8]}"
    with LambdaRuntimeAPI() as runtime:
        podman("run", "-d", "--name", name, "--network", "host", "-e", f"AWS_LAMBDA_RUNTIME_API={runtime.address}",
               "-e", "AWS_LAMBDA_FUNCTION_NAME=cola-classifier", tag)  # fmt: skip
        try:
            kind, direct = runtime.invoke({"sentence": "The cat sat on the mat."})
            assert kind == "response", direct
            assert_labels_follow_the_threshold(predictor, direct["predictions"])  # the image holds the tiny bundle
            kind, http = runtime.invoke(load_event("http_api_v2.json"))
            assert kind == "response" and http["statusCode"] == 200
            kind, bad = runtime.invoke({"sentence": ""})
            assert kind == "response" and bad["statusCode"] == 422
            logs = podman("logs", name).stdout
            assert '"Namespace":"ColaClassifier"' in logs and '"event":"prediction"' in logs
        finally:
            podman("rm", "-f", name, check=False)


def test_api_container_refuses_overload_and_drains_on_stop(image):
    """`podman stop` sends SIGTERM: the admitted requests are all answered, then the container exits 0.
    tests/serving/slow_server.py (the image's own serve(), each model call 0.4 s slower) makes them last."""
    tag = image("Dockerfile")
    port = free_port()
    name = f"cola-drain-{uuid.uuid4().hex[:8]}"
    url = f"http://127.0.0.1:{port}"
    podman("run", "-d", "--name", name, "--network", "host", "-e", "COLA_MAX_BATCH=1",
           "-e", "COLA_EXPOSE_METRICS=1", "-e", "COLA_METRICS_PORT=0",  # in_flight_requests() polls /metrics
           "-e", "COLA_MAX_QUEUED_TOKENS=64", "-e", "COLA_QUEUE_BUDGET_MS=60000",
           "-v", f"{ROOT / 'tests/serving/slow_server.py'}:/srv/slow_server.py:ro",
           tag, "python3", "/srv/slow_server.py", str(port), "0.4")  # fmt: skip
    try:
        wait_http(f"{url}/ready", name)
        requests = 4
        with ThreadPoolExecutor(requests) as pool:
            answers = in_flight_requests(pool, url, [[f"Sentence {i} is short."] for i in range(requests)])
            overload = post(url, ["A much longer sentence that is not going to fit into the small queue."] * 4)
            stopped = podman("stop", "--time", "30", name, check=False)
            statuses = [a.result() for a in answers]
        exit_code = podman("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip()
        logs = podman("logs", name).stdout
    finally:
        podman("rm", "-f", name, check=False)
    assert overload == 503
    assert statuses == [200] * requests, logs
    assert stopped.returncode == 0 and exit_code == "0", logs
    assert '"event":"draining"' in logs and '"event":"stopped"' in logs
