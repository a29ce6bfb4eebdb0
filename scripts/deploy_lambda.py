"""Deploy the serving image to AWS Lambda behind an HTTP API: idempotent, smoke-tested, canaried, rolled back.

    python scripts/deploy_lambda.py ensure-repo --repository cola-serving
        Create the ECR repository when missing (immutable tags, scan on push), make sure its lifecycle policy
        keeps the last --keep-images images, and print its URI (the workflow pushes the image there).

    python scripts/deploy_lambda.py image-exists --repository cola-serving --image-tag <sha>
        Print the digest of that tag and exit 0, or exit 3 when it was never pushed (tags are immutable: a
        re-run of the same commit skips the push).

    python scripts/deploy_lambda.py deploy --repository cola-serving --image-tag <sha> \\
        --function cola-serving --role-arn arn:aws:iam::<account>:role/cola-serving-lambda
        1. point the function at the image digest behind <sha> (waiting for State/LastUpdateStatus before each
           change, repairing a Failed function), set architecture, memory, timeout, environment and reserved
           concurrency, publish a version;
        2. smoke-test that version by qualifier (GET /ready, POST /predict) before it takes any traffic;
        3. make sure the HTTP API (tagged, throttled stage, optional IAM/JWT auth, invoke permission) exists;
        4. canary: the `live` alias sends --canary-percent of requests to the new version for --canary-minutes
           while two CloudWatch alarms (errors, p99 duration of that version) are watched; then promote and
           smoke-test the public endpoint. Any failure after the first alias change moves `live` back to the
           previous version with no weighted routing, and the script exits non-zero.

Every step checks what exists first, so running it twice changes nothing the second time. Credentials and region
come from the usual AWS environment (the deploy workflow gets them through GitHub OIDC); AWS_ENDPOINT_URL points
boto3 at a local emulator in the tests. docs/deploy.md describes the whole flow.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger("deploy")

SMOKE_SENTENCE = "The cat sat on the mat."
LABELS = ("acceptable", "unacceptable")  # contract/bundle.py config.json labels; /predict answers with one of them
API_TAG = "cola-mlops:api"  # the deploy role may only touch HTTP APIs carrying this tag (deploy/iam/)


class DeployError(RuntimeError):
    """A deploy step failed; the message says what, where and how to fix it."""


def _error_code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


# --- ECR -------------------------------------------------------------------------------------------------


def lifecycle_policy(keep: int) -> str:
    """Keep the newest `keep` images: Lambda versions run images by digest, so an expired image is a version
    the alias can no longer roll back to. Untagged images (a failed or partial push) go after 7 days."""
    return json.dumps(
        {
            "rules": [
                {
                    "rulePriority": 1,
                    "description": "untagged images: leftovers of interrupted pushes",
                    "selection": {
                        "tagStatus": "untagged",
                        "countType": "sinceImagePushed",
                        "countUnit": "days",
                        "countNumber": 7,
                    },
                    "action": {"type": "expire"},
                },
                {
                    "rulePriority": 2,
                    "description": f"keep the last {keep} images (rollback targets)",
                    "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": keep},
                    "action": {"type": "expire"},
                },
            ]
        },
        sort_keys=True,
    )


def ensure_repository(ecr, name: str, keep_images: int = 10) -> str:
    try:
        repo = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
        log.info("ECR repository %s exists", name)
    except ClientError as exc:
        if _error_code(exc) != "RepositoryNotFoundException":
            raise
        repo = ecr.create_repository(
            repositoryName=name,
            imageTagMutability="IMMUTABLE",
            imageScanningConfiguration={"scanOnPush": True},
        )["repository"]
        log.info("ECR repository %s created", name)
    if repo.get("imageTagMutability") != "IMMUTABLE":
        # A tag is a commit SHA: nobody may re-point it at another image after it was deployed.
        ecr.put_image_tag_mutability(repositoryName=name, imageTagMutability="IMMUTABLE")
        log.info("ECR repository %s tags made immutable", name)
    wanted = lifecycle_policy(keep_images)
    try:
        have = ecr.get_lifecycle_policy(repositoryName=name)["lifecyclePolicyText"]
        have = json.dumps(json.loads(have), sort_keys=True)
    except ClientError as exc:
        if _error_code(exc) != "LifecyclePolicyNotFoundException":
            raise
        have = None
    if have != wanted:
        ecr.put_lifecycle_policy(repositoryName=name, lifecyclePolicyText=wanted)
        log.info("ECR repository %s lifecycle policy: keep the last %d images", name, keep_images)
    return repo["repositoryUri"]


def image_uri_by_digest(ecr, repository: str, tag: str) -> str:
    """`<repo uri>@sha256:...` for a pushed tag: Lambda then runs exactly that image, whatever the tag does later."""
    try:
        images = ecr.describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])["imageDetails"]
    except ClientError as exc:
        if _error_code(exc) not in ("ImageNotFoundException", "RepositoryNotFoundException"):
            raise
        raise DeployError(
            f"image tag {tag!r} is not in ECR repository {repository!r}: build docker/Dockerfile.lambda and push it "
            f"with that tag first (the deploy workflow does this before calling the script)"
        ) from exc
    uri = ecr.describe_repositories(repositoryNames=[repository])["repositories"][0]["repositoryUri"]
    return f"{uri}@{images[0]['imageDigest']}"


# --- Lambda ----------------------------------------------------------------------------------------------


@dataclass
class Waits:
    timeout: float = 600.0  # an image function's first optimisation can take minutes
    poll: float = 5.0


def wait_until_ready(lam, name: str, waits: Waits, qualifier: str | None = None, allow_failed: bool = False) -> dict:
    """Poll until the function is neither Pending nor InProgress; a Failed state is an error unless
    `allow_failed` (the caller repairs it). Lambda rejects changes while an update is in progress."""
    kwargs = {"FunctionName": name, **({"Qualifier": qualifier} if qualifier else {})}
    deadline = time.monotonic() + waits.timeout
    while True:
        config = lam.get_function_configuration(**kwargs)
        state, update = config.get("State", "Active"), config.get("LastUpdateStatus", "Successful")
        failed = state == "Failed" or update == "Failed"
        if failed and not allow_failed:
            reason = config.get("StateReason") or config.get("LastUpdateStatusReason") or "no reason given"
            raise DeployError(
                f"Lambda function {name}{':' + qualifier if qualifier else ''} is State={state} "
                f"LastUpdateStatus={update}: {reason} (check the image, the execution role and the function's "
                f"CloudWatch logs, then deploy again)"
            )
        if failed or (state not in ("Pending",) and update != "InProgress"):
            return config
        if time.monotonic() > deadline:
            raise DeployError(
                f"Lambda function {name} still State={state} LastUpdateStatus={update} after {waits.timeout:.0f} s "
                f"(raise --wait-timeout, or look at the function in the console)"
            )
        time.sleep(waits.poll)


def ensure_function(
    lam,
    name: str,
    image_uri: str,
    role_arn: str,
    memory: int,
    timeout: int,
    env: dict,
    architecture: str = "x86_64",
    waits: Waits | None = None,
) -> dict:
    """Create the function from the image, or update its code and configuration; wait until it is ready."""
    waits = waits or Waits()
    wanted = {"Role": role_arn, "MemorySize": memory, "Timeout": timeout, "Environment": {"Variables": env}}
    try:
        lam.get_function(FunctionName=name)
    except ClientError as exc:
        if _error_code(exc) != "ResourceNotFoundException":
            raise
        lam.create_function(
            FunctionName=name,
            PackageType="Image",
            Code={"ImageUri": image_uri},
            Architectures=[architecture],
            **wanted,
        )
        log.info("Lambda function %s created from %s (%s)", name, image_uri, architecture)
        return wait_until_ready(lam, name, waits)

    config = wait_until_ready(lam, name, waits, allow_failed=True)
    failed = config.get("State") == "Failed" or config.get("LastUpdateStatus") == "Failed"
    current_image = lam.get_function(FunctionName=name)["Code"].get("ImageUri")
    if failed or current_image != image_uri or config.get("Architectures", ["x86_64"]) != [architecture]:
        # Re-applying the code is also how a Failed function is repaired: Lambda retries the image.
        lam.update_function_code(FunctionName=name, ImageUri=image_uri, Architectures=[architecture])
        if failed:
            log.warning(
                "Lambda function %s was Failed (%s): code re-applied to repair it",
                name,
                config.get("StateReason") or config.get("LastUpdateStatusReason") or "no reason given",
            )
        else:
            log.info("Lambda function %s code -> %s (%s)", name, image_uri, architecture)
        config = wait_until_ready(lam, name, waits)
    else:
        log.info("Lambda function %s already runs %s", name, image_uri)

    have = {
        "Role": config.get("Role"),
        "MemorySize": config.get("MemorySize"),
        "Timeout": config.get("Timeout"),
        "Environment": {"Variables": config.get("Environment", {}).get("Variables", {})},
    }
    if have != wanted:
        lam.update_function_configuration(FunctionName=name, **wanted)
        log.info("Lambda function %s configuration updated", name)
        config = wait_until_ready(lam, name, waits)
    return config


def ensure_reserved_concurrency(lam, name: str, reserved: int | None) -> None:
    """Cap concurrent executions (and so the bill and the blast radius); None = share the account's pool."""
    have = lam.get_function_concurrency(FunctionName=name).get("ReservedConcurrentExecutions")
    if have == reserved:
        return
    if reserved is None:
        lam.delete_function_concurrency(FunctionName=name)
        log.info("Lambda function %s reserved concurrency removed", name)
        return
    try:
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=reserved)
    except ClientError as exc:
        if _error_code(exc) not in ("InvalidParameterValueException", "LimitExceededException"):
            raise
        raise DeployError(
            f"cannot reserve {reserved} concurrent executions for {name}: {exc.response['Error'].get('Message')} "
            f"(new accounts have a concurrency quota of 10: request a Lambda concurrency quota increase, or pass "
            f"--reserved-concurrency none)"
        ) from exc
    log.info("Lambda function %s reserved concurrency %d", name, reserved)


