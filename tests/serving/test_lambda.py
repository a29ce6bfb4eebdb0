"""The Lambda handler: API Gateway REST v1, HTTP API v2 and Function URL events (shapes from AWS's
documentation), direct invocation, EMF records; and the real awslambdaric runtime client on the host."""

from __future__ import annotations

import contextlib
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cola.paths import ROOT
from runtime.predictor import BundlePredictor
from tests.serving.conftest import serve_env
from tests.serving.labels import assert_labels_follow_the_threshold
from tests.serving.lambda_runtime import LambdaRuntimeAPI

EVENTS = Path(__file__).with_name("events")


def load_event(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


class Context:
    """The few LambdaContext attributes the app reads; only the Lambda runtime builds a real one
    (the awslambdaric test below and the container tier use the real object)."""

    aws_request_id = "11111111-2222-3333-4444-555555555555"
    function_name = "cola-classifier"
    remaining_ms = 60_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@contextlib.contextmanager
def fresh_lambda_handler(bundle: Path, function_name: str = "cola-classifier"):
    """app.lambda_handler imported anew on `bundle`: it loads the bundle at import, as a Lambda container does."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COLA_BUNDLE_DIR", str(bundle))
        mp.setenv("AWS_LAMBDA_FUNCTION_NAME", function_name)
        sys.modules.pop("app.lambda_handler", None)
        yield importlib.import_module("app.lambda_handler")
        sys.modules.pop("app.lambda_handler", None)


@pytest.fixture(scope="module")
def lambda_module(tiny_bundle):
    with fresh_lambda_handler(tiny_bundle) as module:
        yield module


@pytest.mark.parametrize("event_file,n", [("apigw_rest_v1.json", 2), ("http_api_v2.json", 1), ("function_url.json", 1)])
def test_http_events(lambda_module, event_file, n):
    response = lambda_module.handler(load_event(event_file), Context())
    assert response["statusCode"] == 200
    body = json.loads(response["body"])
    assert len(body["predictions"]) == n and body["model_version"] == lambda_module.predictor.version
    headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
    assert headers["x-request-id"] == Context.aws_request_id  # the Lambda request id follows the logs


def test_http_event_with_bad_input_is_a_4xx(lambda_module):
    event = load_event("function_url.json") | {"body": '{"text": ""}', "isBase64Encoded": False}
    response = lambda_module.handler(event, Context())
    assert response["statusCode"] == 422 and json.loads(response["body"])["error"] == "empty_text"


def test_a_request_the_function_cannot_finish_in_time_is_a_504_not_a_timeout(lambda_module):
    context = Context()
    context.remaining_ms = 200  # less than the margin the app keeps to answer before Lambda kills it
    response = lambda_module.handler(load_event("http_api_v2.json"), context)
    assert response["statusCode"] == 504 and json.loads(response["body"])["error"] == "deadline_exceeded"
    assert lambda_module.handler({"sentence": "The cat sat."}, context)["statusCode"] == 504


def test_direct_invocation_like_the_original_project(lambda_module):
    body = lambda_module.handler({"sentence": "The cat sat on the mat."}, Context())
    assert_labels_follow_the_threshold(lambda_module.predictor, body["predictions"])
    many = lambda_module.handler({"text": ["One.", "Two."]}, Context())
    assert len(many["predictions"]) == 2
    assert_labels_follow_the_threshold(lambda_module.predictor, many["predictions"])


@pytest.mark.parametrize(
    "event, status, error",
    [
        ({"sentence": ""}, 422, "empty_text"),  # the right shape, a value the input policy refuses: as over HTTP
        ({"sentence": 5}, 422, "invalid_text"),
        ({"hello": "world"}, 400, "invalid_event"),  # not an event this function takes
        (["a list"], 400, "invalid_event"),
    ],
)
def test_bad_direct_invocations_are_answered_not_raised(lambda_module, event, status, error):
    answer = lambda_module.handler(event, Context())
    assert answer["statusCode"] == status and answer["error"] == error and answer["message"]


def test_emf_records_on_lambda(lambda_module, capsys):
    lambda_module.handler({"text": ["The cat sat.", "Sat the cat.", "A dog."]}, Context())
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    namespaces = {m["Namespace"] for r in records for m in r["_aws"]["CloudWatchMetrics"]}
    assert namespaces == {"ColaClassifier"}
    (latency,) = [r for r in records if "Latency" in r]
    assert len(latency["Confidence"]) == 3 and latency["Latency"] > 0
    counts = {r["Label"]: r["Predictions"] for r in records if "Predictions" in r}
    assert sum(counts.values()) == 3
    for record in records:  # every metric and dimension named in the directive is present in the record
        directive = record["_aws"]["CloudWatchMetrics"][0]
        assert all(m["Name"] in record for m in directive["Metrics"])
        assert all(d in record for d in directive["Dimensions"][0])


@pytest.mark.integration
def test_real_runtime_client_on_the_host(tiny_bundle):
    """awslambdaric (the runtime client AWS's base images use) drives app.lambda_handler.handler."""
    with LambdaRuntimeAPI() as runtime:
        env = serve_env(tiny_bundle, AWS_LAMBDA_RUNTIME_API=runtime.address, AWS_LAMBDA_FUNCTION_NAME="cola-classifier")
        process = subprocess.Popen(
            [sys.executable, "-m", "awslambdaric", "app.lambda_handler.handler"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            kind, direct = runtime.invoke({"sentence": "The cat sat on the mat."})
            assert kind == "response"
            assert_labels_follow_the_threshold(BundlePredictor(tiny_bundle), direct["predictions"])
            kind, http = runtime.invoke(load_event("apigw_rest_v1.json"))
            assert kind == "response" and http["statusCode"] == 200
            assert len(json.loads(http["body"])["predictions"]) == 2
            assert runtime.init_errors == []
        finally:
            process.kill()
            output = process.communicate(timeout=30)[0]
        assert '"event":"prediction"' in output and '"_aws"' in output
        # the init figures scripts/lambda_cold_start.py reports: logged once, before the first invocation
        (init,) = [json.loads(line) for line in output.splitlines() if '"event":"init"' in line]
        assert init["bundle_load_ms"] > 0 and init["app_ms"] > 0
        assert output.index('"event":"init"') < output.index('"event":"prediction"')


# ---- malformed events: every one answered with a 4xx in the HTTP response shape, none raised to the runtime ----

ISSUE_EVENTS = [
    {"httpMethod": "GET"},
    {"requestContext": {}},
    {"rawPath": "/predict"},
    {"routeKey": "$default"},
    {"version": "2.0", "requestContext": {"stage": "$default"}, "rawPath": "/predict"},  # requestContext without http
    load_event("apigw_rest_v1.json") | {"isBase64Encoded": True, "body": "not base64!"},
    load_event("http_api_v2.json") | {"isBase64Encoded": True, "body": "%%%="},
    load_event("function_url.json") | {"isBase64Encoded": True, "body": "YQ"},  # bad padding
    load_event("http_api_v2.json") | {"headers": None},
]


def assert_http_answer(response, allowed=range(200, 500)) -> None:
    assert isinstance(response, dict) and response["statusCode"] in allowed, response
    assert isinstance(response["body"], str) and isinstance(response.get("headers", {}), dict)
    if response["statusCode"] >= 400:
        assert json.loads(response["body"])["error"]


@pytest.mark.parametrize("event", ISSUE_EVENTS, ids=range(len(ISSUE_EVENTS)))
def test_malformed_events_from_the_issue_are_a_400(lambda_module, event):
    response = lambda_module.handler(event, Context())
    assert_http_answer(response, allowed=(400,))
    error = json.loads(response["body"])
    assert error["error"] == "invalid_event" and error["request_id"] == Context.aws_request_id


def mutations(event, path=()):
    """(description, mutated event): each field removed, set to null, and set to a value of another type."""
    for key, value in event.items() if isinstance(event, dict) else enumerate(event):
        where = "/".join(map(str, (*path, key)))
        wrong = [None, 12345, ["x"], {"x": 1}, "x"]
        for label, new in [("removed", REMOVED)] + [(f"= {w!r}", w) for w in wrong if type(w) is not type(value)]:
            yield f"{where} {label}", _replace(event, key, new)
        if isinstance(value, dict | list) and value:
            for label, sub in mutations(value, (*path, key)):
                yield label, _replace(event, key, sub, nested=True)


REMOVED = object()


def _replace(container, key, new, nested=False):
    copy = json.loads(json.dumps(container))
    if new is REMOVED:
        del copy[key]
    else:
        copy[key] = new if nested or not isinstance(new, dict | list) else json.loads(json.dumps(new))
    return copy


@pytest.mark.parametrize("event_file", ["apigw_rest_v1.json", "http_api_v2.json", "function_url.json"])
def test_every_field_of_sam_events_mutated_is_answered(lambda_module, event_file, capsys):
    """The SAM CLI's generated events (tests/serving/events/), each field removed / null / of another type, at
    every depth: the handler answers each with an HTTP response (2xx-4xx), never an exception or a 5xx."""
    failures = []
    cases = list(mutations(load_event(event_file)))
    for label, event in cases:
        try:
            assert_http_answer(lambda_module.handler(event, Context()))
        except Exception as exc:  # collect them all: one report names every field that breaks the handler
            failures.append(f"{label}: {type(exc).__name__}: {str(exc)[:200]}")
    capsys.readouterr()
    assert len(cases) > 100 and failures == []


def test_a_clients_request_id_is_logged_beside_the_lambda_one_not_instead(lambda_module, log_lines):
    event = load_event("function_url.json")
    event["headers"]["x-request-id"] = "client-chosen-1"
    response = lambda_module.handler(event, Context())
    assert response["statusCode"] == 200 and response["headers"]["x-request-id"] == "client-chosen-1"
    lines = [(r["request_id"], r["client_request_id"]) for r in log_lines("request")]
    assert lines == [(Context.aws_request_id, "client-chosen-1")]
    assert {r["request_id"] for r in log_lines("prediction")} == {Context.aws_request_id}
