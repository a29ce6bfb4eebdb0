"""The serving bundle: manifest integrity, tokenizer equality with training, torch-free serving."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cola import onnx_export as ox
from cola.config import load_params, resolve_pretrained
from cola.paths import ROOT
from contract.bundle import BundleError, softmax, verify_manifest
from tests.conftest_bundle import FIXTURE_COLA, MINILM, TINY_MAX_LENGTH, cola_rows


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


def test_bundle_layout_matches_app_bundle_contract(tiny_bundle):
    manifest = verify_manifest(tiny_bundle)
    assert sorted(manifest["files"]) == [
        "config.json",
        "model.onnx",
        "model_card.json",
        "model_card.md",
        "tokenizer.json",
    ]
    config = json.loads((tiny_bundle / "config.json").read_text())
    assert config == {
        "labels": ["unacceptable", "acceptable"],
        "max_length": TINY_MAX_LENGTH,
        "variant": "int8_static",
        "model_file": "model.onnx",
        "input_names": ox.INPUT_NAMES,
        "decision_threshold": 0.5,  # the tiny model was not trained, so no threshold was tuned: argmax
        "graph_optimization_level": "all",  # the fixture ships the variant as exported (no export.preoptimize)
    }
    assert manifest["version"].startswith("int8_static-")
    assert set(manifest["metrics"]["test"]) >= {"accuracy", "mcc", "agreement"}


@pytest.mark.parametrize("name", ["model.onnx", "tokenizer.json", "config.json"])
def test_tampered_bundle_file_fails_the_manifest_check_naming_the_file(bundle_copy, name):
    with open(bundle_copy / name, "ab") as f:
        f.write(b" ")
    with pytest.raises(BundleError, match=rf"{name} fails its sha256 check .*dvc repro export_onnx"):
        verify_manifest(bundle_copy)


def test_missing_bundle_file_fails_the_manifest_check(bundle_copy):
    (bundle_copy / "model.onnx").unlink()
    with pytest.raises(BundleError, match=r"model.onnx is listed in the manifest but missing"):
        verify_manifest(bundle_copy)


def training_tokenizer_dir() -> Path:
    """The trained model's tokenizer if the pipeline has produced one, else the base package it is saved from."""
    trained = ROOT / "models" / "model"
    return trained if (trained / "tokenizer.json").is_file() else Path(resolve_pretrained(MINILM))


@pytest.mark.parametrize("data", ["fixture", "full"])
@pytest.mark.parametrize("max_length", [load_params().model.max_length, 12])
def test_bundle_tokenizer_ids_equal_the_training_tokenizers_on_the_test_split(max_length, data, request):
    """The test split: the tests' fixture, and GLUE validation as published (cola.data) when the full copy is
    there (its punctuation and rare words exercise the tokenizer more); max_length 12 forces truncation."""
    from cola.model import load_tokenizer, make_loader

    directory = request.getfixturevalue("full_cola_dir") if data == "full" else FIXTURE_COLA
    sentences, _ = cola_rows(10_000, directory)
    whole_split = len(sentences)
    sentences.append("a very long sentence " * 40)  # longer than any max_length
    model_dir = training_tokenizer_dir()
    loader = make_loader(pd.DataFrame({"sentence": sentences}), load_tokenizer(str(model_dir)), max_length, 32)
    bundle_tokenizer = ox.bundle_tokenizer(model_dir, max_length)

    rows = 0
    for chunk, batch in zip(ox.batches(sentences, 32), loader, strict=True):
        ours = ox.encode(bundle_tokenizer, chunk)
        for name in ox.INPUT_NAMES:
            np.testing.assert_array_equal(ours[name], batch[name].numpy(), err_msg=f"{name} differs")
        rows += len(chunk)
    assert rows == len(sentences) == whole_split + 1 > 300  # every row of the split, and the long one
    assert ours["input_ids"].shape[1] == max_length  # the long sentence was truncated, not dropped


# Runs in a fresh interpreter where importing torch or transformers raises, like the torch-free serving image.
BLOCKER = textwrap.dedent(
    """
    import sys

    class BlockHeavyImports:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "transformers"):
                raise ImportError(f"{name} is blocked: the bundle predictor must not need it")

    sys.meta_path.insert(0, BlockHeavyImports())
    """
)
PREDICT = textwrap.dedent(
    """
    import json, sys
    try:
        import torch
        sys.exit("the import blocker did not block torch")
    except ImportError:
        pass
    from runtime.predictor import BundlePredictor
    probs = BundlePredictor(sys.argv[1]).predict_proba(json.loads(sys.argv[2]))
    print(json.dumps(probs.tolist()))
    print("modules:", sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers")))
    """
)


def test_bundle_predictor_serves_without_torch_or_transformers(tiny_bundle, tmp_path):
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    sentences, _ = cola_rows(5)
    result = subprocess.run(
        [sys.executable, "-c", PREDICT, str(tiny_bundle), json.dumps(sentences)],
        cwd=ROOT,
        env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    probs_line, modules_line = result.stdout.strip().splitlines()[-2:]
    assert modules_line == "modules: []"

    # Same model file, same tokenizer, run here with onnxruntime directly: the probabilities must agree.
    tokenizer = ox.bundle_tokenizer(tiny_bundle, TINY_MAX_LENGTH)
    session = ox.make_session(tiny_bundle / "model.onnx", threads=1)
    expected = softmax(ox.ort_logits(session, ox.encode(tokenizer, sentences)))
    np.testing.assert_allclose(np.array(json.loads(probs_line)), expected, atol=1e-5)
