"""The serving bundle: a self-contained directory written by the `export_onnx` stage.

Layout (every file listed in manifest.json with its sha256):
    model.onnx       the served ONNX variant
    tokenizer.json   Hugging Face `tokenizers` file: dynamic padding, truncation at max_length
    config.json      {"labels": [...], "max_length": int, "variant": str, "model_file": "model.onnx",
                      "input_names": [...], "graph_optimization_level": "disable" | "basic" | "extended" | "all",
                      "optimized_by_onnxruntime": version (present when the export pre-optimised the graph),
                      "decision_threshold": float (label "acceptable" when its probability is >= this; 0.5 =
                      argmax; absent in older bundles = 0.5)}
    model_card.json  what the model is: purpose, base model and licence, data, training, test metrics with
                     intervals, decision threshold, served variant, behavioural checks, known limits
                     (written by cola/model_card.py)
    model_card.md    the same card for people (both written last, by a stage that has served the finished bundle;
                     bundles exported before cards have neither)
    manifest.json    {"version": str, "files": {name: sha256}, "params": {...}, "metrics": {...}}

This module must stay importable without torch or transformers: the app and the Lambda image use it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

MANIFEST = "manifest.json"
CONFIG = "config.json"
MODEL_CARD = "model_card.json"
MODEL_CARD_MD = "model_card.md"


class BundleError(RuntimeError):
    """The bundle is missing, incomplete or does not match its manifest."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(bundle_dir: str | Path, params: dict, metrics: dict) -> dict:
    """Hash every file in `bundle_dir` (except the manifest) and write manifest.json.

    The version is derived from the hashes, so the same bundle content always has the same version.
    """
    bundle_dir = Path(bundle_dir)
    files = {
        p.relative_to(bundle_dir).as_posix(): file_sha256(p)
        for p in sorted(bundle_dir.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    content_hash = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    config = json.loads((bundle_dir / CONFIG).read_text())
    manifest = {
        "version": f"{config.get('variant', 'model')}-{content_hash[:12]}",
        "files": files,
        "params": params,
        "metrics": metrics,
    }
    (bundle_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def verify_manifest(bundle_dir: str | Path) -> dict:
    """Check that every file in the manifest exists with the recorded sha256; return the manifest.

    Raises BundleError naming the bundle, the file and what to do about it.
    """
    bundle_dir = Path(bundle_dir)
    fix = "re-run `dvc repro export_onnx` (or `dvc pull`) to rebuild the bundle"
    manifest_path = bundle_dir / MANIFEST
    if not bundle_dir.is_dir():
        raise BundleError(f"bundle directory {bundle_dir} does not exist: {fix}")
    if not manifest_path.is_file():
        raise BundleError(f"{manifest_path} is missing, so the bundle cannot be verified: {fix}")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{manifest_path} is not a valid manifest ({exc}): {fix}") from exc
    for required in (CONFIG, "tokenizer.json"):
        if required not in files:
            raise BundleError(f"{manifest_path} does not list {required}: {fix}")
    for name, expected in files.items():
        path = bundle_dir / name
        if not path.is_file():
            raise BundleError(f"{path} is listed in the manifest but missing: {fix}")
        actual = file_sha256(path)
        if actual != expected:
            raise BundleError(
                f"{path} fails its sha256 check (manifest {expected[:12]}…, file {actual[:12]}…): "
                f"the file was modified or corrupted; {fix}"
            )
    return manifest


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities from the served model's output: model.onnx returns logits over config.json `labels`."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
