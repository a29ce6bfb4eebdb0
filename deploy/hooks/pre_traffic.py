"""CodeDeploy PreTraffic hook of the serving stack (deploy/template.yaml): before the `live` alias sends any traffic
to the new version, send that version the requests users send, as API Gateway (HTTP API, payload 2.0) events, and
report Succeeded or Failed to CodeDeploy. Failed makes CodeDeploy stop the deployment and keep (or roll back) the
alias on the old version, on AWS's side: nothing here depends on the deploying runner.

Runs on Lambda's python3.11 runtime with only the standard library and the runtime's boto3.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config

LOGGER = logging.getLogger("cola.pre_traffic")
LOGGER.setLevel(logging.INFO)

# Each check: (name, HTTP method, path, query, body, what a correct answer looks like)
Check = tuple[str, str, str, str, Any, Callable[[int, Any], str | None]]


def _predictions(count: int) -> Callable[[int, Any], str | None]:
    def judge(status: int, body: Any) -> str | None:
        if status != 200:
            return f"expected 200, got {status}: {str(body)[:300]}"
        predictions = body.get("predictions") if isinstance(body, dict) else None
        if not isinstance(predictions, list) or len(predictions) != count:
            return f"expected {count} prediction(s), got {str(body)[:300]}"
        for p in predictions:
            if not (isinstance(p, dict) and isinstance(p.get("label"), str) and isinstance(p.get("confidence"), float)):
                return f"a prediction without label/confidence: {str(p)[:300]}"
        return None

    return judge


def _refused(status: int, body: Any) -> str | None:
    if status != 422:
        return f"an empty text must get 422, got {status}: {str(body)[:300]}"
    if not (isinstance(body, dict) and body.get("error") and body.get("message")):
        return f"the 422 must say what is wrong (error, message), got {str(body)[:300]}"
    return None


def _ready(status: int, body: Any) -> str | None:
    ok = status == 200 and isinstance(body, dict) and body.get("status") == "ready"
    return None if ok else f"expected 200 ready, got {status}: {str(body)[:300]}"


CHECKS: list[Check] = [
    ("ready", "GET", "/ready", "", None, _ready),
    ("one sentence", "POST", "/predict", "", {"text": "The cat sat on the mat."}, _predictions(1)),
    ("a list", "POST", "/predict", "", {"text": ["The cat sat on the mat.", "Sat mat the on cat."]}, _predictions(2)),
    ("query string", "GET", "/predict", "text=The%20dog%20barked.", None, _predictions(1)),
    ("empty text", "POST", "/predict", "", {"text": ""}, _refused),
]


def http_api_event(method: str, path: str, query: str = "", body: Any = None) -> dict:
    """An API Gateway HTTP API (payload format 2.0) event, the shape the live alias receives from the API."""
    now = time.time()
    headers = {"content-type": "application/json", "user-agent": "cola-pre-traffic-hook"}
    event = {
        "version": "2.0",
        "routeKey": f"{method} {path}",
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "pre-traffic-hook",
            "domainName": "pre-traffic-hook.invalid",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": headers["user-agent"],
            },
            "requestId": f"pre-traffic-{int(now * 1000)}",
            "routeKey": f"{method} {path}",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": False,
    }
    if query:
        event["queryStringParameters"] = dict(p.split("=", 1) for p in query.split("&"))  # no repeated keys here
    if body is not None:
        event["body"] = json.dumps(body)
    return event


def _invoke(lambda_client, function: str, event: dict) -> tuple[int, Any]:
    """Invoke `function` (a version ARN) synchronously; return (HTTP status, parsed JSON body) of its answer."""
    answer = lambda_client.invoke(FunctionName=function, InvocationType="RequestResponse", Payload=json.dumps(event))
    payload = answer["Payload"].read()
    if answer.get("FunctionError"):
        raise RuntimeError(f"function error ({answer['FunctionError']}): {payload[:300]!r}")
    response = json.loads(payload)
    if not isinstance(response, dict) or not isinstance(response.get("statusCode"), int):
        raise RuntimeError(f"not an HTTP API response: {payload[:300]!r}")
    raw = response.get("body") or ""
    if response.get("isBase64Encoded"):
        raw = base64.b64decode(raw).decode()
    try:
        return response["statusCode"], json.loads(raw) if raw else None
    except ValueError:
        return response["statusCode"], raw


def run_checks(lambda_client, function: str) -> list[str]:
    """The checks against `function` in order, up to the first problem; the problems (empty: all answered right).
    Stopping there keeps a broken or hanging version from costing one timeout per remaining check."""
    problems: list[str] = []
    for name, method, path, query, body, judge in CHECKS:
        try:
            status, answer = _invoke(lambda_client, function, http_api_event(method, path, query, body))
            problem = judge(status, answer)
        except Exception as exc:  # a timeout, a function error, an unreadable answer: all mean "do not shift"
            problem = f"{type(exc).__name__}: {exc}"
        LOGGER.info(json.dumps({"event": "pre_traffic_check", "check": name, "ok": problem is None,
                                "problem": problem}))  # fmt: skip
        if problem:
            problems.append(f"{name} ({method} {path}): {problem}")
            break
    return problems


def clients() -> tuple[Any, Any]:
    # No retries and a bounded wait: a version that does not answer in time fails the check instead of the
    # hook hanging until CodeDeploy's one-hour hook timeout.
    timeout = float(os.environ.get("INVOKE_TIMEOUT_S", "120"))
    config = Config(read_timeout=timeout, connect_timeout=10, retries={"total_max_attempts": 1, "mode": "standard"})
    return boto3.client("lambda", config=config), boto3.client("codedeploy")


def handler(event: dict, context: Any = None) -> dict:
    """CodeDeploy's lifecycle event {DeploymentId, LifecycleEventHookExecutionId} -> Succeeded or Failed."""
    lambda_client, codedeploy = clients()
    new_version = os.environ.get("NEW_VERSION", "")
    if not new_version:
        problems = ["NEW_VERSION is not set (deploy/template.yaml sets it to the version being deployed)"]
    else:
        problems = run_checks(lambda_client, new_version)
    status = "Failed" if problems else "Succeeded"
    LOGGER.info(json.dumps({"event": "pre_traffic_result", "version": new_version, "status": status,
                            "problems": problems}))  # fmt: skip
    codedeploy.put_lifecycle_event_hook_execution_status(
        deploymentId=event["DeploymentId"],
        lifecycleEventHookExecutionId=event["LifecycleEventHookExecutionId"],
        status=status,
    )
    return {"status": status, "problems": problems}
