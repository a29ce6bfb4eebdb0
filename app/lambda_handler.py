"""AWS Lambda entry point: `app.lambda_handler.handler`.

The bundle is verified and loaded once per container, at init (module import), not per request.
Mangum answers API Gateway REST (v1) proxy events, HTTP API (v2) events and Function URL events with
the same FastAPI app as the container; a direct invocation `{"sentence": "..."}` (the original
project's contract; `{"text": ...}` also works) goes through the same app, so it gets the same input
policy, logs and metrics, and returns the /predict JSON body (or the error body with its status).
"""

from __future__ import annotations

import json
import os

from mangum import Mangum

from app.main import create_app, load_predictor
from app.settings import Settings
from app.telemetry import emf_status_record, print_emf

settings = Settings.from_env()
predictor = load_predictor(settings)
asgi = Mangum(create_app(predictor, settings), lifespan="off")
HTTP_KEYS = ("httpMethod", "requestContext", "routeKey", "rawPath")


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
    response = asgi(event, context)
    if settings.on_lambda:
        version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        print_emf([emf_status_record(response["statusCode"], version, predictor.version)])
    return response


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
    response = _answer(_as_http_event(payload), context)
    body = json.loads(response["body"])
    return body if response["statusCode"] == 200 else {"statusCode": response["statusCode"], **body}
