"""The PreTraffic hook (deploy/hooks/pre_traffic.py) decides Succeeded/Failed from real answers of the version
being deployed, and reports it to CodeDeploy.

What is real here and what is not, and why:
- The new version: the real app (app/lambda_handler.handler on the tests' tiny bundle), invoked through real boto3
  Lambda `Invoke` HTTP calls to a loopback endpoint that speaks Lambda's Invoke API (status, X-Amz-Function-Error,
  payload). moto can run a Lambda function only inside a Docker container (its `invoke` starts one per call), and
  there is no Docker engine here; `sam local start-lambda` on the real image is the container tier's job
  (tests/serving/test_sam_local.py).
- CodeDeploy: moto 5.2.1 implements applications, deployment groups and deployments, but not
  PutLifecycleEventHookExecutionStatus (the only CodeDeploy call the hook makes). So that one call goes through
  botocore's Stubber, which still checks the request against CodeDeploy's real API model (parameter names, types,
  the status enum) and lets the test assert what the hook reported.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

import pytest
from botocore.stub import ANY, Stubber

from tests.aws.awsenv import DUMMY_AWS_ENV, REPO_ROOT

HOOK_PATH = REPO_ROOT / "deploy" / "hooks" / "pre_traffic.py"
NEW_VERSION = "arn:aws:lambda:us-east-1:123456789012:function:cola-serving:7"
EVENT = {"DeploymentId": "d-ABCDEF123", "LifecycleEventHookExecutionId": "eyJ0ZXN0IjoiaG9vayJ9"}


def load_hook():
    spec = importlib.util.spec_from_file_location("pre_traffic_hook", HOOK_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class InvokeEndpoint:
    """Lambda's Invoke API (POST /2015-03-31/functions/{name}/invocations) on 127.0.0.1, answered by `function`.
    A function that raises gets Lambda's answer to an unhandled error: 200, X-Amz-Function-Error, errorMessage."""

    def __init__(self, function: Callable[[dict], object]):
        self.function, self.invoked = function, []
        # One execution environment: invocations run one at a time on one thread with its event loop (Mangum
        # runs the app on the thread's loop), as a Lambda instance runs them.
        self.runtime = ThreadPoolExecutor(1, initializer=lambda: asyncio.set_event_loop(asyncio.new_event_loop()))
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                name = unquote(self.path.split("/functions/", 1)[1].split("/invocations", 1)[0])
                endpoint.invoked.append(name)
                event = json.loads(self.rfile.read(int(self.headers["content-length"])))
                headers = {"content-type": "application/json"}
                try:
                    payload = endpoint.runtime.submit(endpoint.function, event).result()
                except Exception as exc:
                    payload = {"errorMessage": str(exc), "errorType": type(exc).__name__}
                    headers["X-Amz-Function-Error"] = "Unhandled"
                body = json.dumps(payload).encode()
                try:
                    self.send_response(200)
                    for key, value in {**headers, "content-length": str(len(body))}.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the hook gave up (its read timeout)
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.runtime.shutdown(wait=False)


@pytest.fixture(scope="module")
def app_handler(tiny_bundle):
    """The real Lambda entry point of the image, on the tests' tiny bundle (as tests/serving/test_lambda.py)."""
    from tests.serving.test_lambda import Context, fresh_lambda_handler

    with fresh_lambda_handler(tiny_bundle, "cola-serving") as module:
        yield lambda event: module.handler(event, Context())


