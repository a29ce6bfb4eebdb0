"""Should the served model use a tuned decision threshold? Out-of-fold evidence on the validation split only.

    python -m scripts.threshold_cv [MODEL_DIR]      # default models/model

The train stage tunes the threshold on all validation rows, so its `val_mcc_at_threshold` is in-sample (the same
rows choose and score it). This scores the rule honestly: 5 stratified folds, each held-out fold labelled with the
threshold tuned on the other four (cola.metrics.cross_validated_threshold), compared with argmax on the same rows.
docs/experiments.md uses it to decide `model.tune_threshold`; the test split is never read.
"""

from __future__ import annotations

import json
import sys

import pandas as pd

from cola.config import load_params
from cola.metrics import cross_validated_threshold
from cola.model import load_classifier, load_tokenizer, predict_proba
from cola.paths import MODEL_DIR, VALIDATION_DATA


def main() -> None:
    model_dir = sys.argv[1] if len(sys.argv) > 1 else str(MODEL_DIR)
    params = load_params()
    validation = pd.read_parquet(VALIDATION_DATA)
    probs = predict_proba(load_classifier(model_dir), load_tokenizer(model_dir), list(validation["sentence"]),
                          params.model.max_length, params.train.eval_batch_size)  # fmt: skip
    print(json.dumps(cross_validated_threshold(validation["label"].to_numpy(), probs), indent=2))


if __name__ == "__main__":
    main()
