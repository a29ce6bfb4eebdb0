"""scripts/deploy_lambda.py end to end against moto_server (ECR, Lambda, API Gateway v2, IAM).

moto stores image functions but cannot invoke them, and its execute-api URLs do not resolve, so the smoke test
talks to a stand-in HTTP server on 127.0.0.1 that speaks the app's /ready and /predict contract and can be told to
fail; that is what exercises the smoke test and the alias rollback.
"""

from __future__ import annotations

import fnmatch
import hashlib
import http.client
import importlib.util
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from string import Template

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.aws.awsenv import REGION, REPO_ROOT
from tests.net import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCRIPT = REPO_ROOT / "scripts" / "deploy_lambda.py"
IAM_DIR = REPO_ROOT / "deploy" / "iam"
REPOSITORY = FUNCTION = "cola-serving"
EXECUTION_ROLE = "cola-serving-lambda"


class StandInApp(BaseHTTPRequestHandler):
    """The app's smoke-test surface, one per qualifier: /<version or alias>/ready and /<...>/predict.

    `server.fail` names the endpoint that answers 503 for every qualifier ("" = healthy), `server.fail_for`
    maps a qualifier to the endpoint failing only there; every request is logged in `server.seen` as
    (qualifier, path) and passed to `server.on_request` (a test hook: trigger an alarm, record the alias);
    `server.require` ("sigv4" or "bearer") answers 403 to requests without that Authorization scheme."""

    def _answer(self, status: int, body: dict) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _route(self) -> tuple[str, str, bool]:
        _, qualifier, path = self.path.split("/", 2)
        path = "/" + path
        self.server.seen.append((qualifier, path))
        self.server.on_request(qualifier, path)
        failing = path in (self.server.fail, self.server.fail_for.get(qualifier))
        return qualifier, path, failing

    def _authorised(self) -> bool:
        header = self.headers.get("Authorization", "")
        if self.server.require == "sigv4":
            return header.startswith("AWS4-HMAC-SHA256 ") and "/execute-api/aws4_request" in header
        if self.server.require == "bearer":
            return header == "Bearer test-token"
        return True

    def do_GET(self):
        _, path, failing = self._route()
        if not self._authorised():
            return self._answer(403, {"message": "Forbidden"})
        if path == "/ready":
            return self._answer(503 if failing else 200, {"ready": not failing})
        self._answer(404, {"detail": "not found"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _, path, failing = self._route()
        if not self._authorised():
            return self._answer(403, {"message": "Forbidden"})
        if path == "/predict" and not failing and isinstance(body.get("text"), str):
            return self._answer(200, {"predictions": [{"label": "acceptable", "prob_acceptable": 0.93}]})
        self._answer(503, {"detail": "model unavailable"})

    def log_message(self, *args):  # keep pytest output clean
        pass


def serving(server: ThreadingHTTPServer):
    """Run a loopback server in a thread for the length of a fixture; `server.url` is its address."""
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def app_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandInApp)
    server.fail, server.fail_for, server.seen, server.require = "", {}, [], ""
    server.on_request = lambda qualifier, path: None
    yield from serving(server)


class FaultProxy(BaseHTTPRequestHandler):
    """A pass-through HTTP proxy in front of moto_server that injects what moto cannot produce: an AWS error on
    the n-th matching request, or a Lambda function reported as Failed / InProgress. `server.faults` is a list
    of dicts {match(method, path) -> bool, nth, status, code}; `server.function_state` (State, LastUpdateStatus)
    overrides the function's configuration until `server.repair_after` requests matching it went through;
    `server.log` records (method, path, reported state) in order."""

    def _handle(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        method, path = self.command, self.path.split("?")[0]
        target = self.headers.get("X-Amz-Target")  # JSON-protocol services (CloudWatch) name the operation here
        key = f"{path}#{target}" if target else path
        server = self.server
        for fault in server.faults:
            if fault["match"](method, key):
                fault["seen"] = fault.get("seen", 0) + 1
                if fault["seen"] == fault["nth"]:
                    server.log.append((method, path, "injected " + fault["code"]))
                    payload = json.dumps(
                        {
                            "__type": fault["code"],
                            "Message": "injected by the test proxy",
                            "message": "injected",
                        }
                    ).encode()
                    self.send_response(fault["status"])
                    self.send_header("x-amzn-ErrorType", fault["code"])
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
        if server.repair_match(method, path) and server.function_state:
            server.repairs_left -= 1
            if server.repairs_left <= 0:
                server.function_state = None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        connection = http.client.HTTPConnection(server.moto_host, server.moto_port, timeout=60)
        connection.request(method, self.path, body=body or None, headers=headers)
        response = connection.getresponse()
        payload = response.read()
        reported = ""
        function_path = f"/2015-03-31/functions/{FUNCTION}"
        is_config = method == "GET" and path in (function_path, f"{function_path}/configuration")
        if is_config and response.status == 200 and server.function_state:
            document = json.loads(payload)
            config = document.get("Configuration", document)
            config["State"], config["LastUpdateStatus"] = server.function_state
            config["StateReason"] = "injected: image could not be pulled"
            payload = json.dumps(document).encode()
            reported = "/".join(server.function_state)
            server.state_reads_left -= 1
            if server.state_reads_left == 0:  # a transient state (Pending, InProgress) ends by itself
                server.function_state = None
        server.log.append((method, path, reported))
        server.bodies.append((method, path, body))
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        connection.close()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def log_message(self, *args):
        pass


@pytest.fixture
def fault_proxy(aws_env, monkeypatch):
    """The proxy's URL becomes AWS_ENDPOINT_URL for the deploy script (set `server.url` in the child env)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), FaultProxy)
    host_port = aws_env.split("//")[1]
    server.moto_host, server.moto_port = host_port.split(":")[0], int(host_port.split(":")[1])
    server.faults, server.log, server.bodies, server.function_state = [], [], [], None
    server.repair_match, server.repairs_left, server.state_reads_left = (lambda m, p: False), 1, -1
    yield from serving(server)


def render_policy(name: str) -> str:
    """Fill the placeholders of a deploy/iam/ JSON file the way docs/deploy.md does with envsubst."""
    return Template((IAM_DIR / name).read_text()).substitute(
        AWS_REGION=REGION,
        AWS_ACCOUNT_ID="123456789012",
        ECR_REPOSITORY=REPOSITORY,
        LAMBDA_FUNCTION=FUNCTION,
        LAMBDA_EXECUTION_ROLE=EXECUTION_ROLE,
        GITHUB_REPOSITORY="example-org/cola-mlops",
        DVC_BUCKET="cola-mlops-dvc",
        DVC_PREFIX="cola",
    )


@pytest.fixture
def execution_role(aws_env) -> str:
    """The function's execution role, created once by an administrator in a real account (docs/deploy.md)."""
    iam = boto3.client("iam")
    arn = iam.create_role(
        RoleName=EXECUTION_ROLE, AssumeRolePolicyDocument=render_policy("lambda-execution-trust.json")
    )
    iam.attach_role_policy(
        RoleName=EXECUTION_ROLE, PolicyArn="arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
    )
    return arn["Role"]["Arn"]


def push_image(tag: str) -> str:
    """Stand-in for `docker push`: moto's ECR accepts a manifest through PutImage; returns the image digest."""
    digest = "sha256:" + hashlib.sha256(tag.encode()).hexdigest()  # moto derives the image digest from layers
    layer = {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 1, "digest": digest}
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {**layer, "mediaType": "application/vnd.docker.container.image.v1+json"},
        "layers": [layer],
    }
    image = boto3.client("ecr").put_image(repositoryName=REPOSITORY, imageManifest=json.dumps(manifest), imageTag=tag)
    return image["image"]["imageId"]["imageDigest"]


def run_script(*args: str, endpoint: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **({"AWS_ENDPOINT_URL": endpoint} if endpoint else {})}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300, env=env)


