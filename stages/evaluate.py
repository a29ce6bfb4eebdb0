"""evaluate: score the trained model on the test split (GLUE validation; GLUE's test has no labels).

Outputs (all committed to git, so `dvc metrics diff main` works in PRs): reports/evaluate/metrics.json,
plots (confusion matrix, ROC, precision-recall), predictions.csv and misclassified.csv for the test split.
"""

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve, roc_curve

from cola.config import load_params, run_main, write_json
from cola.data import LABELS
from cola.metrics import classification_metrics, decide
from cola.model import load_classifier, load_tokenizer, model_threshold, predict_proba
from cola.paths import EVALUATE_METRICS, EVALUATE_REPORT_DIR, MODEL_DIR, TEST_DATA


def curve_points(x: np.ndarray, y: np.ndarray, names: tuple[str, str], max_points: int = 200) -> list[dict]:
    """Thin a curve to at most `max_points` so the committed plot files stay small."""
    keep = np.unique(np.linspace(0, len(x) - 1, min(len(x), max_points)).round().astype(int))
    return [{names[0]: round(float(x[i]), 4), names[1]: round(float(y[i]), 4)} for i in keep]


def main() -> None:
    params = load_params()
    test = pd.read_parquet(TEST_DATA)
    model_dir = str(MODEL_DIR)
    probs = predict_proba(
        load_classifier(model_dir),
        load_tokenizer(model_dir),
        list(test["sentence"]),
        params.model.max_length,
        params.evaluate.batch_size,
    )
    labels = test["label"].to_numpy()
    # The decision rule the train stage chose on validation (0.5 = argmax when it did not tune one).
    threshold = model_threshold(MODEL_DIR)
    preds = decide(probs, threshold)

    metrics = classification_metrics(labels, probs, threshold)
    write_json(EVALUATE_METRICS, metrics)
    predictions = test.assign(pred=preds, prob_acceptable=probs[:, 1].round(6))
    predictions.to_csv(EVALUATE_REPORT_DIR / "predictions.csv", index=False)
    predictions[preds != labels].to_csv(EVALUATE_REPORT_DIR / "misclassified.csv", index=False)

    fpr, tpr, _ = roc_curve(labels, probs[:, 1])
    precision, recall, _ = precision_recall_curve(labels, probs[:, 1])
    write_json(
        EVALUATE_REPORT_DIR / "plots" / "confusion.json",
        [{"actual": LABELS[a], "predicted": LABELS[p]} for a, p in zip(labels, preds, strict=True)],
    )
    write_json(EVALUATE_REPORT_DIR / "plots" / "roc.json", curve_points(fpr, tpr, ("fpr", "tpr")))
    write_json(EVALUATE_REPORT_DIR / "plots" / "pr.json", curve_points(recall, precision, ("recall", "precision")))
    print("evaluate: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k != "n"))


if __name__ == "__main__":
    run_main("evaluate", main)
