"""Serving fixtures: the real app on the real `tiny_bundle` (tests/conftest_bundle.py), in-process and as a
real `python -m app` server process."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from app.telemetry import LOGGER, JsonFormatter
from cola.paths import ROOT
from runtime.predictor import BundlePredictor
from tests.net import free_port


@pytest.fixture(scope="session")
def predictor(tiny_bundle) -> BundlePredictor:
    return BundlePredictor(tiny_bundle)


@pytest.fixture
def settings(tiny_bundle) -> Settings:
    # one model call at a time (not one per core): the queueing tests hold that call and expect the rest to queue
    return Settings(bundle_dir=tiny_bundle, max_sentences=8, max_chars=200, max_body_bytes=4096, model_calls=1)


@pytest.fixture
def client(predictor, settings):
    with TestClient(create_app(predictor, settings)) as test_client:
        yield test_client


@pytest.fixture
def log_lines():
    """read(event=None) -> the app's JSON log lines so far, parsed (optionally only one event type)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    LOGGER.addHandler(handler)
    level = LOGGER.level
    LOGGER.setLevel(logging.INFO)  # setup_logging() leaves the level alone once a handler is attached

    def read(event: str | None = None) -> list[dict]:
        parsed = [json.loads(line) for line in stream.getvalue().splitlines()]
        return [p for p in parsed if event is None or p["event"] == event]

    yield read
    LOGGER.removeHandler(handler)
    LOGGER.setLevel(level)


@pytest.fixture
def tampered_bundle(tiny_bundle, tmp_path) -> Path:
    bundle = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    with open(bundle / "tokenizer.json", "a") as f:
        f.write(" ")
    return bundle


def serve_env(bundle: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "AWS_LAMBDA_FUNCTION_NAME"}
    return {**env, "COLA_BUNDLE_DIR": str(bundle), **extra}


def wait_ready(url: str, process: subprocess.Popen, limit_s: float = 60) -> None:
    """Poll /ready until the server answers (a hang guard, not a speed assertion)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"server exited with {process.returncode}: {process.stderr.read() if process.stderr else ''}"
            )
        try:
            with urllib.request.urlopen(url + "/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} not ready within {limit_s}s")


@pytest.fixture(scope="session")
def live_server(tiny_bundle):
    """`python -m app` on a free 127.0.0.1 port, as a user would run it."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "--port", str(port)],
        cwd=ROOT,
        env=serve_env(tiny_bundle),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