def deploy_args(tag: str, role_arn: str, smoke_url: str, *extra: str) -> list[str]:
    """No waiting anywhere: canary of 0 minutes (one round of traffic and one alarm check), no poll delays."""
    return [
        "deploy", "--repository", REPOSITORY, "--image-tag", tag, "--function", FUNCTION, "--role-arn", role_arn,
        "--smoke-url", smoke_url + "/{qualifier}", "--smoke-attempts", "2", "--smoke-delay", "0",
        "--canary-minutes", "0", "--canary-poll", "0", "--poll-interval", "0", "--wait-timeout", "30",
        "--env", "COLA_ORT_THREADS=2", *extra,
    ]  # fmt: skip


def state() -> dict:
    """What the deploy left in the (emulated) account."""
    lam, apigw = boto3.client("lambda"), boto3.client("apigatewayv2")
    apis = apigw.get_apis()["Items"]
    api_id = apis[0]["ApiId"] if apis else None
    policy = json.loads(lam.get_policy(FunctionName=FUNCTION, Qualifier="live")["Policy"])
    alias = lam.get_alias(FunctionName=FUNCTION, Name="live")
    config = lam.get_function_configuration(FunctionName=FUNCTION)
    return {
        "image": lam.get_function(FunctionName=FUNCTION)["Code"]["ImageUri"],
        "architectures": config["Architectures"],
        "reserved_concurrency": lam.get_function_concurrency(FunctionName=FUNCTION).get("ReservedConcurrentExecutions"),
        "versions": sorted(v["Version"] for v in lam.list_versions_by_function(FunctionName=FUNCTION)["Versions"]),
        "alias": alias["FunctionVersion"],
        "weights": (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights", {}),
        "apis": [(a["Name"], a["ProtocolType"], a.get("Tags")) for a in apis],
        "endpoint": apis[0]["ApiEndpoint"],
        "integrations": [
            (i["IntegrationType"], i["IntegrationUri"]) for i in apigw.get_integrations(ApiId=api_id)["Items"]
        ],
        "routes": [
            (r["RouteKey"], r["Target"], r.get("AuthorizationType")) for r in apigw.get_routes(ApiId=api_id)["Items"]
        ],
        "stages": [
            (
                s["StageName"],
                s["AutoDeploy"],
                s["DefaultRouteSettings"].get("ThrottlingBurstLimit"),
                s["DefaultRouteSettings"].get("ThrottlingRateLimit"),
            )
            for s in apigw.get_stages(ApiId=api_id)["Items"]
        ],
        "permissions": [
            (s["Principal"]["Service"], s["Condition"]["ArnLike"]["AWS:SourceArn"]) for s in policy["Statement"]
        ],
    }


def deploy_good(execution_role, app_server, tag: str = "commit-good", *extra: str):
    assert run_script("ensure-repo", "--repository", REPOSITORY).returncode == 0
    push_image(tag)
    result = run_script(*deploy_args(tag, execution_role, app_server.url, *extra))
    assert result.returncode == 0, result.stderr
    return result


def test_deploy_creates_everything_and_a_second_run_changes_nothing(execution_role, app_server):
    repo = run_script("ensure-repo", "--repository", REPOSITORY)
    assert repo.returncode == 0, repo.stderr
    assert repo.stdout.strip() == f"123456789012.dkr.ecr.{REGION}.amazonaws.com/{REPOSITORY}"
    digest = push_image("commit-aaa")

    first = run_script(*deploy_args("commit-aaa", execution_role, app_server.url))
    assert first.returncode == 0, first.stderr
    after_first = state()
    api_id = after_first["endpoint"].split("//")[1].split(".")[0]
    alias_arn = f"arn:aws:lambda:{REGION}:123456789012:function:{FUNCTION}:live"
    assert after_first == {
        "image": f"{repo.stdout.strip()}@{digest}",
        "architectures": ["x86_64"],
        "reserved_concurrency": 10,
        "versions": ["$LATEST", "1"],
        "alias": "1",
        "weights": {},
        "apis": [(FUNCTION, "HTTP", {"cola-mlops:api": FUNCTION})],
        "endpoint": after_first["endpoint"],
        "integrations": [("AWS_PROXY", alias_arn)],
        "routes": [("$default", after_first["routes"][0][1], "NONE")],
        "stages": [("$default", True, 20, 10.0)],
        "permissions": [("apigateway.amazonaws.com", f"arn:aws:execute-api:{REGION}:123456789012:{api_id}/*/*")],
    }
    assert first.stdout.strip() == after_first["endpoint"]
    # The version was smoke-tested by qualifier before the alias existed, then the public alias.
    assert app_server.seen[:2] == [("1", "/ready"), ("1", "/predict")]
    assert app_server.seen[2:] == [("live", "/ready"), ("live", "/predict")]

    again = run_script(*deploy_args("commit-aaa", execution_role, app_server.url))
    assert again.returncode == 0, again.stderr
    assert state() == after_first
    assert "already runs" in again.stderr and "alias live already on version 1" in again.stderr
    assert "created" not in again.stderr and "updated" not in again.stderr

    assert run_script("ensure-repo", "--repository", REPOSITORY).stdout == repo.stdout
    assert len(boto3.client("ecr").describe_repositories()["repositories"]) == 1


def test_ensure_repo_makes_tags_immutable_and_keeps_the_rollback_images(aws_env):
    ecr = boto3.client("ecr")
    ecr.create_repository(repositoryName=REPOSITORY, imageTagMutability="MUTABLE")  # made by an older script
    result = run_script("ensure-repo", "--repository", REPOSITORY, "--keep-images", "7")
    assert result.returncode == 0, result.stderr
    assert ecr.describe_repositories()["repositories"][0]["imageTagMutability"] == "IMMUTABLE"
    rules = json.loads(ecr.get_lifecycle_policy(repositoryName=REPOSITORY)["lifecyclePolicyText"])["rules"]
    keep = [r for r in rules if r["selection"]["countType"] == "imageCountMoreThan"]
    assert [(r["selection"]["tagStatus"], r["selection"]["countNumber"]) for r in keep] == [("any", 7)]
    # Immutable: a deployed commit's tag cannot be re-pointed at other bytes.
    original = push_image("commit-1")
    digest = "sha256:" + hashlib.sha256(b"other").hexdigest()
    layer = {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 1, "digest": digest}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {**layer, "mediaType": "application/vnd.docker.container.image.v1+json"},
                "layers": [layer]}  # fmt: skip
    with pytest.raises(ClientError):
        ecr.put_image(repositoryName=REPOSITORY, imageManifest=json.dumps(manifest), imageTag="commit-1")
    tagged = ecr.describe_images(repositoryName=REPOSITORY, imageIds=[{"imageTag": "commit-1"}])["imageDetails"]
    assert [i["imageDigest"] for i in tagged] == [original]
    again = run_script("ensure-repo", "--repository", REPOSITORY, "--keep-images", "7")
    assert again.returncode == 0 and "lifecycle" not in again.stderr and "immutable" not in again.stderr