@pytest.fixture
def run_hook(monkeypatch):
    """run_hook(function) -> (what the hook returned, the status it reported to CodeDeploy, the invoked names)."""
    endpoints = []
    for key, value in DUMMY_AWS_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("NEW_VERSION", NEW_VERSION)
    monkeypatch.setenv("INVOKE_TIMEOUT_S", "2")  # how long the hook waits for one answer (the hanging version)

    def run(function: Callable[[dict], object]) -> tuple[dict, str, list[str]]:
        endpoint = InvokeEndpoint(function)
        endpoints.append(endpoint)
        monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", endpoint.url)
        hook = load_hook()
        lambda_client, codedeploy = hook.clients()  # the hook's own clients: its timeout, no retries
        reported: list[str] = []
        codedeploy.meta.events.register(
            "provide-client-params.codedeploy.PutLifecycleEventHookExecutionStatus",
            lambda params, **_: reported.append(params["status"]),
        )
        with Stubber(codedeploy) as stub:
            stub.add_response(
                "put_lifecycle_event_hook_execution_status",
                {"lifecycleEventHookExecutionId": EVENT["LifecycleEventHookExecutionId"]},
                {
                    "deploymentId": EVENT["DeploymentId"],
                    "lifecycleEventHookExecutionId": EVENT["LifecycleEventHookExecutionId"],
                    "status": ANY,  # recorded above, asserted by each test
                },
            )
            monkeypatch.setattr(hook, "clients", lambda: (lambda_client, codedeploy))
            result = hook.handler(dict(EVENT))
            stub.assert_no_pending_responses()  # reported, exactly once
        assert reported == [result["status"]]
        return result, reported[0], endpoint.invoked

    yield run
    for endpoint in endpoints:
        endpoint.close()


def test_good_version_is_reported_succeeded(run_hook, app_handler):
    result, status, invoked = run_hook(app_handler)
    assert (status, result["problems"]) == ("Succeeded", [])
    assert invoked == [NEW_VERSION] * len(load_hook().CHECKS)  # the version being deployed, every check


def _answering(status: int, body: object, when: Callable[[dict], bool] = lambda e: True):
    """A version that answers (status, body) to the requests `when` picks, and like the real app otherwise."""

    def function_for(app_handler):
        def function(event: dict):
            if when(event):
                return {"statusCode": status, "headers": {"content-type": "application/json"}, "body": json.dumps(body)}
            return app_handler(event)

        return function

    return function_for


def _is_list(event: dict) -> bool:
    return event.get("body", "").startswith('{"text": [')


def _is_empty(event: dict) -> bool:
    return event.get("body") == '{"text": ""}'


ONE = {"predictions": [{"label": "acceptable", "confidence": 0.9}]}
FAULTS = {
    "5xx on every request": _answering(500, {"error": "internal", "message": "boom"}),
    "503 on a list": _answering(503, {"error": "draining", "message": "later"}, _is_list),
    "one prediction for a list": _answering(200, ONE, _is_list),
    "old contract body": _answering(200, {"label": "acceptable", "score": 0.9}),
    "empty text accepted": _answering(200, ONE, _is_empty),
    "422 without a message": _answering(422, {"detail": "bad"}, _is_empty),
}


@pytest.mark.parametrize("fault", FAULTS, ids=list(FAULTS))
def test_wrong_answers_are_reported_failed(run_hook, app_handler, fault):
    result, status, _ = run_hook(FAULTS[fault](app_handler))
    assert status == "Failed" and len(result["problems"]) == 1


def test_function_error_is_reported_failed(run_hook):
    def crashes(event):
        raise RuntimeError("bundle failed its sha256 check")

    result, status, invoked = run_hook(crashes)
    assert status == "Failed" and len(invoked) == 1  # stops at the first problem
    (problem,) = result["problems"]
    assert "function error (Unhandled)" in problem and "sha256" in problem


def test_not_an_http_response_is_reported_failed(run_hook):
    result, status, _ = run_hook(lambda event: {"predictions": []})  # a direct-invocation answer, no statusCode
    assert status == "Failed" and "not an HTTP API response" in result["problems"][0]


def test_a_version_that_does_not_answer_is_reported_failed(run_hook):
    """No timing is asserted: the version answers only after the hook has given up (its read timeout)."""
    answered = threading.Event()
    try:
        result, status, invoked = run_hook(lambda event: answered.wait())
    finally:
        answered.set()
    assert status == "Failed" and len(invoked) == 1
    assert "timeout" in result["problems"][0].lower()


def test_missing_new_version_is_reported_failed(run_hook, app_handler, monkeypatch):
    monkeypatch.setenv("NEW_VERSION", "")
    result, status, invoked = run_hook(app_handler)
    assert status == "Failed" and invoked == [] and "NEW_VERSION" in result["problems"][0]