def publish_version(lam, name: str, description: str, waits: Waits | None = None) -> str:
    waits = waits or Waits()
    wait_until_ready(lam, name, waits)
    # Lambda returns the existing latest version when code and configuration are unchanged: idempotent.
    version = lam.publish_version(FunctionName=name, Description=description)["Version"]
    wait_until_ready(lam, name, waits, qualifier=version)
    log.info("Lambda function %s version %s published (%s)", name, version, description)
    return version


NO_ROUTING = {"AdditionalVersionWeights": {}}


def get_alias(lam, name: str, alias: str) -> dict | None:
    try:
        return lam.get_alias(FunctionName=name, Name=alias)
    except ClientError as exc:
        if _error_code(exc) != "ResourceNotFoundException":
            raise
        return None


def set_alias(lam, name: str, alias: str, version: str, canary: tuple[str, float] | None = None) -> str:
    """Point the alias at `version`, optionally sending a weight (0..1) of requests to a canary version."""
    routing = {"AdditionalVersionWeights": {canary[0]: canary[1]}} if canary else NO_ROUTING
    return lam.update_alias(FunctionName=name, Name=alias, FunctionVersion=version, RoutingConfig=routing)["AliasArn"]


# --- API Gateway (HTTP API) ------------------------------------------------------------------------------


