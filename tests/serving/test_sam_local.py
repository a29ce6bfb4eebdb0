"""The Lambda image behind AWS's own local emulator: `sam local start-api` (SAM CLI builds its runtime interface
emulator into a layer over the image and runs it) through podman's Docker-compatible API, with the production
routes of deploy/template.yaml. GET and POST /predict answer, an empty text gets 422, /metrics has no route.

The image keeps `USER 10001`. SAM's layer step (`RUN mv /var/rapid/aws-lambda-rie-… && chmod +x …`) runs as the
image's user and cannot write /var/rapid as 10001, so the test derives a test-only image that is root for that
step and whose entry point drops the function itself to 10001 (setpriv) under the root emulator, as on Lambda,
where Lambda's own agent starts the function as a least-privileged user it chooses. SAM treats `localhost/NAME`
as a registry image it will not run, so the image is tagged `NAME:TAG`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.aws.awsenv import DUMMY_AWS_ENV
from tests.aws.templates import SAM, TEMPLATE, load
from tests.net import free_port
from tests.serving.labels import assert_labels_follow_the_threshold
from tests.serving.test_containers import build_context, image, podman  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.container, pytest.mark.slow]
FUNCTION_USER = "10001:10001"  # the image's USER (docker/Dockerfile.lambda)


@pytest.fixture(scope="module")
def docker_host(tmp_path_factory):
    """podman's Docker-compatible API on a private socket, for SAM CLI's docker client."""
    sock = tmp_path_factory.mktemp("podman") / "docker.sock"
    service = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{sock}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 60  # a hang guard
    while True:
        try:
            with socket.socket(socket.AF_UNIX) as client:
                client.connect(str(sock))
                client.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
                if b"OK" in client.recv(1024):
                    break
        except OSError:
            pass
        if service.poll() is not None or time.monotonic() > deadline:
            service.kill()
            pytest.fail(f"podman system service did not start: {service.stderr.read().decode()[-2000:]}")
        time.sleep(0.2)
    yield f"unix://{sock}"
    service.terminate()
    service.wait(timeout=30)


@pytest.fixture(scope="module")
def sam_image(image, tmp_path_factory):  # noqa: F811 (the fixture imported above)
    """The Lambda image, plus the test-only layer SAM's emulator needs (see the module docstring)."""
    tag = image("Dockerfile.lambda")
    config = json.loads(podman("image", "inspect", tag).stdout)[0]["Config"]
    assert config["User"] == FUNCTION_USER  # what the derived image drops the function to
    uid, gid = config["User"].split(":")
    entrypoint = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *config["Entrypoint"]]
    context = tmp_path_factory.mktemp("sam-image")
    (context / "Dockerfile").write_text(  # a new ENTRYPOINT clears the inherited CMD: set it again
        f"FROM {tag}\nUSER root\nENTRYPOINT {json.dumps(entrypoint)}\nCMD {json.dumps(config['Cmd'])}\n"
    )
    name = f"cola-sam-local:{uuid.uuid4().hex[:8]}"  # NAME:TAG, not localhost/NAME
    podman("build", "--format", "docker", "-t", name, str(context))
    yield name
    for listed in podman("images", "--format", "{{.Repository}}:{{.Tag}}", check=False).stdout.split():
        if listed.split("/")[-1].startswith(name.split(":")[0] + ":"):  # ours and SAM's rapid-… layer image
            podman("rmi", "-f", listed, check=False)


def local_template(image_name: str, path: Path) -> Path:
    """The serving function of deploy/template.yaml for the emulator: its image and settings, and an HttpApi event
    per production route the template declares (so the emulator serves exactly those paths)."""
    template = load(TEMPLATE)
    defaults = {name: spec.get("Default") for name, spec in template["Parameters"].items()}
    routes = [r["Properties"]["RouteKey"] for r in template["Resources"].values() if r["Type"].endswith("::Route")]
    events = {
        f"Route{i}": {"Type": "HttpApi", "Properties": {"Method": key.split()[0], "Path": key.split()[1]}}
        for i, key in enumerate(routes)
    }
    function = {
        "Type": "AWS::Serverless::Function",
        "Properties": {
            "PackageType": "Image",
            "ImageUri": image_name,
            "MemorySize": int(defaults["MemorySize"]),
            "Timeout": int(defaults["Timeout"]),
            "Architectures": [defaults["Architecture"]],
            "Environment": {"Variables": {"COLA_GIT_SHA": "0" * 40, "COLA_MODEL_VERSION": "unregistered"}},
            "Events": events,
        },
    }
    body = {"AWSTemplateFormatVersion": "2010-09-09", "Transform": "AWS::Serverless-2016-10-31",
            "Resources": {"ServingFunction": function}}  # fmt: skip
    path.write_text(json.dumps(body, indent=2))
    return path


