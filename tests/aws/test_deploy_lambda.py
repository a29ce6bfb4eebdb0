"""scripts/deploy_lambda.py end to end against moto_server (ECR, Lambda, API Gateway v2, IAM).

moto stores image functions but cannot invoke them, and its execute-api URLs do not resolve, so the smoke test
talks to a stand-in HTTP server on 127.0.0.1 that speaks the app's /ready and /predict contract and can be told to
fail; that is what exercises the smoke test and the alias rollback.
"""

from __future__ import annotations

import fnmatch
import hashlib
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

from tests.aws.awsenv import REGION, REPO_ROOT, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCRIPT = REPO_ROOT / "scripts" / "deploy_lambda.py"
IAM_DIR = REPO_ROOT / "deploy" / "iam"
REPOSITORY = FUNCTION = "cola-serving"
EXECUTION_ROLE = "cola-serving-lambda"


class StandInApp(BaseHTTPRequestHandler):
    """The app's smoke-test surface. `server.fail` names the endpoint that answers 503 ("" = healthy)."""

    def _answer(self, status: int, body: dict) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):
        if self.path == "/ready":
            failing = self.server.fail == "/ready"
            return self._answer(503 if failing else 200, {"ready": not failing})
        self._answer(404, {"detail": "not found"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/predict" and self.server.fail != "/predict" and isinstance(body.get("text"), str):
            return self._answer(200, {"predictions": [{"label": "acceptable", "prob_acceptable": 0.93}]})
        self._answer(503, {"detail": "model unavailable"})

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def app_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandInApp)
    server.fail = ""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


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
    image = boto3.client("ecr").put_image(
        repositoryName=REPOSITORY, imageManifest=json.dumps(manifest), imageTag=tag
    )
    return image["image"]["imageId"]["imageDigest"]


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


def deploy_args(tag: str, role_arn: str, smoke_url: str, *extra: str) -> list[str]:
    return [
        "deploy", "--repository", REPOSITORY, "--image-tag", tag, "--function", FUNCTION, "--role-arn", role_arn,
        "--smoke-url", smoke_url, "--smoke-attempts", "2", "--smoke-delay", "0", "--env", "COLA_ORT_THREADS=2", *extra,
    ]  # fmt: skip


def state() -> dict:
    """What the deploy left in the (emulated) account."""
    lam, apigw = boto3.client("lambda"), boto3.client("apigatewayv2")
    apis = apigw.get_apis()["Items"]
    api_id = apis[0]["ApiId"] if apis else None
    policy = json.loads(lam.get_policy(FunctionName=FUNCTION, Qualifier="live")["Policy"])
    return {
        "image": lam.get_function(FunctionName=FUNCTION)["Code"]["ImageUri"],
        "versions": sorted(
            v["Version"] for v in lam.list_versions_by_function(FunctionName=FUNCTION)["Versions"]
        ),
        "alias": lam.get_alias(FunctionName=FUNCTION, Name="live")["FunctionVersion"],
        "apis": [(a["Name"], a["ProtocolType"]) for a in apis],
        "endpoint": apis[0]["ApiEndpoint"],
        "integrations": [
            (i["IntegrationType"], i["IntegrationUri"]) for i in apigw.get_integrations(ApiId=api_id)["Items"]
        ],
        "routes": [(r["RouteKey"], r["Target"]) for r in apigw.get_routes(ApiId=api_id)["Items"]],
        "stages": [(s["StageName"], s["AutoDeploy"]) for s in apigw.get_stages(ApiId=api_id)["Items"]],
        "permissions": [
            (s["Principal"]["Service"], s["Condition"]["ArnLike"]["AWS:SourceArn"])
            for s in policy["Statement"]
        ],
    }


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
        "versions": ["$LATEST", "1"],
        "alias": "1",
        "apis": [(FUNCTION, "HTTP")],
        "endpoint": after_first["endpoint"],
        "integrations": [("AWS_PROXY", alias_arn)],
        "routes": [("$default", after_first["routes"][0][1])],
        "stages": [("$default", True)],
        "permissions": [
            ("apigateway.amazonaws.com", f"arn:aws:execute-api:{REGION}:123456789012:{api_id}/*/*")
        ],
    }
    assert first.stdout.strip() == after_first["endpoint"]
    assert "smoke POST /predict: 200" in first.stderr

    again = run_script(*deploy_args("commit-aaa", execution_role, app_server.url))
    assert again.returncode == 0, again.stderr
    assert state() == after_first
    assert "already runs" in again.stderr and "alias live already on version 1" in again.stderr
    assert "created" not in again.stderr and "updated" not in again.stderr

    assert run_script("ensure-repo", "--repository", REPOSITORY).stdout == repo.stdout
    assert len(boto3.client("ecr").describe_repositories()["repositories"]) == 1