def _find(pages, key: str, match) -> dict | None:
    return next((item for page in pages for item in page.get(key, []) if match(item)), None)


def _all_pages(call, **kwargs):
    """API Gateway v2 lists page with NextToken but boto3 has no paginators for them."""
    while True:
        page = call(**kwargs)
        yield page
        if not page.get("NextToken"):
            return
        kwargs["NextToken"] = page["NextToken"]


@dataclass
class ApiSettings:
    name: str
    burst: int = 20
    rate: float = 10.0
    auth: str = "none"  # none | iam | jwt
    jwt_issuer: str | None = None
    jwt_audience: tuple[str, ...] = ()


def ensure_http_api(apigw, lam, settings: ApiSettings, function: str, alias: str, alias_arn: str) -> str:
    """HTTP API -> Lambda proxy integration on the alias, $default route (with the chosen auth) and an
    auto-deployed, throttled $default stage; returns its URL."""
    region, account = alias_arn.split(":")[3:5]
    api = _find(_all_pages(apigw.get_apis), "Items", lambda a: a["Name"] == settings.name)
    if api is None:
        api = apigw.create_api(Name=settings.name, ProtocolType="HTTP", Tags={API_TAG: function})
        log.info("HTTP API %s created (%s)", settings.name, api["ApiId"])
    else:
        log.info("HTTP API %s exists (%s)", settings.name, api["ApiId"])
        if api.get("Tags", {}).get(API_TAG) != function:
            # The deploy role may only change APIs with this tag, so it cannot tag one itself.
            raise DeployError(
                f"HTTP API {settings.name} ({api['ApiId']}) lacks the tag {API_TAG}={function} that the deploy role "
                f"requires: an administrator runs once `aws apigatewayv2 tag-resource --resource-arn "
                f"arn:aws:apigateway:{region}::/apis/{api['ApiId']} --tags {API_TAG}={function}`"
            )
    api_id = api["ApiId"]

    integration = _find(
        _all_pages(apigw.get_integrations, ApiId=api_id),
        "Items",
        lambda i: i.get("IntegrationUri") == alias_arn,
    )
    if integration is None:
        integration = apigw.create_integration(
            ApiId=api_id, IntegrationType="AWS_PROXY", IntegrationUri=alias_arn, PayloadFormatVersion="2.0"
        )
        log.info("integration %s -> %s created", integration["IntegrationId"], alias_arn)
    target = f"integrations/{integration['IntegrationId']}"

    route = _find(_all_pages(apigw.get_routes, ApiId=api_id), "Items", lambda r: r["RouteKey"] == "$default")
    route_auth = {"AuthorizationType": "NONE"}
    if settings.auth == "iam":
        route_auth = {"AuthorizationType": "AWS_IAM"}
    elif settings.auth == "jwt":
        current_id = (route or {}).get("AuthorizerId")
        route_auth = {
            "AuthorizationType": "JWT",
            "AuthorizerId": ensure_jwt_authorizer(apigw, api_id, settings, current_id),
        }
    if route is None:
        apigw.create_route(ApiId=api_id, RouteKey="$default", Target=target, **route_auth)
        log.info("route $default -> %s created (auth %s)", target, route_auth["AuthorizationType"])
    elif route.get("Target") != target or any(route.get(k) != v for k, v in route_auth.items()):
        apigw.update_route(ApiId=api_id, RouteId=route["RouteId"], Target=target, **route_auth)
        log.info("route $default -> %s updated (auth %s)", target, route_auth["AuthorizationType"])

    throttle = {"ThrottlingBurstLimit": settings.burst, "ThrottlingRateLimit": float(settings.rate)}
    stage = _find(_all_pages(apigw.get_stages, ApiId=api_id), "Items", lambda s: s["StageName"] == "$default")
    if stage is None:
        apigw.create_stage(ApiId=api_id, StageName="$default", AutoDeploy=True, DefaultRouteSettings=throttle)
        log.info("stage $default (auto-deploy, burst %d, rate %s/s) created", settings.burst, settings.rate)
    else:
        have = stage.get("DefaultRouteSettings", {})
        if any(have.get(k) != v for k, v in throttle.items()) or not stage.get("AutoDeploy"):
            apigw.update_stage(ApiId=api_id, StageName="$default", AutoDeploy=True, DefaultRouteSettings=throttle)
            log.info("stage $default throttling updated (burst %d, rate %s/s)", settings.burst, settings.rate)

    ensure_invoke_permission(lam, function, alias, alias_arn, api_id)
    return api["ApiEndpoint"]


