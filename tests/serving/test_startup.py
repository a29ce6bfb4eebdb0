"""Torch-free imports and fail-fast startup, checked in fresh subprocesses as a user would see them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from cola.paths import ROOT
from tests.net import free_port
from tests.serving.conftest import serve_env

# Any import of torch or transformers raises: the app and the Lambda module must not need them.
NO_TORCH = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("torch", "transformers"):
            raise ImportError(f"{name} is not allowed in the serving app")
sys.meta_path.insert(0, Block())
"""


def run_python(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_app_and_lambda_work_without_torch(tiny_bundle):
    code = (
        NO_TORCH
        + """
import json
from fastapi.testclient import TestClient
import app.main, app.lambda_handler, app.__main__
with TestClient(app.main.from_env()) as client:
    body = client.post("/predict", json={"text": "The cat sat."}).json()
direct = app.lambda_handler.handler({"sentence": "The cat sat."}, None)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))
print(json.dumps({"label": body["predictions"][0]["label"], "direct": direct["predictions"][0]["label"],
                  "heavy": heavy}))
"""
    )
    result = run_python(code, serve_env(tiny_bundle))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["heavy"] == [] and out["label"] == out["direct"]


def test_the_guard_itself_blocks_torch():
    result = run_python(NO_TORCH + "import torch", serve_env(ROOT))
    assert result.returncode != 0 and "not allowed in the serving app" in result.stderr


def broken_bundles(tiny_bundle, tmp_path):
    missing = tmp_path / "does-not-exist"
    no_manifest = shutil.copytree(tiny_bundle, tmp_path / "no_manifest")
    (no_manifest / "manifest.json").unlink()
    no_model = shutil.copytree(tiny_bundle, tmp_path / "no_model")
    (no_model / "model.onnx").unlink()
    tampered = shutil.copytree(tiny_bundle, tmp_path / "tampered")
    with open(tampered / "model.onnx", "ab") as f:
        f.write(b"\0")
    return {
        "missing": (missing, "does not exist"),
        "no_manifest": (no_manifest, "manifest.json is missing"),
        "no_model": (no_model, "model.onnx is listed in the manifest but missing"),
        "tampered": (tampered, "model.onnx fails its sha256 check"),
    }


@pytest.mark.parametrize("case", ["missing", "no_manifest", "no_model", "tampered"])
def test_server_refuses_a_bad_bundle_with_one_clear_line(case, tiny_bundle, tmp_path):
    bundle, expected = broken_bundles(tiny_bundle, tmp_path)[case]
    result = subprocess.run(
        [sys.executable, "-m", "app", "--port", str(free_port())],
        cwd=ROOT, env=serve_env(bundle), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("cannot start the CoLA API:") and expected in line and "dvc repro export_onnx" in line


def test_bad_setting_is_refused(tiny_bundle):
    result = subprocess.run(
        [sys.executable, "-m", "app"], cwd=ROOT, env=serve_env(tiny_bundle, COLA_MAX_SENTENCES="lots"),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and "COLA_MAX_SENTENCES='lots' must be an integer" in result.stderr


def test_lambda_init_fails_on_a_tampered_bundle(tiny_bundle, tmp_path):
    bundle, expected = broken_bundles(tiny_bundle, tmp_path)["tampered"]
    result = run_python("import app.lambda_handler", serve_env(bundle))
    assert result.returncode != 0 and expected in result.stderr