def request(url: str, body: object = None) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


@contextlib.contextmanager
def sam_local(command: str, template: Path, docker_host: str, workdir: Path, ready_path: str):
    """`sam local <command>` on 127.0.0.1; yields its URL once `ready_path` answers (any HTTP status)."""
    port = free_port()
    env = {
        "PATH": os.environ["PATH"], "HOME": str(workdir), "DOCKER_HOST": docker_host, "SAM_CLI_TELEMETRY": "0",
        **DUMMY_AWS_ENV,
    }  # fmt: skip
    log = workdir / f"sam-{command}.log"
    with open(log, "wb") as out:
        sam = subprocess.Popen(
            [str(SAM), "local", command, "--template-file", str(template), "--host", "127.0.0.1",
             "--port", str(port), "--skip-pull-image", "--warm-containers", "EAGER"],
            cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600  # a hang guard: the first start builds SAM's emulator layer
        while True:
            try:
                request(f"{url}{ready_path}")
                break
            except OSError:
                pass
            if sam.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"sam local {command} did not start:\n{log.read_text()[-4000:]}")
            time.sleep(1)
        yield url
    finally:
        served = log.stat().st_size  # what SAM and the function printed while serving (not SAM's shutdown)
        if sam.poll() is None:
            os.killpg(sam.pid, signal.SIGINT)  # SAM stops its warm containers on Ctrl-C
        try:
            sam.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(sam.pid, signal.SIGKILL)
        shutil.rmtree(workdir / ".aws-sam", ignore_errors=True)
    logs = log.read_bytes()[:served].decode(errors="replace")
    assert "Traceback" not in logs and '"level":"error"' not in logs, logs[-4000:]


def test_image_through_sam_local_start_api(sam_image, docker_host, predictor, tmp_path):
    template = local_template(sam_image, tmp_path / "template.json")
    with sam_local("start-api", template, docker_host, tmp_path, "/health") as url:
        status, body = request(f"{url}/health")
        assert status == 200, body
        status, body = request(f"{url}/predict?text=The%20cat%20sat%20on%20the%20mat.")
        assert status == 200 and len(body["predictions"]) == 1, body
        status, body = request(f"{url}/predict", {"text": ["The cat sat on the mat.", "Sat mat the on cat."]})
        assert status == 200 and len(body["predictions"]) == 2, body
        assert_labels_follow_the_threshold(predictor, body["predictions"])  # the image holds the tiny bundle
        status, body = request(f"{url}/predict", {"text": ""})
        assert status == 422 and body["error"] == "empty_text", body
        status, body = request(f"{url}/metrics")  # not a production route: the emulator has no route for it
        assert status != 200 and "cola_requests_total" not in str(body)
        status, body = request(f"{url}/ready")
        assert status == 200 and body["status"] == "ready"


def test_pre_traffic_hook_against_the_image_in_sam_local_start_lambda(sam_image, docker_host, tmp_path, monkeypatch):
    """The PreTraffic hook's checks, sent as real Lambda Invoke calls to the real image in SAM's Lambda emulator
    (which addresses a function by its logical id, not a version ARN). Only CodeDeploy's status call is stubbed
    (moto lacks it; tests/aws/test_pre_traffic_hook.py)."""
    from botocore.stub import ANY, Stubber

    from tests.aws.test_pre_traffic_hook import EVENT, load_hook

    template = local_template(sam_image, tmp_path / "template.json")
    with sam_local("start-lambda", template, docker_host, tmp_path, "/") as url:
        monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", url)
        monkeypatch.setenv("NEW_VERSION", "ServingFunction")
        for key, value in DUMMY_AWS_ENV.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
        hook = load_hook()
        lambda_client, codedeploy = hook.clients()
        with Stubber(codedeploy) as stub:
            stub.add_response(
                "put_lifecycle_event_hook_execution_status",
                {"lifecycleEventHookExecutionId": EVENT["LifecycleEventHookExecutionId"]},
                {"deploymentId": EVENT["DeploymentId"],
                 "lifecycleEventHookExecutionId": EVENT["LifecycleEventHookExecutionId"], "status": ANY},
            )  # fmt: skip
            monkeypatch.setattr(hook, "clients", lambda: (lambda_client, codedeploy))
            result = hook.handler(dict(EVENT))
            stub.assert_no_pending_responses()
    assert result == {"status": "Succeeded", "problems": []}
