"""The production surface: /predict, /health, /ready and the page; docs and metrics only where a setting turns them
on (on for a developer's `python -m app`, off in the images and on Lambda; the image serves /metrics on a private
port). Settings errors, COLA_PORT included, stop `python -m app` with one line and exit code 2."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from cola.paths import ROOT
from tests.net import free_port
from tests.serving.conftest import serve_env, wait_ready
from tests.serving.test_lambda import Context, lambda_module, load_event  # noqa: F401 (a fixture)

PUBLIC = ["/health", "/ready", "/", "/predict?text=The%20cat%20sat."]
PRIVATE = ["/docs", "/redoc", "/openapi.json", "/metrics"]


def test_a_developer_gets_docs_and_metrics(client):
    for path in PUBLIC + PRIVATE:
        assert client.get(path).status_code == 200, path
    assert 'href="docs"' in client.get("/").text


def test_the_production_surface_is_the_api_and_the_page(predictor, settings):
    production = replace(settings, expose_docs=False, expose_metrics=False)
    with TestClient(create_app(predictor, production)) as client:
        for path in PUBLIC:
            assert client.get(path).status_code == 200, path
        for path in PRIVATE:
            response = client.get(path)
            assert response.status_code == 404 and response.json()["error"] == "not_found", path
        assert 'href="docs"' not in client.get("/").text  # no link to docs that are not there


@pytest.mark.parametrize(
    "env,docs,metrics",
    [
        ({}, True, True),
        ({"COLA_EXPOSE_DOCS": "0", "COLA_EXPOSE_METRICS": "0"}, False, False),  # what the API image sets
        ({"AWS_LAMBDA_FUNCTION_NAME": "f"}, False, False),  # Lambda: off unless turned on
        ({"AWS_LAMBDA_FUNCTION_NAME": "f", "COLA_EXPOSE_DOCS": "1"}, True, False),
    ],
)
def test_surface_settings_from_the_environment(monkeypatch, env, docs, metrics):
    for name in ("COLA_EXPOSE_DOCS", "COLA_EXPOSE_METRICS", "AWS_LAMBDA_FUNCTION_NAME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert (settings.expose_docs, settings.expose_metrics) == (docs, metrics)


def test_lambda_serves_neither_docs_nor_metrics(lambda_module):  # noqa: F811
    for path in PRIVATE:
        event = load_event("function_url.json")
        event["rawPath"] = event["requestContext"]["http"]["path"] = path
        event["requestContext"]["http"]["method"] = "GET"
        assert lambda_module.handler(event, Context())["statusCode"] == 404, path


@pytest.mark.parametrize(
    "name,value,message",
    [
        ("COLA_PORT", "abc", "COLA_PORT='abc' must be an integer"),
        ("COLA_PORT", "70000", "COLA_PORT=70000 must be a TCP port"),
        ("COLA_METRICS_PORT", "-1", "COLA_METRICS_PORT='-1' must not be negative"),
        ("COLA_EXPOSE_DOCS", "yes", "COLA_EXPOSE_DOCS='yes' must be 1 (on) or 0 (off)"),
    ],
)
def test_a_bad_setting_stops_the_server_with_one_line(tiny_bundle, name, value, message):
    result = subprocess.run(
        [sys.executable, "-m", "app"], cwd=ROOT, env=serve_env(tiny_bundle, **{name: value}),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()  # one line, no traceback
    assert line.startswith("cannot start the CoLA API: environment variable") and message in line, line


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.slow
def test_the_image_settings_serve_metrics_on_a_private_port_only(tiny_bundle):
    port, metrics_port = free_port(), free_port()
    env = serve_env(tiny_bundle, COLA_EXPOSE_DOCS="0", COLA_EXPOSE_METRICS="0", COLA_METRICS_PORT=str(metrics_port))
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "--port", str(port)], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        assert [status(url + path) for path in PRIVATE] == [404] * 4
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
            assert b"cola_model_info{" in response.read()
    finally:
        process.terminate()
        process.wait(timeout=30)