def test_ensure_repo_failure_is_one_line_and_non_zero(aws_env):
    result = run_script("ensure-repo", "--repository", "Not_A_Valid/Name!")
    assert result.returncode == 1 and result.stdout == ""
    assert "AWS call failed" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("failing", ["/ready", "/predict"])
def test_failed_version_smoke_test_moves_no_traffic(execution_role, app_server, failing):
    deploy_good(execution_role, app_server)
    app_server.seen.clear()

    push_image("commit-bad")
    app_server.fail_for = {"2": failing}
    bad = run_script(*deploy_args("commit-bad", execution_role, app_server.url))

    assert bad.returncode == 1
    assert f"smoke test {'GET' if failing == '/ready' else 'POST'} {failing} on " in bad.stderr
    assert "Traceback" not in bad.stderr and "rolled back" not in bad.stderr
    assert "canary" not in bad.stderr and "promoted" not in bad.stderr
    # Only the candidate version was ever asked; the public alias never saw it.
    assert {q for q, _ in app_server.seen} == {"2"}
    after = state()
    assert after["versions"] == ["$LATEST", "1", "2"]  # the bad version exists but takes no traffic
    assert (after["alias"], after["weights"]) == ("1", {})


def test_canary_routes_a_share_to_the_new_version_then_promotes(execution_role, app_server):
    deploy_good(execution_role, app_server)
    lam, cw = boto3.client("lambda"), boto3.client("cloudwatch")
    during = []
    app_server.on_request = lambda q, path: (
        q == "live" and during.append(lam.get_alias(FunctionName=FUNCTION, Name="live"))
    )
    push_image("commit-new")
    result = run_script(*deploy_args("commit-new", execution_role, app_server.url, "--canary-percent", "25"))
    assert result.returncode == 0, result.stderr

    # During the canary: live stays on 1 and sends 25 % to 2; after promotion: all on 2, weights gone.
    assert (during[0]["FunctionVersion"], during[0]["RoutingConfig"]["AdditionalVersionWeights"]) == (
        "1",
        {"2": 0.25},
    )
    after = state()
    assert (after["alias"], after["weights"]) == ("2", {})
    alarms = {a["AlarmName"]: a for a in cw.describe_alarms()["MetricAlarms"]}
    assert sorted(alarms) == [f"{FUNCTION}-canary-errors", f"{FUNCTION}-canary-p99"]
    errors, p99 = alarms[f"{FUNCTION}-canary-errors"], alarms[f"{FUNCTION}-canary-p99"]
    assert (errors["MetricName"], errors["Statistic"], errors["Threshold"]) == ("Errors", "Sum", 0.0)
    assert (p99["MetricName"], p99["ExtendedStatistic"], p99["Threshold"]) == ("Duration", "p99", 3000.0)
    assert {(d["Name"], d["Value"]) for d in errors["Dimensions"]} == {
        ("FunctionName", FUNCTION), ("Resource", f"{FUNCTION}:live"), ("ExecutedVersion", "2"),
    }  # fmt: skip
    assert "promoted: alias live -> version 2 (was 1)" in result.stderr


