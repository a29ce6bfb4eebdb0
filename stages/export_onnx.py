"""export_onnx: trained model → ONNX variants (fp32, optimised fp32, int8) → parity gate → serving bundle.

Outputs: artifacts/onnx/ (every variant), artifacts/bundle/ (the served variant, see app/bundle.py) and
reports/export/metrics.json (test accuracy, MCC, agreement with PyTorch and size of every variant).
The stage fails, with the numbers, if the fp32 export does not reproduce PyTorch on the whole test split
or if the finished bundle, served through app.predictor, does not reproduce its variant's predictions.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from app.predictor import BundlePredictor
from cola import onnx_export as ox
from cola.config import ROOT, declared_params, load_params, write_json

MODEL_DIR = ROOT / "models" / "model"
TEST_DATA = ROOT / "data" / "prepared" / "test.parquet"
ONNX_DIR = ROOT / "artifacts" / "onnx"
BUNDLE_DIR = ROOT / "artifacts" / "bundle"
METRICS = ROOT / "reports" / "export" / "metrics.json"


def check_bundle(bundle_dir: Path, sentences: list[str], expected_logits: np.ndarray, batch_size: int) -> float:
    """Serve the test split through the finished bundle (its own tokenizer, config and manifest) in the
    batches the comparison used; its probabilities must match the variant's. Returns max |Δprob|."""
    predictor = BundlePredictor(bundle_dir)
    probs = np.concatenate([predictor.predict_proba(list(chunk)) for chunk in ox.batches(sentences, batch_size)])
    expected = ox.softmax(expected_logits)
    diff = float(np.abs(probs - expected).max())
    if diff > 1e-4 or (probs.argmax(1) != expected.argmax(1)).any():
        raise ox.ParityError(
            f"the bundle in {bundle_dir} does not reproduce its model: max |Δprob| = {diff:.3g} against the "
            f"same model on the training tokenizer's inputs. Its tokenizer.json differs from models/model's "
            f"tokenizer; check ox.bundle_tokenizer and model.max_length."
        )
    return diff


def run(model_dir: Path = MODEL_DIR, test_data: Path = TEST_DATA, onnx_dir: Path = ONNX_DIR,
        bundle_dir: Path = BUNDLE_DIR, metrics_path: Path = METRICS, params: dict | None = None) -> dict:
    params = params or load_params()
    cfg, max_length = params.export, params.model.max_length
    if cfg.served_variant not in ox.VARIANTS:
        raise ox.ExportError(f"export.served_variant={cfg.served_variant!r} in params.yaml: choose one of {ox.VARIANTS}")
    test = pd.read_parquet(test_data)
    sentences, labels = test["sentence"].tolist(), test["label"].to_numpy()

    paths = ox.export_variants(model_dir, onnx_dir, cfg.opset, cfg.per_channel, cfg.quantize_from)
    report, logits = ox.compare_variants(model_dir, paths, sentences, labels, max_length, cfg.batch_size)
    ox.check_parity(report, cfg.parity_tolerance)

    served = cfg.served_variant
    for name, path in paths.items():
        report[name]["size_mb"] = round(path.stat().st_size / 2**20, 2)
        report[name]["mcc_drop_vs_fp32"] = report["fp32"]["mcc"] - report[name]["mcc"]
    fused = ox.fused_ops(paths["optimized"])
    report["optimized"]["fused_attention_nodes"] = fused.get("Attention", 0)

    manifest = ox.write_bundle(
        bundle_dir, paths[served], ox.bundle_tokenizer(model_dir, max_length), ox.model_labels(model_dir),
        max_length, served,
        params=declared_params("export_onnx", params),  # exactly what DVC tracks for this stage
        metrics={"test": report[served], "pytorch_test": report["pytorch"]},
    )
    bundle_diff = check_bundle(bundle_dir, sentences, logits[served], cfg.batch_size)
    metrics = {
        "parity": {
            "fp32_max_abs_logit_diff": report["fp32"]["max_abs_logit_diff"],
            "fp32_label_agreement": report["fp32"]["agreement"],
            "bundle_max_abs_prob_diff": bundle_diff,
        },
        "served": {k: report[served][k] for k in ("accuracy", "mcc", "mcc_drop_vs_fp32", "agreement", "size_mb")},
        "variants": report,
    }
    write_json(metrics_path, metrics)
    print(f"export_onnx: fused ops in the optimised graph {fused}")
    for name, values in report.items():
        extra = f", agreement={values['agreement']:.4f}, max|Δlogit|={values['max_abs_logit_diff']:.2g}" if name != "pytorch" else ""
        print(f"export_onnx: {name:9s} accuracy={values['accuracy']:.4f}, mcc={values['mcc']:.4f}{extra}")
    print(f"export_onnx: bundle {bundle_dir} version {manifest['version']} serves {served}")
    return metrics


def main() -> None:
    try:
        run()
    except ox.ExportError as exc:
        sys.exit(f"export_onnx failed: {exc}")


if __name__ == "__main__":
    main()