def ensure_jwt_authorizer(apigw, api_id: str, settings: ApiSettings, current_id: str | None) -> str:
    """The route's JWT authorizer, created or corrected; found through the route, so no listing is needed."""
    config = {"Issuer": settings.jwt_issuer, "Audience": list(settings.jwt_audience)}
    found = None
    if current_id:
        try:
            found = apigw.get_authorizer(ApiId=api_id, AuthorizerId=current_id)
        except ClientError as exc:
            if _error_code(exc) != "NotFoundException":
                raise
    if found is None or found.get("AuthorizerType") != "JWT":
        found = apigw.create_authorizer(
            ApiId=api_id,
            Name="jwt",
            AuthorizerType="JWT",
            IdentitySource=["$request.header.Authorization"],
            JwtConfiguration=config,
        )
        log.info("JWT authorizer created (issuer %s)", settings.jwt_issuer)
    elif found.get("JwtConfiguration") != config:
        apigw.update_authorizer(ApiId=api_id, AuthorizerId=found["AuthorizerId"], JwtConfiguration=config)
        log.info("JWT authorizer updated (issuer %s)", settings.jwt_issuer)
    return found["AuthorizerId"]


def ensure_invoke_permission(lam, function: str, alias: str, alias_arn: str, api_id: str) -> None:
    # arn:aws:lambda:<region>:<account>:function:<name>:<alias>: the API's ARN lives in the same region and account.
    region, account = alias_arn.split(":")[3:5]
    statement_id = f"apigateway-{api_id}"
    try:
        policy = json.loads(lam.get_policy(FunctionName=function, Qualifier=alias)["Policy"])
        if any(s.get("Sid") == statement_id for s in policy.get("Statement", [])):
            return
    except ClientError as exc:
        if _error_code(exc) != "ResourceNotFoundException":
            raise
    lam.add_permission(
        FunctionName=function,
        Qualifier=alias,
        StatementId=statement_id,
        Action="lambda:InvokeFunction",
        Principal="apigateway.amazonaws.com",
        SourceArn=f"arn:aws:execute-api:{region}:{account}:{api_id}/*/*",
    )
    log.info("API %s may invoke %s:%s", api_id, function, alias)


# --- smoke test --------------------------------------------------------------------------------------------


def _names_a_label(text: str) -> bool:
    return any(label in text for label in LABELS)


