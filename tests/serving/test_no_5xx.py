"""Nothing an anonymous client sends ends in a 5xx: the HTTP app and the Lambda handler under arbitrary JSON values,
raw bytes, query strings and headers (hypothesis, seeded by the `repro` profile, bounded), and a client that leaves
is a 499, not a 500, on a real uvicorn server over a real TCP connection."""

from __future__ import annotations

import base64
import json
import re
import socket
import time
import urllib.request
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.main import create_app
from tests.serving.test_lambda import Context, lambda_module, load_event  # noqa: F401 (a fixture)

BIG_INT = "9" * 5000  # over Python's 4,300-digit limit: json.loads raises a plain ValueError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)
json_texts = st.one_of(
    json_values.map(json.dumps),  # NaN/Infinity included: json.dumps writes them, they are not JSON
    json_values.map(lambda value: json.dumps({"text": value})),
    st.integers(4301, 6000).map(lambda digits: '{"text": ' + "7" * digits + "}"),
    st.text(max_size=5).map(lambda key: f'{{"text": "a", "{key}": 1, "{key}": 2}}'),
)
bodies = json_texts.map(str.encode) | st.binary(max_size=200)
content_types = st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain", "", "a/b;;="])
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=80)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def roomy(predictor, settings):
    """The app with room in the body limit for a 6,000-digit number (the test settings allow 4 KB)."""
    with TestClient(create_app(predictor, replace(settings, max_body_bytes=65536))) as test_client:
        yield test_client


def assert_not_5xx(status: int, body: bytes | str) -> None:
    assert status < 500, body
    if status >= 400:
        assert json.loads(body)["error"]


def test_an_integer_of_5000_digits_is_a_400_not_a_500(roomy, log_lines):
    response = roomy.post(
        "/predict", content=b'{"text": ' + BIG_INT.encode() + b"}", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_json"
    assert "too many digits" in response.json()["message"]
    assert log_lines("error") == []  # no traceback for bad input


@pytest.mark.parametrize(
    "body,fragment",
    [(b'{"text": "a", "text": "b"}', "'text' appears twice"), (b'{"text": [NaN]}', "NaN is not JSON")],
)
def test_duplicate_keys_and_non_json_constants_are_refused(client, body, fragment):
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"] == "invalid_json"
    assert fragment in response.json()["message"]


@pytest.mark.fuzz
@FAST
@given(body=bodies, content_type=content_types, request_id=header_text)
def test_no_body_or_header_gives_a_5xx_over_http(roomy, body, content_type, request_id):
    headers = {"x-request-id": request_id.encode("latin-1")} | ({"content-type": content_type} if content_type else {})
    response = roomy.post("/predict", content=body, headers=headers)
    assert_not_5xx(response.status_code, response.content)
    assert response.headers["x-request-id"]


@pytest.mark.fuzz
@FAST
@given(text=st.text(max_size=40), raw=st.binary(max_size=40))
def test_no_query_gives_a_5xx_over_http(client, text, raw):
    assert_not_5xx(*(lambda r: (r.status_code, r.content))(client.get("/predict", params={"text": text})))
    quoted = "".join(f"%{b:02x}" for b in raw)  # any bytes, percent-encoded
    response = client.get(f"/predict?text={quoted}&{quoted}={quoted}")
    assert_not_5xx(response.status_code, response.content)


@pytest.mark.fuzz
@FAST
@given(body=bodies, value=json_values, as_base64=st.booleans())
def test_no_event_body_or_direct_invocation_gives_a_5xx_on_lambda(lambda_module, body, value, as_base64):  # noqa: F811
    event = load_event("function_url.json")  # a POST /predict
    event["body"] = base64.b64encode(body).decode() if as_base64 else body.decode("utf-8", "replace")
    event["isBase64Encoded"] = as_base64
    response = lambda_module.handler(event, Context())
    assert_not_5xx(response["statusCode"], response["body"])
    for direct in ({"text": value}, {"sentence": value}):
        answer = lambda_module.handler(direct, Context())
        assert "predictions" in answer or 400 <= answer["statusCode"] < 500, answer


def test_a_huge_integer_in_a_direct_invocation_is_a_400(lambda_module):  # noqa: F811
    answer = lambda_module.handler({"sentence": 10**5000}, Context())
    assert answer["statusCode"] == 400 and answer["error"] == "invalid_event"


def metric_lines(url: str) -> list[str]:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        return [line for line in response.read().decode().splitlines() if line.startswith("cola_requests_total{")]


def count(lines: list[str], status: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if f'status="{status}"' in line)


@pytest.mark.slow
def test_a_client_that_leaves_mid_body_is_a_499_not_a_500(live_server):
    """A real TCP client sends headers and part of a body, then closes the socket: uvicorn delivers
    http.disconnect, and the request is counted (and so alerted on) as 499."""
    before = count(metric_lines(live_server), "499")
    host, port = re.match(r"http://([\d.]+):(\d+)", live_server).groups()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            b'{"text": "The ca'
        )
    deadline = time.monotonic() + 30  # a hang guard: the count changes as soon as the server sees the close
    while (lines := metric_lines(live_server)) and count(lines, "499") == before:
        assert time.monotonic() < deadline, lines
        time.sleep(0.05)
    assert count(lines, "499") == before + 1
    assert count(lines, "500") == 0, lines