@pytest.mark.parametrize("alarm", ["errors", "p99"])
def test_canary_alarm_rolls_back_and_clears_the_routing(execution_role, app_server, alarm):
    deploy_good(execution_role, app_server)
    cw = boto3.client("cloudwatch")
    # An alarm left in ALARM by an earlier canary must not fail this one: the deploy resets it first.
    cw.put_metric_alarm(AlarmName=f"{FUNCTION}-canary-{alarm}", MetricName="Errors", Namespace="AWS/Lambda",
                        Statistic="Sum", Period=60, EvaluationPeriods=1, Threshold=0,
                        ComparisonOperator="GreaterThanThreshold")  # fmt: skip
    cw.set_alarm_state(AlarmName=f"{FUNCTION}-canary-{alarm}", StateValue="ALARM", StateReason="old canary")

    def fire(qualifier, path):  # the canary's traffic "causes" errors: CloudWatch would flip the alarm
        if qualifier == "live" and path == "/predict":
            cw.set_alarm_state(AlarmName=f"{FUNCTION}-canary-{alarm}", StateValue="ALARM", StateReason="test")

    app_server.on_request = fire
    push_image("commit-slow")
    result = run_script(*deploy_args("commit-slow", execution_role, app_server.url))

    assert result.returncode == 1
    assert f"canary alarm {FUNCTION}-canary-{alarm} fired for version 2" in result.stderr
    assert "rolled back: alias live -> version 1" in result.stderr and "Traceback" not in result.stderr
    assert "promoted" not in result.stderr
    after = state()
    assert (after["alias"], after["weights"], after["versions"]) == ("1", {}, ["$LATEST", "1", "2"])


def test_public_smoke_failure_after_promotion_rolls_back(execution_role, app_server):
    deploy_good(execution_role, app_server)
    # Healthy by version and during the canary, broken once promoted (e.g. a route or permission problem).
    canary_rounds = []

    def break_after_canary(qualifier, path):
        canary_rounds.append((qualifier, path))
        if len([r for r in canary_rounds if r[0] == "live"]) >= 2:
            app_server.fail_for = {"live": "/ready"}

    app_server.on_request = break_after_canary
    push_image("commit-2")
    result = run_script(*deploy_args("commit-2", execution_role, app_server.url))
    assert result.returncode == 1
    assert "promoted: alias live -> version 2" in result.stderr
    assert "smoke test GET /ready on " in result.stderr and "rolled back: alias live -> version 1" in result.stderr
    assert (state()["alias"], state()["weights"]) == ("1", {})


