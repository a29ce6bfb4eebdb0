"""The HTTP contract of the app, in-process (FastAPI TestClient on the real app and a real tiny bundle)."""

from __future__ import annotations

import json

import pytest

from contract.logs import PREDICTION_FIELDS, TEXT_FIELD
from tests.serving.labels import assert_labels_follow_the_threshold


def metric(client, name: str) -> float:
    """Sum of all samples of one Prometheus series name in /metrics."""
    lines = client.get("/metrics").text.splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.split("{")[0].split(" ")[0] == name)


def test_post_one_sentence(client, predictor):
    response = client.post("/predict", json={"text": "The cat sat on the mat."})
    assert response.status_code == 200
    body = response.json()
    assert body["model_version"] == predictor.version
    (prediction,) = body["predictions"]
    assert_labels_follow_the_threshold(predictor, body["predictions"])
    assert set(prediction["probabilities"]) == {"acceptable", "unacceptable"}
    assert sum(prediction["probabilities"].values()) == pytest.approx(1, abs=1e-5)
    assert prediction["confidence"] == prediction["probabilities"][prediction["label"]]


def test_the_label_follows_the_bundles_decision_threshold(tiny_bundle, settings, tmp_path):
    """A threshold above every probability: each sentence is "unacceptable", with both probabilities as before."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from runtime.predictor import BundlePredictor
    from tests.serving.test_predictor import bundle_with_threshold

    texts = ["The cat sat on the mat.", "Mat the on sat cat.", "Yes."]
    strict = bundle_with_threshold(tiny_bundle, tmp_path / "strict", 0.999)
    with TestClient(create_app(strict, settings)) as test_client:
        body = test_client.post("/predict", json={"text": texts}).json()
    expected = BundlePredictor(tiny_bundle).predict_proba(texts)
    for prediction, row in zip(body["predictions"], expected, strict=True):
        assert prediction["label"] == "unacceptable"
        assert prediction["probabilities"]["acceptable"] == pytest.approx(float(row[1]), abs=1e-6)
        assert prediction["confidence"] == prediction["probabilities"]["unacceptable"]


def test_post_list_is_one_model_call_in_order(client, predictor):
    texts = ["The cat sat.", "Sat cat the.", "Colorless green ideas sleep furiously."]
    calls_before = metric(client, "cola_inference_batch_size_count")
    body = client.post("/predict", json={"text": texts}).json()
    assert metric(client, "cola_inference_batch_size_count") == calls_before + 1
    assert metric(client, "cola_inference_batch_size_sum") >= 3
    expected = predictor.predict_proba(texts)
    for prediction, probs in zip(body["predictions"], expected, strict=True):
        assert prediction["probabilities"]["acceptable"] == pytest.approx(float(probs[1]), abs=1e-4)


def test_get_predict_matches_post(client):
    got = client.get("/predict", params={"text": "The cat sat on the mat."}).json()
    posted = client.post("/predict", json={"text": "The cat sat on the mat."}).json()
    assert got["predictions"][0]["label"] == posted["predictions"][0]["label"]
    assert got["predictions"][0]["confidence"] == pytest.approx(posted["predictions"][0]["confidence"], abs=1e-5)


def test_health_ready_page_docs(client, predictor):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {
        "status": "ready",
        "model_version": predictor.version,
        "variant": predictor.variant,
    }
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="sentences"' in page.text
    assert client.get("/docs").status_code == 200 and client.get("/redoc").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/predict", "/health", "/ready", "/metrics"} <= set(paths)


# (body bytes, content type, status, error code)
BAD_POSTS = [
    (b'{"text": ""}', "application/json", 422, "empty_text"),
    (b'{"text": "   \\n\\t"}', "application/json", 422, "empty_text"),
    (b'{"text": ["fine", " "]}', "application/json", 422, "empty_text"),
    (b'{"text": "\\u001d"}', "application/json", 422, "empty_text"),  # Python whitespace, not ECMA's \s
    (b'{"text": ["fine", "\\ufeff\\u3000"]}', "application/json", 422, "empty_text"),  # ECMA's \s, not Python's
    (json.dumps({"text": "a" * 201}).encode(), "application/json", 422, "text_too_long"),
    (json.dumps({"text": ["s"] * 9}).encode(), "application/json", 422, "too_many_sentences"),
    (b'{"text": []}', "application/json", 422, "invalid_text"),
    (b'{"text": 42}', "application/json", 422, "invalid_text"),
    (b'{"text": ["ok", null]}', "application/json", 422, "invalid_text"),
    (b'{"text": {"a": 1}}', "application/json", 422, "invalid_text"),
    (b'{"text": "\\ud800"}', "application/json", 422, "invalid_text"),
    (b'{"sentence": "hi"}', "application/json", 422, "invalid_body"),
    (b'{"text": "hi", "extra": 1}', "application/json", 422, "invalid_body"),
    (b'["hi"]', "application/json", 422, "invalid_body"),
    (b'{"text": "hi"', "application/json", 400, "invalid_json"),
    (b"", "application/json", 400, "invalid_json"),
    (b"[" * 1500 + b"]" * 1500, "application/json", 400, "invalid_json"),
    (b'{"text": "caf\xe9"}', "application/json", 400, "invalid_encoding"),
    (b"text=hello", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    (b'{"text": "hi"}', "text/plain", 415, "unsupported_media_type"),
]


@pytest.mark.parametrize(
    "body,content_type,status,code", BAD_POSTS, ids=[f"{i}-{c[3]}" for i, c in enumerate(BAD_POSTS)]
)
def test_bad_post_is_a_clear_4xx(client, body, content_type, status, code):
    response = client.post("/predict", content=body, headers={"content-type": content_type})
    assert response.status_code == status, response.text
    error = response.json()
    assert error["error"] == code
    assert error["message"] and error["request_id"]


@pytest.mark.parametrize(
    "params,fragment",
    [({}, "query.text"), ({"text": ""}, "query.text"), ({"text": "  "}, "query.text"), ({"text": "b" * 201}, "200")],
)
def test_bad_get_is_a_clear_422(client, params, fragment):
    response = client.get("/predict", params=params)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request" and fragment in response.json()["message"]


def test_oversized_body_is_413_with_or_without_content_length(client):
    big = json.dumps({"text": ["x" * 100] * 50}).encode()  # over the 4096-byte limit of the test settings
    assert client.post("/predict", content=big, headers={"content-type": "application/json"}).status_code == 413

    def chunks():  # no Content-Length: chunked transfer
        yield big[:1000]
        yield big[1000:]

    response = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["error"] == "body_too_large"


def test_invisible_but_not_whitespace_characters_are_classified(client):
    # zero-width space, NUL, a lone combining mark: content by the input policy, and the model copes with them
    response = client.post("/predict", json={"text": ["\u200b", "\u0000", "\u0301"]})
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 3


@pytest.mark.parametrize("content_type", [None, "application/evil+json", "text/plain;charset=utf-8", "json"])
def test_only_application_json_is_accepted(client, content_type):
    """A cross-site page can send a body without a CORS preflight only as text/plain, a form, or with no type:
    all refused, so a cross-site POST needs the preflight this API never grants."""
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/predict", content=b'{"text": "hi"}', headers=headers)
    assert response.status_code == 415 and response.json()["error"] == "unsupported_media_type"
    assert (
        client.post(
            "/predict", content=b'{"text": "hi"}', headers={"content-type": "Application/JSON; charset=utf-8"}
        ).status_code
        == 200
    )


def test_every_answer_has_the_security_headers(client):
    for response in (client.get("/health"), client.get("/nope"), client.post("/predict", json={"text": ""}),
                     client.get("/metrics"), client.get("/openapi.json")):  # fmt: skip
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert response.headers["x-request-id"]


def test_html_answers_have_a_csp_that_allows_only_their_own_code(client):
    import base64
    import hashlib
    import re

    page = client.get("/")
    policy = page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in policy
    (script,) = re.findall(r"<script>(.*?)</script>", page.text, flags=re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}';" in policy and "unsafe" not in policy and "default-src 'none'" in policy
    for path, asset in (("/docs", "swagger-ui-dist@5.35.0/"), ("/redoc", "redoc@2.5.4/")):
        docs = client.get(path)
        assert (
            docs.headers["x-frame-options"] == "DENY"
            and "frame-ancestors 'none'" in docs.headers["content-security-policy"]
        )
        tags = re.findall(r"<(?:script|link)[^>]*(?:src|href)=\"https://[^>]*>", docs.text)
        assert tags and all(asset in tag and 'integrity="sha384-' in tag and "crossorigin" in tag for tag in tags)
        assert "fonts.googleapis" not in docs.text


def test_unknown_route_and_method_are_json(client):
    assert client.get("/nope").json()["error"] == "not_found"
    assert client.delete("/predict").json()["error"] == "method_not_allowed"


def test_request_id_is_echoed_and_generated(client):
    assert client.get("/health", headers={"x-request-id": "abc-123"}).headers["x-request-id"] == "abc-123"
    generated = client.get("/health", headers={"x-request-id": "not ok!" * 20}).headers["x-request-id"]
    assert generated != "abc-123" and len(generated) == 32


def test_prediction_and_request_log_lines(client, log_lines, predictor):
    answer = client.post("/predict", json={"text": ["The cat sat.", "QQZX vvb ☃"]}, headers={"x-request-id": "req-1"})
    assert answer.headers["x-request-id"] == "req-1"  # the client's id, echoed
    (request,) = [r for r in log_lines("request") if r["client_request_id"] == "req-1"]
    assert request["request_id"] != "req-1" and len(request["request_id"]) == 32  # ours, not the client's
    predictions = log_lines("prediction")
    assert len(predictions) == 2
    for line in predictions:
        assert set(line) == set(PREDICTION_FIELDS)  # and no raw text by default
        assert line["request_id"] == request["request_id"] and line["model_version"] == predictor.version
        assert line["level"] == "info" and line["ts"].endswith("Z")
    assert predictions[0]["chars"] == len("The cat sat.")
    assert predictions[0]["tokens"] == 6  # [CLS] the cat sat . [SEP]
    assert predictions[1]["unk_rate"] > 0  # ☃ is not in the vocabulary
    assert (predictions[0]["upper_ratio"], predictions[1]["upper_ratio"]) == (round(1 / 9, 4), round(4 / 7, 4))
    assert {k: request[k] for k in ("method", "path", "status")} == {
        "method": "POST",
        "path": "/predict",
        "status": 200,
    }
    assert request["latency_ms"] > 0


def test_raw_text_logged_only_when_enabled(predictor, settings, log_lines):
    from dataclasses import replace

    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app(predictor, replace(settings, log_text=True))) as client:
        client.post("/predict", json={"text": "Log me."})
    (line,) = log_lines("prediction")
    assert line[TEXT_FIELD] == "Log me." and set(line) == {*PREDICTION_FIELDS, TEXT_FIELD}


def test_prometheus_metrics(client, predictor):
    client.post("/predict", json={"text": ["One.", "Two."]})
    client.post("/predict", json={"text": ""})
    text = client.get("/metrics").text
    assert f'cola_model_info{{variant="{predictor.variant}",version="{predictor.version}"}} 1.0' in text
    assert 'cola_requests_total{method="POST",route="/predict",status="200"} 1.0' in text
    assert 'cola_requests_total{method="POST",route="/predict",status="422"} 1.0' in text
    for name in (
        "cola_request_latency_seconds_bucket", "cola_inference_latency_seconds_bucket",
        "cola_prediction_confidence_bucket", "cola_input_chars_bucket", "cola_input_tokens_bucket",
        "cola_unk_rate_bucket", "process_resident_memory_bytes",
    ):  # fmt: skip
        assert name in text
    assert metric(client, "cola_predictions_total") == 2
    assert metric(client, "cola_input_chars_sum") == len("One.") + len("Two.")


def test_internal_failure_is_a_logged_json_500(predictor, settings, log_lines, monkeypatch):
    from fastapi.testclient import TestClient

    from app.main import create_app

    app = create_app(predictor, settings)
    monkeypatch.setattr(app.state.service.batcher, "infer", lambda encoded: 1 / 0)  # a model call that breaks
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/predict", json={"text": "hi"})
    assert response.status_code == 500 and response.json()["error"] == "internal_error"
    assert response.headers["x-request-id"] == response.json()["request_id"]
    (error,) = log_lines("error")  # one traceback, not the handler's and the server's
    assert error["request_id"] == response.json()["request_id"] and "ZeroDivisionError" in error["exception"]


def test_get_with_bytes_that_are_not_utf8_is_refused_like_post(client):
    response = client.get("/predict?text=%ff%fe")
    assert response.status_code == 400 and response.json()["error"] == "invalid_encoding"
    assert client.get("/predict?text=caf%C3%A9+au+lait").status_code == 200  # UTF-8, and + as a space


def test_log_lines_escape_what_would_break_or_forge_a_line():
    import logging

    from app.telemetry import JsonFormatter

    value = 'a\u2028{"event":"forged"}\u2029b\x85c\x9b[31md\x1be'
    record = logging.LogRecord("cola", logging.INFO, __file__, 1, "request", None, None)
    record.fields = {"event": "request", "client_text": value}
    line = JsonFormatter().format(record)
    assert len(line.splitlines()) == 1 and not any(c in line for c in "\u2028\u2029\x85\x9b\x1b")
    assert json.loads(line)["client_text"] == value  # escaped, not lost


def test_a_field_orjson_refuses_still_gives_one_valid_line():
    import logging

    from app.telemetry import JsonFormatter

    record = logging.LogRecord("cola", logging.INFO, __file__, 1, "request", None, None)
    record.fields = {"event": "request", "path": "/caf\u00e9\ud800", "n": 2**70}  # a lone surrogate, a 71-bit int
    line = JsonFormatter().format(record)
    assert line.isascii() and len(line.splitlines()) == 1
    assert json.loads(line)["path"] == "/caf\u00e9\ud800" and json.loads(line)["n"] == 2**70


def test_log_event_records_serve_any_formatter_on_the_logger():
    import io
    import logging
    import threading

    from app.telemetry import LOGGER, log_event

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(threadName)s %(message)s"))
    LOGGER.addHandler(handler)
    level = LOGGER.level
    LOGGER.setLevel(logging.INFO)
    try:
        worker = threading.Thread(target=log_event, args=("rejected",), kwargs={"reason": "x"}, name="model_7")
        worker.start()
        worker.join()
        log_event("startup", level=logging.WARNING)
    finally:
        LOGGER.removeHandler(handler)
        LOGGER.setLevel(level)
    first, second = stream.getvalue().splitlines()
    assert first.endswith("cola.serving INFO model_7 rejected")
    assert second.endswith(f"cola.serving WARNING {threading.current_thread().name} startup")
