"""export_onnx: trained model → ONNX variants (fp32, optimised fp32, int8 dynamic, int8 static) → parity gate
→ serving bundle.

Outputs: artifacts/onnx/ (every variant), artifacts/bundle/ (the served variant and its model card, see
contract/bundle.py and cola/model_card.py), reports/export/metrics.json (the DVC metric: parity figures and the
served variant's test accuracy, MCC, agreement with PyTorch and size), reports/export/variants.json (the same
figures, and more, for every variant) and reports/export/model_card.json (a copy of the bundle's card).
The stage fails, with the numbers, if the fp32 export does not reproduce PyTorch on the whole test split
or if the finished bundle, served through runtime.predictor, does not reproduce its variant's predictions, or if
the served variant's test MCC is more than export.max_mcc_drop below fp32's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig
from tokenizers import Tokenizer

from cola import behaviour, model_card
from cola import onnx_export as ox
from cola.config import declared_params, load_params, run_main, write_json
from cola.model import model_threshold
from cola.paths import BUNDLE_DIR, EXPORT_METRICS, MODEL_DIR, ONNX_DIR, TEST_DATA, TRAIN_DATA
from contract.bundle import softmax
from runtime.predictor import BundlePredictor


def check_bundle(bundle_dir: Path, sentences: list[str], expected_logits: np.ndarray) -> float:
    """Serve the test split through the finished bundle (its own tokenizer, config, manifest and offline-
    optimised graph) one sentence per call; its probabilities must match the variant's on the training
    tokenizer's inputs, also one per call: dynamic int8 quantises activations per batch tensor, so only
    single-sentence calls compare whatever the predictor batches internally. Returns max |Δprob|."""
    predictor = BundlePredictor(bundle_dir)
    probs = np.concatenate([predictor.predict_proba([sentence]) for sentence in sentences])
    expected = softmax(expected_logits)
    diff = float(np.abs(probs - expected).max())
    if diff > 1e-4 or (predictor.decide(probs) != predictor.decide(expected)).any():
        raise ox.ParityError(
            f"the bundle in {bundle_dir} does not reproduce its model: max |Δprob| = {diff:.3g} against the "
            f"same model on the training tokenizer's inputs. Its tokenizer.json differs from models/model's "
            f"tokenizer; check ox.bundle_tokenizer and model.max_length."
        )
    return diff


def calibration_sentences(train_data: Path, n: int, seed: int) -> list[str]:
    """A seeded sample of training sentences: never the test split the variants are scored on."""
    train = pd.read_parquet(train_data)
    return train["sentence"].sample(n=min(n, len(train)), random_state=seed).tolist()


def describe(
    bundle_dir: Path, sources: dict, report: dict, served: str, served_logits: np.ndarray, test: pd.DataFrame
) -> dict:
    """The finished bundle's model card: the served variant's test metrics with intervals and calibration, and the
    behavioural checks, run through the bundle's own predictor."""
    predictor = BundlePredictor(bundle_dir)
    sentences, labels = test["sentence"].tolist(), test["label"].to_numpy()
    p_acceptable = softmax(served_logits)[:, predictor.positive]
    figures = report[served]
    return model_card.build(
        sources,
        labels=predictor.labels,
        max_length=predictor.max_length,
        threshold=predictor.threshold,
        served={"variant": served, "pytorch_mcc": report["pytorch"]["mcc"]}
        | {k: figures[k] for k in ("size_mb", "agreement", "mcc_drop_vs_fp32")},
        evaluation=model_card.served_evaluation(labels, p_acceptable, predictor.threshold),
        behaviour=behaviour.summary(predictor, sentences, labels.tolist()),
        sentences=sentences,
    )


def calibration_reader(tokenizer: Tokenizer, train_data: Path, static: DictConfig) -> ox.CalibrationReader:
    """The int8_static variant's calibration batches (export.static): seeded training sentences."""
    sentences = calibration_sentences(train_data, static.calibration_sentences, static.seed)
    return ox.CalibrationReader(tokenizer, sentences, static.calibration_batch_size, ox.INPUT_NAMES)