@pytest.mark.parametrize(
    ("step", "match", "nth"),
    [
        # the promotion: the second UpdateAlias of the run (the first set the canary weights)
        ("promotion", lambda m, p: m == "PUT" and p.endswith(f"/functions/{FUNCTION}/aliases/live"), 2),
        # the first alarm check during the canary
        ("alarm check", lambda m, p: m == "POST" and p.endswith(".DescribeAlarms"), 1),
    ],
    ids=["promotion", "alarm-check"],
)
def test_aws_error_after_the_first_alias_change_rolls_back(execution_role, app_server, fault_proxy, step, match, nth):
    deploy_good(execution_role, app_server)
    fault_proxy.faults = [{"match": match, "nth": nth, "status": 403, "code": "AccessDeniedException"}]
    push_image("commit-2")
    result = run_script(*deploy_args("commit-2", execution_role, app_server.url), endpoint=fault_proxy.url)

    assert result.returncode == 1
    assert any(entry[2] == "injected AccessDeniedException" for entry in fault_proxy.log), step
    assert "AWS call failed" in result.stderr and "AccessDenied" in result.stderr
    assert "rolled back: alias live -> version 1" in result.stderr and "Traceback" not in result.stderr
    assert (state()["alias"], state()["weights"]) == ("1", {})


def test_aws_error_in_the_api_step_leaves_live_untouched(execution_role, app_server, fault_proxy):
    """The API is reconciled before the first alias change: an error there moves no traffic at all."""
    deploy_good(execution_role, app_server)
    fault_proxy.faults = [
        {"match": lambda m, p: m == "GET" and p.endswith("/routes"), "nth": 1, "status": 403,
         "code": "AccessDeniedException"},
    ]  # fmt: skip
    push_image("commit-2")
    result = run_script(*deploy_args("commit-2", execution_role, app_server.url), endpoint=fault_proxy.url)
    assert result.returncode == 1 and "AWS call failed" in result.stderr
    assert not any(m == "PUT" and "/aliases/" in p for m, p, _ in fault_proxy.log)
    assert (state()["alias"], state()["weights"]) == ("1", {})


def test_failed_function_is_repaired(execution_role, app_server, fault_proxy):
    deploy_good(execution_role, app_server)
    # Same image, but Lambda reports the function Failed: the deploy re-applies the code instead of skipping it.
    fault_proxy.function_state = ("Failed", "Failed")
    fault_proxy.repair_match = lambda m, p: m == "PUT" and p.endswith(f"/functions/{FUNCTION}/code")
    result = run_script(*deploy_args("commit-good", execution_role, app_server.url), endpoint=fault_proxy.url)

    assert result.returncode == 0, result.stderr
    assert "was Failed (injected: image could not be pulled): code re-applied to repair it" in result.stderr
    assert any(m == "PUT" and p.endswith("/code") for m, p, _ in fault_proxy.log)
    assert fault_proxy.function_state is None


def test_function_that_stays_failed_is_a_clear_error_and_moves_no_traffic(execution_role, app_server, fault_proxy):
    deploy_good(execution_role, app_server)
    fault_proxy.function_state = ("Failed", "Failed")
    fault_proxy.repair_match, fault_proxy.repairs_left = (lambda m, p: p.endswith("/code")), 99  # never heals
    push_image("commit-2")
    result = run_script(*deploy_args("commit-2", execution_role, app_server.url), endpoint=fault_proxy.url)

    assert result.returncode == 1
    assert f"Lambda function {FUNCTION} is State=Failed LastUpdateStatus=Failed: injected" in result.stderr
    assert "Traceback" not in result.stderr
    assert not any("/aliases/" in p and m == "PUT" for m, p, _ in fault_proxy.log)
    assert (state()["alias"], state()["weights"]) == ("1", {})


def test_no_change_while_an_update_is_in_progress(execution_role, app_server, fault_proxy):
    deploy_good(execution_role, app_server)
    # Lambda rejects changes during an update: the deploy must poll until InProgress is over, then change.
    fault_proxy.function_state, fault_proxy.state_reads_left = ("Active", "InProgress"), 3
    push_image("commit-2")
    result = run_script(*deploy_args("commit-2", execution_role, app_server.url), endpoint=fault_proxy.url)

    assert result.returncode == 0, result.stderr
    reads = [i for i, (_, _, reported) in enumerate(fault_proxy.log) if reported == "Active/InProgress"]
    first_change = next(i for i, (m, p, _) in enumerate(fault_proxy.log) if m == "PUT" and p.endswith("/code"))
    assert len(reads) == 3 and first_change > reads[-1]
    assert state()["alias"] == "2"


def test_security_and_sizing_settings(execution_role, app_server, fault_proxy):
    deploy_good(execution_role, app_server, "commit-1", "--auth", "iam", "--throttle-burst", "5",
                "--throttle-rate", "2.5", "--reserved-concurrency", "3", "--architecture", "arm64")  # fmt: skip
    after = state()
    assert after["routes"][0][2] == "AWS_IAM"
    assert after["stages"] == [("$default", True, 5, 2.5)]
    assert (after["reserved_concurrency"], after["architectures"]) == (3, ["arm64"])

    # Back to the defaults on the next deploy: public route, concurrency shared, x86_64. (Same stage limits:
    # moto has no UpdateStage, so the throttling update path is not exercised here.)
    push_image("commit-2")
    result = run_script(
        *deploy_args("commit-2", execution_role, app_server.url, "--reserved-concurrency", "none"),
        *("--throttle-burst", "5", "--throttle-rate", "2.5"),
        endpoint=fault_proxy.url,
    )
    assert result.returncode == 0, result.stderr
    after = state()
    assert after["routes"][0][2] == "NONE" and after["stages"] == [("$default", True, 5, 2.5)]
    # moto ignores Architectures in UpdateFunctionCode, so check the request the script sent.
    assert after["reserved_concurrency"] is None
    (code_update,) = [json.loads(b) for m, p, b in fault_proxy.bodies if m == "PUT" and p.endswith("/code")]
    assert code_update["Architectures"] == ["x86_64"]


