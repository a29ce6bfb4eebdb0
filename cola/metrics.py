"""Classification metrics on the test split, shared by evaluate (PyTorch) and export_onnx (ONNX variants)."""

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    matthews_corrcoef,
    precision_score,
    recall_score,
    roc_auc_score,
)


def classification_metrics(labels: np.ndarray, probs: np.ndarray) -> dict:
    """MCC (the CoLA metric), accuracy, macro F1/precision/recall and ROC AUC from (n, 2) probabilities."""
    preds = probs.argmax(axis=1)
    return {
        "mcc": float(matthews_corrcoef(labels, preds)),
        "accuracy": float(accuracy_score(labels, preds)),
        "f1_macro": float(f1_score(labels, preds, average="macro")),
        "precision_macro": float(precision_score(labels, preds, average="macro", zero_division=0)),
        "recall_macro": float(recall_score(labels, preds, average="macro", zero_division=0)),
        "roc_auc": float(roc_auc_score(labels, probs[:, 1])) if len(set(labels)) > 1 else float("nan"),
        "n": int(len(labels)),
    }