class HttpProbe:
    """Requests to a base URL; `signer` SigV4-signs them for an IAM-authorised API."""

    def __init__(self, base_url: str, signer=None, bearer: str | None = None, timeout: float = 30.0):
        self.base_url, self.signer, self.bearer, self.timeout = base_url.rstrip("/"), signer, bearer, timeout

    def __call__(self, method: str, path: str, body: dict | None) -> tuple[int, str]:
        url = f"{self.base_url}{path}"
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.bearer:
            headers["Authorization"] = f"Bearer {self.bearer}"
        if self.signer:
            headers = self.signer(method, url, data, headers)
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")
        except (urllib.error.URLError, OSError) as exc:
            return 0, str(exc)

    def describe(self) -> str:
        return self.base_url


def sigv4_signer(session: boto3.session.Session):
    credentials = session.get_credentials().get_frozen_credentials()

    def sign(method: str, url: str, data: bytes | None, headers: dict) -> dict:
        request = AWSRequest(method=method, url=url, data=data, headers=headers)
        SigV4Auth(credentials, "execute-api", session.region_name).add_auth(request)
        return dict(request.headers.items())

    return sign


class InvokeProbe:
    """The HTTP API's payload-2.0 event sent straight to one function version: tests a version by qualifier
    before any alias (so any user) can reach it. `invoke(payload bytes) -> response bytes`."""

    def __init__(self, invoke, label: str):
        self.invoke, self.label = invoke, label

    @staticmethod
    def for_version(lam, function: str, version: str) -> InvokeProbe:
        def invoke(payload: bytes) -> bytes:
            response = lam.invoke(FunctionName=function, Qualifier=version, Payload=payload)
            if response.get("FunctionError"):
                return json.dumps({"statusCode": 0, "body": response["Payload"].read().decode(errors="replace")})
            return response["Payload"].read()

        return InvokeProbe(invoke, f"{function}:{version}")

    @staticmethod
    def event(method: str, path: str, body: dict | None) -> dict:
        return {
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": path,
            "rawQueryString": "",
            "headers": {"content-type": "application/json"},
            "requestContext": {
                "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1"},
                "stage": "$default",
            },
            "body": None if body is None else json.dumps(body),
            "isBase64Encoded": False,
        }

    def __call__(self, method: str, path: str, body: dict | None) -> tuple[int, str]:
        answer = json.loads(self.invoke(json.dumps(self.event(method, path, body)).encode()))
        return int(answer.get("statusCode", 0)), str(answer.get("body", ""))

    def describe(self) -> str:
        return self.label


def smoke_test(target, attempts: int, delay: float, timeout: float = 30.0) -> None:
    """GET /ready then POST /predict with one sentence; a cold start gets `attempts` tries `delay` s apart.
    `target` is a base URL or a probe (HttpProbe, InvokeProbe)."""
    probe = HttpProbe(target, timeout=timeout) if isinstance(target, str) else target
    checks = [
        ("GET /ready", "GET", "/ready", None, lambda text: True),
        ("POST /predict", "POST", "/predict", {"text": SMOKE_SENTENCE}, _names_a_label),
    ]
    for name, method, path, body, looks_right in checks:
        for attempt in range(1, attempts + 1):
            status, text = probe(method, path, body)
            if status == 200 and looks_right(text):
                log.info("smoke %s on %s: 200 %s", name, probe.describe(), text[:200])
                break
            log.warning("smoke %s attempt %d/%d: status %s %s", name, attempt, attempts, status, text[:200])
            if attempt == attempts:
                raise DeployError(
                    f"smoke test {name} on {probe.describe()}{path} failed after {attempts} attempts: "
                    f"status {status} {text[:200]}"
                )
            time.sleep(delay)


# --- canary ------------------------------------------------------------------------------------------------


@dataclass
class Canary:
    percent: float = 10.0
    minutes: float = 10.0
    poll: float = 30.0
    max_errors: int = 0  # alarm when the canary version has more Lambda errors than this in a minute
    p99_ms: float = 3000.0  # alarm when its p99 duration exceeds this in a minute


def canary_alarm_names(function: str) -> list[str]:
    return [f"{function}-canary-errors", f"{function}-canary-p99"]


