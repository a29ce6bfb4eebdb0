"""The label check every serving test shares: a label is the bundle's decision on its own probabilities."""

from __future__ import annotations

import numpy as np

from runtime.predictor import BundlePredictor


def assert_labels_follow_the_threshold(predictor: BundlePredictor, predictions: list[dict]) -> None:
    """Each answered label is `predictor.decide` (the bundle's decision_threshold, not argmax) applied to the
    probabilities answered beside it."""
    probs = np.array([[p["probabilities"][label] for label in predictor.labels] for p in predictions])
    answered, decided = [p["label"] for p in predictions], [predictor.labels[i] for i in predictor.decide(probs)]
    # a message of its own: pytest rewrites asserts only in test modules, and this helper is not one
    assert answered == decided, (
        f"labels {answered}, but the bundle's threshold {predictor.threshold} on {probs} decides {decided}"
    )