def test_iam_auth_smoke_test_signs_its_requests(execution_role, app_server):
    """With --auth iam the public smoke test sends SigV4 (execute-api) signed requests; unsigned ones get 403."""
    app_server.require = "sigv4"
    deploy_good(execution_role, app_server, "commit-1", "--auth", "iam")
    push_image("commit-2")
    unsigned = run_script(*deploy_args("commit-2", execution_role, app_server.url))  # --auth none: no signature
    assert unsigned.returncode == 1 and "status 403" in unsigned.stderr


def test_jwt_auth_creates_an_authorizer(execution_role, app_server, monkeypatch):
    app_server.require = "bearer"
    deploy_good(execution_role, app_server, "commit-1", "--auth", "jwt", "--jwt-issuer",
                "https://issuer.example.com", "--jwt-audience", "cola", "--smoke-bearer", "test-token")  # fmt: skip
    apigw = boto3.client("apigatewayv2")
    api_id = apigw.get_apis()["Items"][0]["ApiId"]
    (route,) = apigw.get_routes(ApiId=api_id)["Items"]
    assert route["AuthorizationType"] == "JWT"
    authorizer = apigw.get_authorizer(ApiId=api_id, AuthorizerId=route["AuthorizerId"])
    assert authorizer["AuthorizerType"] == "JWT"
    assert authorizer["JwtConfiguration"] == {"Issuer": "https://issuer.example.com", "Audience": ["cola"]}
    assert authorizer["IdentitySource"] == ["$request.header.Authorization"]
    # A second deploy with the same settings reuses it; the token comes from the environment this time.
    monkeypatch.setenv("DEPLOY_SMOKE_TOKEN", "test-token")
    push_image("commit-2")
    again = run_script(*deploy_args("commit-2", execution_role, app_server.url, "--auth", "jwt", "--jwt-issuer",
                                    "https://issuer.example.com", "--jwt-audience", "cola"))  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "JWT authorizer" not in again.stderr
    assert apigw.get_routes(ApiId=api_id)["Items"][0]["AuthorizerId"] == route["AuthorizerId"]


def test_bad_flags_are_one_line_errors(aws_env):
    result = run_script("deploy", "--repository", "r", "--image-tag", "t", "--function", "f", "--role-arn", "a",
                        "--auth", "jwt")  # fmt: skip
    assert result.returncode == 2 and "--auth jwt needs --jwt-issuer" in result.stderr
    result = run_script("deploy", "--repository", "r", "--image-tag", "t", "--function", "f", "--role-arn", "a",
                        "--reserved-concurrency", "0")  # fmt: skip
    assert result.returncode == 2 and "must be >= 1 or 'none'" in result.stderr


def test_unpushed_image_tag_is_a_clear_error(execution_role, app_server):
    assert run_script("ensure-repo", "--repository", REPOSITORY).returncode == 0
    result = run_script(*deploy_args("never-pushed", execution_role, app_server.url))
    assert result.returncode == 1
    assert "image tag 'never-pushed' is not in ECR repository 'cola-serving'" in result.stderr
    assert "push it" in result.stderr and "Traceback" not in result.stderr
    assert boto3.client("lambda").list_functions()["Functions"] == []


def test_missing_region_is_a_clear_error(aws_env, monkeypatch):
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    result = run_script("ensure-repo", "--repository", REPOSITORY)
    assert result.returncode == 2
    assert "no AWS region: set AWS_REGION" in result.stderr