@pytest.mark.parametrize("failing", ["/ready", "/predict"])
def test_failed_smoke_test_moves_the_alias_back(execution_role, app_server, failing):
    assert run_script("ensure-repo", "--repository", REPOSITORY).returncode == 0
    push_image("commit-good")
    good = run_script(*deploy_args("commit-good", execution_role, app_server.url))
    assert good.returncode == 0, good.stderr

    push_image("commit-bad")
    app_server.fail = failing
    bad = run_script(*deploy_args("commit-bad", execution_role, app_server.url))

    assert bad.returncode == 1
    assert f"smoke test {'GET' if failing == '/ready' else 'POST'} {failing}" in bad.stderr
    assert "rolled back: alias live -> version 1" in bad.stderr
    assert "Traceback" not in bad.stderr
    after = state()
    assert after["versions"] == ["$LATEST", "1", "2"]  # the bad version exists but takes no traffic
    assert after["alias"] == "1"


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
    spec.loader.exec_module(module)
    return module


def test_deploy_role_policy_grants_exactly_what_the_script_calls(execution_role, app_server, monkeypatch):
    """Run the deploy in-process, record every AWS operation, and check each against deploy-role-policy.json."""
    deploy_lambda = _load_script()
    calls: set[str] = set()

    def record(model, **_):
        service = model.service_model.signing_name
        # API Gateway authorises by HTTP verb (apigateway:GET ...), the other services by operation name.
        calls.add(
            f"apigateway:{model.http['method']}" if service == "apigateway" else f"{service}:{model.name}"
        )

    real_session = boto3.session.Session

    def recording_session(**kwargs):
        session = real_session(**kwargs)
        session.events.register("before-call", record)
        return session

    monkeypatch.setattr(deploy_lambda.boto3.session, "Session", recording_session)
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
        deploy_lambda.main(deploy_args("commit-2", execution_role, app_server.url, "--memory", "3008")) == 0
    )
    assert apigw.get_route(ApiId=api_id, RouteId=route_id)["Target"] != f"integrations/{stray}"
    assert boto3.client("lambda").get_function_configuration(FunctionName=FUNCTION)["MemorySize"] == 3008
    app_server.fail = "/predict"
    push_image("commit-3")
    assert deploy_lambda.main(deploy_args("commit-3", execution_role, app_server.url)) == 1

    policy = json.loads(render_policy("deploy-role-policy.json"))
    allowed = [
        a
        for s in policy["Statement"]
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    ]
    missing = sorted(c for c in calls if not any(fnmatch.fnmatchcase(c, a) for a in allowed))
    assert missing == [], f"deploy-role-policy.json lacks {missing}"
    # Least privilege: every deploy-side grant (not the image push or S3 ones) is used by the script.
    push_and_pull = {"ecr:GetAuthorizationToken", "ecr:BatchCheckLayerAvailability", "ecr:InitiateLayerUpload",
                     "ecr:UploadLayerPart", "ecr:CompleteLayerUpload", "ecr:PutImage", "ecr:BatchGetImage",
                     "ecr:GetDownloadUrlForLayer", "ecr:GetRepositoryPolicy", "ecr:SetRepositoryPolicy",
                     "iam:PassRole", "s3:ListBucket", "s3:GetObject"}  # fmt: skip
    unused = sorted(set(allowed) - calls - push_and_pull)
    assert unused == [], f"deploy-role-policy.json grants {unused} that the script never calls"
    assert all(s["Resource"] != "*" for s in policy["Statement"] if s["Sid"] != "EcrLogin")


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