def ensure_canary_alarms(cw, function: str, alias: str, version: str, canary: Canary) -> list[str]:
    """Alarms on the new version's own metrics (ExecutedVersion): the old version's traffic cannot hide or
    cause a failure. Missing data is fine (no traffic is not an error); state is reset so an alarm left over
    from the previous canary does not fail this one."""
    dims = [
        {"Name": "FunctionName", "Value": function},
        {"Name": "Resource", "Value": f"{function}:{alias}"},
        {"Name": "ExecutedVersion", "Value": version},
    ]
    common = {
        "Namespace": "AWS/Lambda",
        "Dimensions": dims,
        "Period": 60,
        "EvaluationPeriods": 1,
        "TreatMissingData": "notBreaching",
        "ComparisonOperator": "GreaterThanThreshold",
    }
    errors, p99 = canary_alarm_names(function)
    cw.put_metric_alarm(
        AlarmName=errors,
        MetricName="Errors",
        Statistic="Sum",
        Threshold=float(canary.max_errors),
        AlarmDescription=f"canary of {function} version {version}: errors",
        **common,
    )
    cw.put_metric_alarm(
        AlarmName=p99,
        MetricName="Duration",
        ExtendedStatistic="p99",
        Threshold=canary.p99_ms,
        AlarmDescription=f"canary of {function} version {version}: p99 ms",
        **common,
    )
    for name in (errors, p99):
        cw.set_alarm_state(AlarmName=name, StateValue="OK", StateReason=f"new canary: version {version}")
    return [errors, p99]


def watch_canary(cw, alarms: list[str], canary: Canary, probe, version: str) -> None:
    """Send a little traffic through the public alias (a quiet service gives an alarm nothing to judge) and
    check the alarms until the canary time is over; at least one round, so 0 minutes still checks once."""
    deadline = time.monotonic() + canary.minutes * 60
    while True:
        if probe is not None:
            for method, path, body in (
                ("GET", "/ready", None),
                ("POST", "/predict", {"text": SMOKE_SENTENCE}),
            ):
                status, _ = probe(method, path, body)
                if status != 200:
                    log.warning("canary traffic %s %s: status %s", method, path, status)
        firing = [
            a["AlarmName"] for a in cw.describe_alarms(AlarmNames=alarms)["MetricAlarms"] if a["StateValue"] == "ALARM"
        ]
        if firing:
            raise DeployError(
                f"canary alarm {', '.join(firing)} fired for version {version} (see the alarm and the function's "
                f"logs in CloudWatch; fix and deploy again)"
            )
        if time.monotonic() >= deadline:
            return
        time.sleep(min(canary.poll, max(0.0, deadline - time.monotonic())))


# --- entry points ----------------------------------------------------------------------------------------


def _terminate_as_interrupt(signum, frame):
    # The workflow is cancelled with SIGTERM; turn it into an exception so the rollback path runs.
    raise KeyboardInterrupt(f"signal {signum}")