def _load_script():
    spec = importlib.util.spec_from_file_location("deploy_lambda", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_deploy_role_policy_grants_exactly_what_the_script_calls(execution_role, app_server, monkeypatch):
    """Run the deploy in-process, record every AWS operation, and check each against deploy-role-policy.json."""
    deploy_lambda = _load_script()
    calls: set[str] = set()

    def record(model, **_):
        service = model.service_model.signing_name
        service = {"monitoring": "cloudwatch"}.get(service, service)  # CloudWatch signs as "monitoring"
        # API Gateway authorises by HTTP verb (apigateway:GET ...), the other services by operation name.
        calls.add(f"apigateway:{model.http['method']}" if service == "apigateway" else f"{service}:{model.name}")

    real_session = boto3.session.Session

    def recording_session(**kwargs):
        session = real_session(**kwargs)
        session.events.register("before-call", record)
        return session

    monkeypatch.setattr(deploy_lambda.boto3.session, "Session", recording_session)
    assert deploy_lambda.main(["ensure-repo", "--repository", REPOSITORY]) == 0
    # Someone made the tags mutable again: the next ensure-repo fixes it (PutImageTagMutability).
    boto3.client("ecr").put_image_tag_mutability(repositoryName=REPOSITORY, imageTagMutability="MUTABLE")
    assert deploy_lambda.main(["ensure-repo", "--repository", REPOSITORY]) == 0
    push_image("commit-1")
    assert deploy_lambda.main(deploy_args("commit-1", execution_role, app_server.url)) == 0
    # Drift: someone re-pointed the route by hand; the next deploy (new image, more memory) must repair it.
    apigw = boto3.client("apigatewayv2")
    api_id = apigw.get_apis()["Items"][0]["ApiId"]
    stray = apigw.create_integration(
        ApiId=api_id,
        IntegrationType="HTTP_PROXY",
        IntegrationUri="https://example.com",
        IntegrationMethod="ANY",
    )["IntegrationId"]
    route_id = apigw.get_routes(ApiId=api_id)["Items"][0]["RouteId"]
    apigw.update_route(ApiId=api_id, RouteId=route_id, Target=f"integrations/{stray}")
    push_image("commit-2")
    assert (
        deploy_lambda.main(
            deploy_args(
                "commit-2",
                execution_role,
                app_server.url,
                "--memory",
                "3008",
                "--reserved-concurrency",
                "none",
            )
        )
        == 0
    )
    assert apigw.get_route(ApiId=api_id, RouteId=route_id)["Target"] != f"integrations/{stray}"
    assert boto3.client("lambda").get_function_configuration(FunctionName=FUNCTION)["MemorySize"] == 3008
    app_server.fail = "/predict"
    push_image("commit-3")
    assert deploy_lambda.main(deploy_args("commit-3", execution_role, app_server.url)) == 1
    # A canary whose alarm fires: the rollback path.
    app_server.fail = ""
    cw = boto3.client("cloudwatch")
    app_server.on_request = lambda q, path: (
        q == "live"
        and cw.set_alarm_state(AlarmName=f"{FUNCTION}-canary-errors", StateValue="ALARM", StateReason="test")
    )
    push_image("commit-4")
    assert deploy_lambda.main(deploy_args("commit-4", execution_role, app_server.url)) == 1
    assert boto3.client("lambda").get_alias(FunctionName=FUNCTION, Name="live")["FunctionVersion"] == "2"

    policy = json.loads(render_policy("deploy-role-policy.json"))
    allowed = [a for s in policy["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])]
    missing = sorted(c for c in calls if not any(fnmatch.fnmatchcase(c, a) for a in allowed))
    assert missing == [], f"deploy-role-policy.json lacks {missing}"
    # Least privilege: every deploy-side grant (not the image push or S3 ones) is used by the script.
    push_and_pull = {"ecr:GetAuthorizationToken", "ecr:BatchCheckLayerAvailability", "ecr:InitiateLayerUpload",
                     "ecr:UploadLayerPart", "ecr:CompleteLayerUpload", "ecr:PutImage", "ecr:BatchGetImage",
                     "ecr:GetDownloadUrlForLayer", "ecr:GetRepositoryPolicy", "ecr:SetRepositoryPolicy",
                     "iam:PassRole", "s3:ListBucket", "s3:GetObject"}  # fmt: skip
    # Real AWS only: the version smoke test invokes the function (moto cannot run images, the tests use
    # --smoke-url), and an IAM-authorised API is called with SigV4 over HTTP, not through boto3.
    real_aws_only = {"lambda:InvokeFunction", "execute-api:Invoke"}
    unused = sorted(set(allowed) - calls - push_and_pull - real_aws_only)
    assert unused == [], f"deploy-role-policy.json grants {unused} that the script never calls"
    assert all(s["Resource"] != "*" for s in policy["Statement"] if s["Sid"] != "EcrLogin")


def test_deploy_role_conditions_match_what_the_script_creates(execution_role, app_server):
    """The API statements only allow APIs tagged cola-mlops:api=<function>, AddPermission only for API Gateway:
    the script must create exactly that, or the real role would deny its own deploy."""
    policy = {s["Sid"]: s for s in json.loads(render_policy("deploy-role-policy.json"))["Statement"]}
    assert policy["HttpApiServingOnly"]["Condition"] == {"StringEquals": {"aws:ResourceTag/cola-mlops:api": FUNCTION}}
    assert policy["HttpApiCreateTagged"]["Condition"] == {"StringEquals": {"aws:RequestTag/cola-mlops:api": FUNCTION}}
    assert policy["HttpApiList"]["Action"] == "apigateway:GET"  # only listing is untagged
    assert policy["LetOnlyApiGatewayInvokeTheAlias"]["Condition"] == {
        "StringEquals": {"lambda:Principal": "apigateway.amazonaws.com"}
    }
    assert not any(
        "lambda:AddPermission" in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
        for sid, s in policy.items()
        if sid != "LetOnlyApiGatewayInvokeTheAlias"
    )
    deploy_good(execution_role, app_server)
    after = state()
    assert after["apis"][0][2] == {"cola-mlops:api": FUNCTION}
    assert {p[0] for p in after["permissions"]} == {"apigateway.amazonaws.com"}


def test_untagged_existing_api_is_a_clear_error(execution_role, app_server):
    """An API made by an older deploy has no tag; the restricted role could not change it, so say how to fix."""
    assert run_script("ensure-repo", "--repository", REPOSITORY).returncode == 0
    boto3.client("apigatewayv2").create_api(Name=FUNCTION, ProtocolType="HTTP")
    push_image("commit-1")
    result = run_script(*deploy_args("commit-1", execution_role, app_server.url))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"lacks the tag cola-mlops:api={FUNCTION}" in result.stderr
    assert "aws apigatewayv2 tag-resource" in result.stderr


@pytest.mark.parametrize(
    ("policy", "trust"),
    [
        ("deploy-role-policy.json", "deploy-role-trust.json"),
        ("report-role-policy.json", "report-role-trust.json"),
    ],
)
def test_iam_documents_are_accepted_by_iam(aws_env, policy, trust):
    """moto validates policy grammar, so a typo in deploy/iam/ fails here rather than in the AWS console."""
    iam = boto3.client("iam")
    role = iam.create_role(RoleName="github-oidc", AssumeRolePolicyDocument=render_policy(trust))["Role"]
    created = iam.create_policy(PolicyName="github-oidc", PolicyDocument=render_policy(policy))["Policy"]
    iam.attach_role_policy(RoleName="github-oidc", PolicyArn=created["Arn"])
    statement = role["AssumeRolePolicyDocument"]["Statement"][0]
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert "oidc-provider/token.actions.githubusercontent.com" in statement["Principal"]["Federated"]
    assert statement["Condition"]["StringEquals"]["token.actions.githubusercontent.com:sub"].startswith(
        "repo:example-org/cola-mlops:"
    )


def test_smoke_test_speaks_the_real_apps_contract(tiny_bundle):
    """The same smoke test against the project's real app (`python -m app` on the tiny bundle): if the app's
    /ready or /predict contract changes, the deploy's smoke test must change with it."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "AWS_LAMBDA_FUNCTION_NAME"}
    server = subprocess.Popen(
        [sys.executable, "-m", "app", "--port", str(port)],
        cwd=REPO_ROOT,
        env={**env, "COLA_BUNDLE_DIR": str(tiny_bundle)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # The retries double as the wait for the server to load the bundle, like a Lambda cold start.
        _load_script().smoke_test(f"http://127.0.0.1:{port}", attempts=120, delay=0.5)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_version_smoke_test_event_speaks_the_real_lambda_handler(tiny_bundle):
    """In AWS the candidate is smoke-tested by invoking the version with an HTTP API (payload 2.0) event
    (InvokeProbe); moto cannot run images, so the same probe goes to the project's real Lambda handler
    (app.lambda_handler on the tiny bundle) in a child process."""
    code = f"""
import importlib.util, json, logging, sys
logging.basicConfig(level=logging.INFO)
sys.path.insert(0, {str(REPO_ROOT)!r})
spec = importlib.util.spec_from_file_location("deploy_lambda", {str(SCRIPT)!r})
module = importlib.util.module_from_spec(spec); sys.modules[spec.name] = module; spec.loader.exec_module(module)
from app.lambda_handler import handler
probe = module.InvokeProbe(lambda payload: json.dumps(handler(json.loads(payload), None)).encode(), "handler")
module.smoke_test(probe, attempts=1, delay=0)
status, body = probe("POST", "/predict", {{"text": ""}})
print("empty text ->", status)
"""
    env = {k: v for k, v in os.environ.items() if k != "AWS_LAMBDA_FUNCTION_NAME"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env={**env, "COLA_BUNDLE_DIR": str(tiny_bundle)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "smoke POST /predict on handler: 200" in result.stderr
    assert "empty text -> 4" in result.stdout  # the probe reports the app's real status, not a blanket 200


def test_no_canary_promotes_straight_after_the_version_smoke_test(execution_role, app_server):
    deploy_good(execution_role, app_server)
    push_image("commit-2")
    result = run_script(*deploy_args("commit-2", execution_role, app_server.url, "--canary-percent", "0"))
    assert result.returncode == 0, result.stderr
    assert "canary" not in result.stderr and "promoted: alias live -> version 2 (was 1)" in result.stderr
    assert boto3.client("cloudwatch").describe_alarms()["MetricAlarms"] == []
    assert (state()["alias"], state()["weights"]) == ("2", {})


def test_image_exists_tells_the_workflow_whether_to_push(aws_env):
    """Tags are immutable, so re-running the workflow for a pushed commit must skip `docker push`."""
    assert run_script("ensure-repo", "--repository", REPOSITORY).returncode == 0
    absent = run_script("image-exists", "--repository", REPOSITORY, "--image-tag", "commit-1")
    assert (absent.returncode, absent.stdout) == (3, "")
    digest = push_image("commit-1")
    present = run_script("image-exists", "--repository", REPOSITORY, "--image-tag", "commit-1")
    assert (present.returncode, present.stdout.strip()) == (0, digest)
    broken = run_script(
        "image-exists", "--repository", REPOSITORY, "--image-tag", "commit-1", endpoint="http://127.0.0.1:9"
    )
    assert broken.returncode == 1 and "Traceback" not in broken.stderr
