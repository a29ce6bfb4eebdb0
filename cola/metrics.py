"""Classification metrics and the decision rule, shared by train (threshold on validation), evaluate (PyTorch)
and export_onnx (ONNX variants)."""

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    matthews_corrcoef,
    precision_score,
    recall_score,
    roc_auc_score,
)

THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.01), 2)


def decide(probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """The decision rule: label 1 (acceptable) when P(acceptable) >= threshold. 0.5 is argmax for two classes."""
    return (probs[:, 1] >= threshold).astype(int)


def tune_threshold(labels: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """The threshold on P(acceptable) that maximises MCC on these (validation) labels, from a 0.01 grid;
    ties go to the threshold closest to 0.5. Returns (threshold, MCC at it)."""
    scores = [(matthews_corrcoef(labels, decide(probs, t)), -abs(t - 0.5), float(t)) for t in THRESHOLD_GRID]
    mcc, _, threshold = max(scores)
    return threshold, float(mcc)


def cross_validated_threshold(labels: np.ndarray, probs: np.ndarray, folds: int = 5, seed: int = 0) -> dict:
    """Is a tuned threshold worth it? Out-of-fold evidence from the validation split alone: on each of `folds`
    stratified folds, the threshold tuned on the other folds scores the held-out fold. Returns the pooled
    out-of-fold MCC of that rule next to argmax's on the same rows, and the thresholds the folds chose."""
    from sklearn.model_selection import StratifiedKFold

    preds = np.zeros(len(labels), dtype=int)
    thresholds = []
    for fit, held_out in StratifiedKFold(folds, shuffle=True, random_state=seed).split(probs, labels):
        threshold, _ = tune_threshold(labels[fit], probs[fit])
        preds[held_out] = decide(probs[held_out], threshold)
        thresholds.append(threshold)
    return {
        "mcc_tuned_out_of_fold": float(matthews_corrcoef(labels, preds)),
        "mcc_argmax": float(matthews_corrcoef(labels, decide(probs))),
        "fold_thresholds": thresholds,
    }


def classification_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> dict:
    """MCC (the CoLA metric), accuracy, macro F1/precision/recall under the decision rule, the MCC argmax gives,
    and ROC AUC (threshold-free)."""
    preds = decide(probs, threshold)
    return {
        "mcc": float(matthews_corrcoef(labels, preds)),
        "mcc_argmax": float(matthews_corrcoef(labels, decide(probs))),
        "accuracy": float(accuracy_score(labels, preds)),
        "f1_macro": float(f1_score(labels, preds, average="macro")),
        "precision_macro": float(precision_score(labels, preds, average="macro", zero_division=0)),
        "recall_macro": float(recall_score(labels, preds, average="macro", zero_division=0)),
        "roc_auc": float(roc_auc_score(labels, probs[:, 1])) if len(set(labels)) > 1 else float("nan"),
        "n": int(len(labels)),
        "threshold": float(threshold),
    }
