"""AWS Lambda entry point: `app.lambda_handler.handler`.

The bundle is verified and loaded once per container, at init (module import), not per request.
Mangum answers API Gateway REST (v1) proxy events, HTTP API (v2) events and Function URL events with
the same FastAPI app as the container; a direct invocation `{"sentence": "..."}` (the original
project's contract; `{"text": ...}` also works) goes through the same app, so it gets the same input
policy, logs and metrics, and returns the /predict JSON body (or the error body with its status).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import time
from collections.abc import Mapping
from typing import Any

from mangum import Mangum
from mangum.protocols import HTTPCycle

from app.main import create_app, load_predictor
from app.middleware import SECURITY_HEADERS
from app.settings import Settings
from app.telemetry import emf_status_record, log_event, print_emf

_start = time.perf_counter()
settings = Settings.from_env()
predictor = load_predictor(settings)
_loaded = time.perf_counter()
asgi = Mangum(create_app(predictor, settings), lifespan="off")
# The init figures scripts/lambda_cold_start.py reports (the rest of a cold start: Python, imports, the first call)
log_event("init", bundle_load_ms=round((_loaded - _start) * 1000, 1),
          app_ms=round((time.perf_counter() - _loaded) * 1000, 1))  # fmt: skip
HTTP_KEYS = ("httpMethod", "requestContext", "routeKey", "rawPath")
_METHOD = re.compile(r"[A-Z]{1,16}")


def _as_http_event(payload: dict) -> dict:
    """A minimal Function URL (payload 2.0) event for a direct invocation."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/predict",
        "rawQueryString": "",
        "headers": {"content-type": "application/json"},
        "requestContext": {
            "http": {"method": "POST", "path": "/predict", "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1"}
        },
        "body": json.dumps(payload),
        "isBase64Encoded": False,
    }


def _answer(event: dict, context) -> dict:
    """The app's HTTP answer, counted per function version (a 5xx here is what the canary alarm watches)."""
    response = _http(event, context)
    if settings.on_lambda:
        version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        print_emf([emf_status_record(response["statusCode"], version, predictor.version)])
    return response


def _check_request(scope: Mapping[str, Any], body: bytes, event: dict) -> None:
    """What Mangum built from the event must be an HTTP request the app can read; raise ValueError otherwise.
    Mangum copies event fields into the ASGI scope with few checks, so a wrong type there would fail later,
    inside the app, as a 500."""
    if not isinstance(scope.get("method"), str) or not _METHOD.fullmatch(scope["method"]):
        raise ValueError("the HTTP method is missing or not a method name")
    if not isinstance(scope.get("path"), str) or not scope["path"].startswith("/"):
        raise ValueError("the path is missing or does not start with /")
    headers = scope.get("headers")
    if not isinstance(headers, list) or not all(
        len(pair) == 2 and all(isinstance(part, bytes) for part in pair) for pair in headers
    ):
        raise ValueError("the headers must be an object of strings")
    if not isinstance(scope.get("query_string"), bytes) or not isinstance(body, bytes):
        raise ValueError("the query string and the body must be strings")
    raw = event.get("body")
    if event.get("isBase64Encoded") and raw:  # Mangum's decoding skips invalid characters instead of refusing
        try:
            base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise ValueError("isBase64Encoded is true but the body is not valid base64") from None


def _bad_event(problem: str, context) -> dict:
    """A 400 in the shape every HTTP event type takes (REST v1, HTTP API v2, Function URL)."""
    request_id = getattr(context, "aws_request_id", None)
    log_event("invalid_event", request_id=request_id, message=problem)
    message = f"the event is not a valid API Gateway / Function URL request: {problem}"
    return {
        "statusCode": 400,
        "headers": {"content-type": "application/json", "x-request-id": request_id or "", **SECURITY_HEADERS},
        "body": json.dumps({"error": "invalid_event", "message": message, "request_id": request_id}),
        "isBase64Encoded": False,
    }


def _http(event: dict, context) -> dict:
    """Mangum's own steps (Mangum.__call__, lifespan off), with every failure to read the event answered as a
    400 in the event's response shape instead of raised to the runtime (which would send a stackTrace)."""
    try:
        request = asgi.infer(event, context)
        scope, body = request.scope, request.body
        _check_request(scope, body, event)
    except Exception as exc:
        return _bad_event(_describe(exc), context)
    response = HTTPCycle(scope, body)(asgi.app)
    try:
        return request(response)
    except Exception as exc:  # shaping the answer reads the event again (version, multiValueHeaders)
        return _bad_event(_describe(exc), context)


def _describe(exc: Exception) -> str:
    if isinstance(exc, ValueError):
        return str(exc)
    if isinstance(exc, KeyError):
        return f"the field {exc} is missing"
    if isinstance(exc, RuntimeError):
        return "no requestContext with a version, httpMethod/resource or http field"
    return f"a field has the wrong type ({type(exc).__name__})"


def handler(event, context):
    if isinstance(event, dict) and any(key in event for key in HTTP_KEYS):
        return _answer(event, context)
    if not isinstance(event, dict) or not ({"sentence", "text"} & event.keys()):
        return {
            "statusCode": 400,
            "error": "invalid_event",
            "message": 'expected an API Gateway / Function URL event or a direct invocation {"sentence": "..."}',
        }
    payload = {"text": event["sentence"] if "sentence" in event else event["text"]}
    try:
        http_event = _as_http_event(payload)
    except ValueError:  # json.dumps: an integer over Python's 4,300-digit conversion limit
        return {"statusCode": 400, "error": "invalid_event", "message": "a number in the event has too many digits"}
    response = _answer(http_event, context)
    body = json.loads(response["body"])
    return body if response["statusCode"] == 200 else {"statusCode": response["statusCode"], **body}