def deploy(args: argparse.Namespace, session: boto3.session.Session) -> str:
    ecr, lam, apigw, cw = (session.client(s) for s in ("ecr", "lambda", "apigatewayv2", "cloudwatch"))
    waits = Waits(args.wait_timeout, args.poll_interval)
    image_uri = image_uri_by_digest(ecr, args.repository, args.image_tag)
    env = dict(pair.split("=", 1) for pair in args.env)
    ensure_function(
        lam, args.function, image_uri, args.role_arn, args.memory, args.timeout, env, args.architecture, waits
    )
    ensure_reserved_concurrency(lam, args.function, args.reserved_concurrency)
    version = publish_version(lam, args.function, description=f"image {args.image_tag}", waits=waits)

    def probe_for(qualifier: str, public_url: str | None):
        signer = sigv4_signer(session) if args.auth == "iam" else None
        if args.smoke_url:  # tests and dry runs: a stand-in server, addressed per qualifier
            return HttpProbe(args.smoke_url.replace("{qualifier}", qualifier), signer, args.smoke_bearer)
        if public_url is None:
            return InvokeProbe.for_version(lam, args.function, qualifier)
        return HttpProbe(public_url, signer=signer, bearer=args.smoke_bearer)

    # 1. The candidate, by version, before any alias (any user) reaches it. Failure: nothing moved.
    smoke_test(probe_for(version, None), args.smoke_attempts, args.smoke_delay)

    api = ApiSettings(
        args.api_name or args.function,
        args.throttle_burst,
        args.throttle_rate,
        args.auth,
        args.jwt_issuer,
        tuple(args.jwt_audience),
    )
    current = get_alias(lam, args.function, args.alias)
    if current is None:
        # First deploy: nothing to protect or roll back to; the alias must exist before the API points at it.
        alias_arn = lam.create_alias(FunctionName=args.function, Name=args.alias, FunctionVersion=version)["AliasArn"]
        log.info("alias %s created -> version %s", args.alias, version)
        endpoint = ensure_http_api(apigw, lam, api, args.function, args.alias, alias_arn)
        smoke_test(probe_for(args.alias, endpoint), args.smoke_attempts, args.smoke_delay)
        log.info("deployed %s version %s (image %s) at %s", args.function, version, args.image_tag, endpoint)
        return endpoint

    previous = current["FunctionVersion"]
    if previous == version:
        log.info("alias %s already on version %s", args.alias, version)
        if (current.get("RoutingConfig") or {}).get("AdditionalVersionWeights"):
            set_alias(lam, args.function, args.alias, version)  # a tested version: stray weights go
            log.info("alias %s weighted routing cleared", args.alias)
        endpoint = ensure_http_api(apigw, lam, api, args.function, args.alias, current["AliasArn"])
        smoke_test(probe_for(args.alias, endpoint), args.smoke_attempts, args.smoke_delay)
        return endpoint

    # 2. The API is made right while `live` still serves the previous version: an error here moves no traffic.
    endpoint = ensure_http_api(apigw, lam, api, args.function, args.alias, current["AliasArn"])
    alarms = ensure_canary_alarms(cw, args.function, args.alias, version, args.canary) if args.canary.percent else []

    # 3. From the first alias change on, every failure (AWS error, alarm, smoke test, cancel) rolls back.
    try:
        if args.canary.percent:
            set_alias(lam, args.function, args.alias, previous, canary=(version, args.canary.percent / 100))
            log.info(
                "canary: alias %s -> version %s, %s %% to version %s for %s min",
                args.alias,
                previous,
                args.canary.percent,
                version,
                args.canary.minutes,
            )
            watch_canary(cw, alarms, args.canary, probe_for(args.alias, endpoint), version)
        set_alias(lam, args.function, args.alias, version)
        log.info("promoted: alias %s -> version %s (was %s)", args.alias, version, previous)
        smoke_test(probe_for(args.alias, endpoint), args.smoke_attempts, args.smoke_delay)
    except BaseException as exc:
        rollback(lam, args.function, args.alias, previous, version)
        if isinstance(exc, KeyboardInterrupt):
            raise DeployError(f"deploy interrupted ({exc}); rolled back") from exc
        raise
    log.info("deployed %s version %s (image %s) at %s", args.function, version, args.image_tag, endpoint)
    return endpoint


def rollback(lam, function: str, alias: str, previous: str, failed: str) -> None:
    try:
        set_alias(lam, function, alias, previous)
    except (ClientError, BotoCoreError) as exc:
        log.error(
            "ROLLBACK FAILED (%s): alias %s may still route to version %s; run `aws lambda update-alias "
            "--function-name %s --name %s --function-version %s --routing-config AdditionalVersionWeights={}`",
            exc,
            alias,
            failed,
            function,
            alias,
            previous,
        )
        return
    log.error("rolled back: alias %s -> version %s (version %s keeps no traffic)", alias, previous, failed)


