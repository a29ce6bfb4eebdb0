"""Deploy the serving image to AWS Lambda behind an HTTP API: idempotent, smoke-tested, rolled back on failure.

    python scripts/deploy_lambda.py ensure-repo --repository cola-serving
        Create the ECR repository when missing and print its URI (the workflow pushes the image there).

    python scripts/deploy_lambda.py deploy --repository cola-serving --image-tag <sha> \\
        --function cola-serving --role-arn arn:aws:iam::<account>:role/cola-serving-lambda
        Point the function at the image digest behind <sha>, wait for the update, publish a version, move the
        `live` alias to it, make sure the HTTP API (integration, $default route and stage, invoke permission)
        exists, then smoke-test GET /ready and POST /predict. If the smoke test fails, the alias goes back to
        the version it pointed at before and the script exits non-zero.

Every step checks what exists first, so running it twice changes nothing the second time. Credentials and region
come from the usual AWS environment (the deploy workflow gets them through GitHub OIDC); AWS_ENDPOINT_URL points
boto3 at a local emulator in the tests. docs/deploy.md describes the whole flow.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import urllib.error
import urllib.request

import boto3
from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger("deploy")

SMOKE_SENTENCE = "The cat sat on the mat."
LABELS = ("acceptable", "unacceptable")  # app/bundle.py config.json labels; /predict answers with one of them


class DeployError(RuntimeError):
    """A deploy step failed; the message says what, where and how to fix it."""


def _error_code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


# --- ECR -------------------------------------------------------------------------------------------------


def ensure_repository(ecr, name: str) -> str:
    try:
        repo = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
        log.info("ECR repository %s exists", name)
    except ClientError as exc:
        if _error_code(exc) != "RepositoryNotFoundException":
            raise
        created = ecr.create_repository(repositoryName=name, imageScanningConfiguration={"scanOnPush": True})
        repo = created["repository"]
        log.info("ECR repository %s created", name)
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


def ensure_function(
    lam, name: str, image_uri: str, role_arn: str, memory: int, timeout: int, env: dict
) -> dict:
    """Create the function from the image, or update its code and configuration; wait until it is ready."""
    wanted = {"Role": role_arn, "MemorySize": memory, "Timeout": timeout, "Environment": {"Variables": env}}
    try:
        current = lam.get_function(FunctionName=name)
    except ClientError as exc:
        if _error_code(exc) != "ResourceNotFoundException":
            raise
        lam.create_function(FunctionName=name, PackageType="Image", Code={"ImageUri": image_uri}, **wanted)
        log.info("Lambda function %s created from %s", name, image_uri)
        lam.get_waiter("function_active_v2").wait(FunctionName=name)
        return lam.get_function_configuration(FunctionName=name)

    if current["Code"].get("ImageUri") != image_uri:
        lam.update_function_code(FunctionName=name, ImageUri=image_uri)
        log.info("Lambda function %s code -> %s", name, image_uri)
        lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    else:
        log.info("Lambda function %s already runs %s", name, image_uri)

    config = current["Configuration"]
    have = {
        "Role": config.get("Role"),
        "MemorySize": config.get("MemorySize"),
        "Timeout": config.get("Timeout"),
        "Environment": {"Variables": config.get("Environment", {}).get("Variables", {})},
    }
    if have != wanted:
        lam.update_function_configuration(FunctionName=name, **wanted)
        log.info("Lambda function %s configuration updated", name)
        lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    return lam.get_function_configuration(FunctionName=name)


def publish_version(lam, name: str, description: str) -> str:
    # Lambda returns the existing latest version when code and configuration are unchanged: idempotent.
    version = lam.publish_version(FunctionName=name, Description=description)["Version"]
    lam.get_waiter("published_version_active").wait(FunctionName=name, Qualifier=version)
    log.info("Lambda function %s version %s published (%s)", name, version, description)
    return version


def point_alias(lam, name: str, alias: str, version: str) -> tuple[str | None, str]:
    """Move (or create) the alias; return (previous version or None, alias ARN)."""
    try:
        current = lam.get_alias(FunctionName=name, Name=alias)
    except ClientError as exc:
        if _error_code(exc) != "ResourceNotFoundException":
            raise
        arn = lam.create_alias(FunctionName=name, Name=alias, FunctionVersion=version)["AliasArn"]
        log.info("alias %s created -> version %s", alias, version)
        return None, arn
    previous = current["FunctionVersion"]
    if previous == version:
        log.info("alias %s already on version %s", alias, version)
        return previous, current["AliasArn"]
    arn = lam.update_alias(FunctionName=name, Name=alias, FunctionVersion=version)["AliasArn"]
    log.info("alias %s -> version %s (was %s)", alias, version, previous)
    return previous, arn


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


def ensure_http_api(apigw, lam, api_name: str, function: str, alias: str, alias_arn: str) -> str:
    """HTTP API -> Lambda proxy integration on the alias, $default route and auto-deployed stage; returns its URL."""
    api = _find(_all_pages(apigw.get_apis), "Items", lambda a: a["Name"] == api_name)
    if api is None:
        api = apigw.create_api(Name=api_name, ProtocolType="HTTP")
        log.info("HTTP API %s created (%s)", api_name, api["ApiId"])
    else:
        log.info("HTTP API %s exists (%s)", api_name, api["ApiId"])
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
    if route is None:
        apigw.create_route(ApiId=api_id, RouteKey="$default", Target=target)
        log.info("route $default -> %s created", target)
    elif route.get("Target") != target:
        apigw.update_route(ApiId=api_id, RouteId=route["RouteId"], Target=target)
        log.info("route $default -> %s updated", target)

    stage = _find(_all_pages(apigw.get_stages, ApiId=api_id), "Items", lambda s: s["StageName"] == "$default")
    if stage is None:
        apigw.create_stage(ApiId=api_id, StageName="$default", AutoDeploy=True)
        log.info("stage $default (auto-deploy) created")

    ensure_invoke_permission(lam, function, alias, alias_arn, api_id)
    return api["ApiEndpoint"]


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


# --- smoke test and rollback -----------------------------------------------------------------------------


def _request(url: str, body: dict | None, timeout: float) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)


def _names_a_label(text: str) -> bool:
    return any(label in text for label in LABELS)


def smoke_test(base_url: str, attempts: int, delay: float, timeout: float = 30.0) -> None:
    """GET /ready then POST /predict with one sentence; a cold start gets `attempts` tries `delay` s apart."""
    base_url = base_url.rstrip("/")
    checks = [
        ("GET /ready", f"{base_url}/ready", None, lambda text: True),
        ("POST /predict", f"{base_url}/predict", {"text": SMOKE_SENTENCE}, _names_a_label),
    ]
    for name, url, body, looks_right in checks:
        for attempt in range(1, attempts + 1):
            status, text = _request(url, body, timeout)
            if status == 200 and looks_right(text):
                log.info("smoke %s: 200 %s", name, text[:200])
                break
            log.warning("smoke %s attempt %d/%d: status %s %s", name, attempt, attempts, status, text[:200])
            if attempt == attempts:
                raise DeployError(
                    f"smoke test {name} at {url} failed after {attempts} attempts: status {status} {text[:200]}"
                )
            time.sleep(delay)


def rollback(lam, function: str, alias: str, previous: str | None) -> None:
    if previous is None:
        log.error("no earlier version to roll back to: alias %s stays on the failed version", alias)
        return
    lam.update_alias(FunctionName=function, Name=alias, FunctionVersion=previous)
    log.error("rolled back: alias %s -> version %s", alias, previous)


# --- entry points ----------------------------------------------------------------------------------------


def deploy(args: argparse.Namespace, session: boto3.session.Session) -> str:
    ecr, lam, apigw = (session.client(s) for s in ("ecr", "lambda", "apigatewayv2"))
    image_uri = image_uri_by_digest(ecr, args.repository, args.image_tag)
    env = dict(pair.split("=", 1) for pair in args.env)
    ensure_function(lam, args.function, image_uri, args.role_arn, args.memory, args.timeout, env)
    version = publish_version(lam, args.function, description=f"image {args.image_tag}")
    previous, alias_arn = point_alias(lam, args.function, args.alias, version)
    endpoint = ensure_http_api(
        apigw, lam, args.api_name or args.function, args.function, args.alias, alias_arn
    )
    log.info("endpoint %s", endpoint)
    try:
        smoke_test(args.smoke_url or endpoint, args.smoke_attempts, args.smoke_delay)
    except DeployError:
        if previous != version:
            rollback(lam, args.function, args.alias, previous)
        raise
    log.info("deployed %s version %s (image %s) at %s", args.function, version, args.image_tag, endpoint)
    return endpoint


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--region", help="AWS region (default: AWS_REGION / AWS_DEFAULT_REGION)")
    sub = parser.add_subparsers(dest="command", required=True)

    repo = sub.add_parser("ensure-repo", help="create the ECR repository if missing; print its URI")
    repo.add_argument("--repository", required=True)

    dep = sub.add_parser("deploy", help="deploy an image tag to the function, alias and HTTP API")
    dep.add_argument("--repository", required=True, help="ECR repository holding the image")
    dep.add_argument("--image-tag", required=True, help="the tag pushed by the workflow (the commit SHA)")
    dep.add_argument("--function", required=True, help="Lambda function name")
    dep.add_argument("--role-arn", required=True, help="the function's execution role (docs/deploy.md)")
    dep.add_argument("--alias", default="live")
    dep.add_argument("--api-name", help="HTTP API name (default: the function name)")
    dep.add_argument("--memory", type=int, default=2048, help="MB; also scales the CPU share")
    dep.add_argument("--timeout", type=int, default=30, help="seconds (API Gateway stops waiting at 30)")
    dep.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="function environment")
    dep.add_argument("--smoke-url", help="smoke-test this base URL instead of the API endpoint")
    dep.add_argument("--smoke-attempts", type=int, default=5)
    dep.add_argument("--smoke-delay", type=float, default=5.0, help="seconds between attempts")
    args = parser.parse_args(argv)
    bad_env = [pair for pair in getattr(args, "env", []) if "=" not in pair]
    if bad_env:
        parser.error(f"--env expects KEY=VALUE, got {bad_env[0]!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)  # the deploy steps; botocore stays at WARNING
    args = parse_args(argv)
    session = boto3.session.Session(region_name=args.region)
    if not session.region_name:
        log.error("no AWS region: set AWS_REGION (the workflow does) or pass --region")
        return 2
    try:
        if args.command == "ensure-repo":
            print(ensure_repository(session.client("ecr"), args.repository))
        else:
            print(deploy(args, session))
    except DeployError as exc:
        log.error("%s", exc)
        return 1
    except (ClientError, BotoCoreError) as exc:
        log.error(
            "AWS call failed: %s (check the deploy role's permissions in deploy/iam/ and the region)", exc
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