def score_variants(
    model_dir: Path, paths: dict[str, Path], cfg: DictConfig, max_length: int, test: pd.DataFrame, threshold: float
) -> tuple[dict, dict[str, np.ndarray], dict[str, int]]:
    """Score every exported variant on the test split and apply the gates (parity, the served variant's MCC).
    Returns (report, logits, the optimised graph's fused ops)."""
    sentences, labels = test["sentence"].tolist(), test["label"].to_numpy()
    report, logits = ox.compare_variants(model_dir, paths, sentences, labels, max_length, cfg.batch_size, threshold)
    ox.check_parity(report, cfg.parity_tolerance)
    for name, path in paths.items():
        report[name]["size_mb"] = round(path.stat().st_size / 2**20, 2)
    # before the keys below: variants.json keeps its order
    ox.check_served_mcc(report, cfg.served_variant, cfg.max_mcc_drop)
    fused = ox.fused_ops(paths["optimized"])
    report["optimized"]["fused_attention_nodes"] = fused.get("Attention", 0)
    return report, logits, fused


def stage_metrics(report: dict, served: str, bundle_diff: float) -> dict:
    """The stage's figures: parity and the served variant (metrics.json), every variant (variants.json)."""
    return {
        "parity": {
            "fp32_max_abs_logit_diff": report["fp32"]["max_abs_logit_diff"],
            "fp32_label_agreement": report["fp32"]["agreement"],
            "bundle_max_abs_prob_diff": bundle_diff,
        },
        "served": {k: report[served][k] for k in ("accuracy", "mcc", "mcc_drop_vs_fp32", "agreement", "size_mb")},
        "variants": report,
    }


def print_summary(report: dict, fused: dict[str, int], bundle_dir: Path, version: str, served: str) -> None:
    print(f"export_onnx: fused ops in the optimised graph {fused}")
    for name, values in report.items():
        extra = (
            f", agreement={values['agreement']:.4f}, max|Δlogit|={values['max_abs_logit_diff']:.2g}"
            if name != "pytorch"
            else ""
        )
        print(f"export_onnx: {name:9s} accuracy={values['accuracy']:.4f}, mcc={values['mcc']:.4f}{extra}")
    print(f"export_onnx: bundle {bundle_dir} version {version} serves {served}")


def run(
    model_dir: Path = MODEL_DIR,
    test_data: Path = TEST_DATA,
    onnx_dir: Path = ONNX_DIR,
    bundle_dir: Path = BUNDLE_DIR,
    metrics_path: Path = EXPORT_METRICS,
    params: DictConfig | None = None,
    train_data: Path = TRAIN_DATA,  # calibration sentences of the int8_static variant
    card_sources: model_card.CardSources = model_card.PIPELINE_SOURCES,
) -> dict:
    params = params if params is not None else load_params()
    cfg, max_length, served = params.export, params.model.max_length, params.export.served_variant
    if served not in ox.VARIANTS:
        raise ox.ExportError(f"export.served_variant={served!r} in params.yaml: choose one of {ox.VARIANTS}")
    sources = card_sources.read()  # before the long work: a missing input fails in the first second
    test = pd.read_parquet(test_data)
    tokenizer = ox.bundle_tokenizer(model_dir, max_length)  # calibration batches and the bundle's tokenizer.json
    calibration = calibration_reader(tokenizer, train_data, cfg.static)
    paths = ox.export_variants(model_dir, onnx_dir, cfg.opset, cfg.per_channel, cfg.quantize_from, calibration)
    threshold = model_threshold(model_dir)
    report, logits, fused = score_variants(model_dir, paths, cfg, max_length, test, threshold)

    bundle_params = declared_params("export_onnx", params)  # exactly what DVC tracks for this stage
    bundle_metrics = {"test": report[served], "pytorch_test": report["pytorch"]}
    ox.write_bundle(bundle_dir, paths[served], tokenizer, ox.model_labels(model_dir), max_length, served,
                    params=bundle_params, metrics=bundle_metrics, preoptimize_level=cfg.preoptimize,
                    decision_threshold=threshold)  # fmt: skip
    sentences = test["sentence"].tolist()
    single = ox.variant_logits(model_dir, paths[served], sentences, max_length, batch_size=1)
    bundle_diff = check_bundle(bundle_dir, sentences, single)
    card = describe(bundle_dir, sources, report, served, logits[served], test)
    card_copy = metrics_path.with_name("model_card.json")
    manifest = model_card.write(bundle_dir, card, bundle_params, bundle_metrics, copy_to=card_copy)
    metrics = stage_metrics(report, served, bundle_diff)
    write_json(metrics_path, {key: metrics[key] for key in ("parity", "served")})
    write_json(metrics_path.with_name("variants.json"), report)
    print_summary(report, fused, bundle_dir, manifest["version"], served)
    return metrics


if __name__ == "__main__":
    run_main("export_onnx", run, ox.ExportError, model_card.ModelCardError)