def _concurrency(value: str) -> int | None:
    if value.lower() == "none":
        return None
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be >= 1 or 'none' (0 would stop the function)")
    return number


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--region", help="AWS region (default: AWS_REGION / AWS_DEFAULT_REGION)")
    sub = parser.add_subparsers(dest="command", required=True)

    repo = sub.add_parser("ensure-repo", help="create the ECR repository if missing; print its URI")
    repo.add_argument("--repository", required=True)
    repo.add_argument(
        "--keep-images",
        type=int,
        default=10,
        help="lifecycle policy: images kept (the rollback depth; default 10)",
    )

    exists = sub.add_parser(
        "image-exists",
        help="print the digest of a pushed tag (exit 0), or exit 3 when it is absent: tags are immutable, so "
        "a re-run of the same commit must skip the push",
    )
    exists.add_argument("--repository", required=True)
    exists.add_argument("--image-tag", required=True)

    dep = sub.add_parser("deploy", help="deploy an image tag to the function, alias and HTTP API")
    dep.add_argument("--repository", required=True, help="ECR repository holding the image")
    dep.add_argument("--image-tag", required=True, help="the tag pushed by the workflow (the commit SHA)")
    dep.add_argument("--function", required=True, help="Lambda function name")
    dep.add_argument("--role-arn", required=True, help="the function's execution role (docs/deploy.md)")
    dep.add_argument("--alias", default="live")
    dep.add_argument("--api-name", help="HTTP API name (default: the function name)")
    dep.add_argument(
        "--architecture",
        choices=["x86_64", "arm64"],
        default="x86_64",
        help="must match the image's platform (default x86_64)",
    )
    dep.add_argument("--memory", type=int, default=2048, help="MB; also scales the CPU share")
    dep.add_argument("--timeout", type=int, default=30, help="seconds (API Gateway stops waiting at 30)")
    dep.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="function environment")
    dep.add_argument(
        "--reserved-concurrency",
        type=_concurrency,
        default=10,
        metavar="N|none",
        help="cap on concurrent executions (default 10); 'none' shares the account pool",
    )
    dep.add_argument("--throttle-burst", type=int, default=20, help="API stage burst limit (default 20)")
    dep.add_argument("--throttle-rate", type=float, default=10.0, help="API stage requests/s (default 10)")
    dep.add_argument(
        "--auth",
        choices=["none", "iam", "jwt"],
        default="none",
        help="route authorization: none (public), iam (SigV4, AWS_IAM), jwt (JWT authorizer)",
    )
    dep.add_argument("--jwt-issuer", help="with --auth jwt: the token issuer URL")
    dep.add_argument("--jwt-audience", action="append", default=[], help="with --auth jwt: accepted audience")
    dep.add_argument(
        "--smoke-bearer",
        default=os.environ.get("DEPLOY_SMOKE_TOKEN"),
        help="with --auth jwt: a token for the public smoke test (default: $DEPLOY_SMOKE_TOKEN; prefer the "
        "environment, e.g. from a GitHub secret, to a flag that shows in process lists)",
    )
    dep.add_argument(
        "--canary-percent",
        type=float,
        default=10.0,
        help="share of traffic to the new version "
        "during the canary (default 10; 0 = promote straight after the version smoke test)",
    )
    dep.add_argument("--canary-minutes", type=float, default=10.0, help="canary duration (default 10)")
    dep.add_argument("--canary-poll", type=float, default=30.0, help="seconds between alarm checks (default 30)")
    dep.add_argument(
        "--canary-max-errors",
        type=int,
        default=0,
        help="alarm when the new version has more errors than this in a minute (default 0)",
    )
    dep.add_argument(
        "--canary-p99-ms",
        type=float,
        default=3000.0,
        help="alarm when the new version's p99 duration exceeds this (default 3000 ms)",
    )
    dep.add_argument("--wait-timeout", type=float, default=600.0, help="max seconds to wait for function states")
    dep.add_argument("--poll-interval", type=float, default=5.0, help="seconds between function state checks")
    dep.add_argument(
        "--smoke-url",
        help="smoke-test this base URL instead of the version and the API endpoint; "
        "{qualifier} in it is replaced by the version or alias under test",
    )
    dep.add_argument("--smoke-attempts", type=int, default=5)
    dep.add_argument("--smoke-delay", type=float, default=5.0, help="seconds between attempts")
    args = parser.parse_args(argv)
    if args.command == "deploy":
        bad_env = [pair for pair in args.env if "=" not in pair]
        if bad_env:
            parser.error(f"--env expects KEY=VALUE, got {bad_env[0]!r}")
        if not 0 <= args.canary_percent < 100:
            parser.error("--canary-percent must be in [0, 100)")
        if args.auth == "jwt" and not (args.jwt_issuer and args.jwt_audience):
            parser.error("--auth jwt needs --jwt-issuer and at least one --jwt-audience")
        if args.auth == "jwt" and not (args.smoke_bearer or args.smoke_url):
            parser.error("--auth jwt needs a token for the smoke test: set DEPLOY_SMOKE_TOKEN (or --smoke-bearer)")
        args.canary = Canary(
            args.canary_percent,
            args.canary_minutes,
            args.canary_poll,
            args.canary_max_errors,
            args.canary_p99_ms,
        )
    return args


def _one_line(exc: BaseException) -> str:
    # Response bodies quoted in messages may hold newlines; a failure stays one log line.
    return " ".join(str(exc).split())


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)  # the deploy steps; botocore stays at WARNING
    args = parse_args(argv)
    session = boto3.session.Session(region_name=args.region)
    if not session.region_name:
        log.error("no AWS region: set AWS_REGION (the workflow does) or pass --region")
        return 2
    previous_handler = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        if args.command == "ensure-repo":
            print(ensure_repository(session.client("ecr"), args.repository, args.keep_images))
        elif args.command == "image-exists":
            try:
                print(image_uri_by_digest(session.client("ecr"), args.repository, args.image_tag).split("@")[1])
            except DeployError as exc:
                log.info("%s", _one_line(exc))
                return 3
        else:
            print(deploy(args, session))
    except DeployError as exc:
        log.error("%s", _one_line(exc))
        return 1
    except (ClientError, BotoCoreError) as exc:
        log.error(
            "AWS call failed: %s (check the deploy role's permissions in deploy/iam/ and the region)",
            _one_line(exc),
        )
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
