"""Behavioural checks of a served model (Made-With-ML's model tier), written against the bundle's predictor so
they test exactly what users get. Each returns a score. The floors are set from the committed model
(docs/experiments.md): tests/model/test_behaviour.py fails a retrained model that regresses, and export_onnx
records every score against its floor in the bundle's model card (`summary`)."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd

from cola.paths import MINIMAL_PAIRS as PAIRS  # written for this project, not taken from CoLA
from runtime.predictor import BundlePredictor

# what the committed model scores (docs/experiments.md), less a margin for int8 kernels that differ between CPUs
FLOORS = {
    "minimal_pairs": 0.84,  # committed: 0.895 (34 of 38 pairs); the floor allows 2 more misses
    "shuffled_lower": 0.94,  # committed: 0.976 of 621 acceptable test sentences
    "period_same_label": 0.90,  # committed: 0.935
}
MAX_PERIOD_MEDIAN_CHANGE = 0.02  # committed: 0.003
MAX_WHITESPACE_CHANGE = 1e-6  # the tokenizer strips it: any change is a bug


def p_acceptable(predictor: BundlePredictor, texts: list[str]) -> np.ndarray:
    return predictor.predict_proba(texts)[:, predictor.positive]


def minimal_pairs(predictor: BundlePredictor) -> tuple[float, dict[str, float]]:
    """Share of pairs where the acceptable sentence gets the higher P(acceptable): overall and per phenomenon."""
    pairs = pd.read_csv(PAIRS, sep="\t")
    better = p_acceptable(predictor, pairs["acceptable"].tolist()) > p_acceptable(
        predictor, pairs["unacceptable"].tolist()
    )
    by_phenomenon = pairs.assign(better=better).groupby("phenomenon")["better"].mean()
    return float(better.mean()), {str(k): round(float(v), 3) for k, v in by_phenomenon.items()}


def shuffle_words(sentence: str, rng: random.Random) -> str | None:
    """The sentence's words in a new random order (final punctuation stays last); None when no new order exists."""
    words = sentence.split()
    end = [words.pop()] if words and words[-1] in {".", "?", "!"} else []  # a question stays a question
    for _ in range(10):
        shuffled = rng.sample(words, len(words))
        if shuffled != words:
            return " ".join(shuffled + end)
    return None


def shuffled_scores_lower(predictor: BundlePredictor, sentences: list[str], seed: int = 0) -> tuple[float, int]:
    """Directional: share of sentences whose word-shuffled version gets a lower P(acceptable). Returns (share, n)."""
    rng = random.Random(seed)
    pairs = [(s, t) for s in sentences if len(s.split()) >= 5 and (t := shuffle_words(s, rng))]
    original = p_acceptable(predictor, [s for s, _ in pairs])
    shuffled = p_acceptable(predictor, [t for _, t in pairs])
    return float((shuffled < original).mean()), len(pairs)


def final_period_invariance(predictor: BundlePredictor, sentences: list[str]) -> tuple[float, float]:
    """Invariance: a final period (CoLA's tokenised sentences have none; users type one) keeps the label (share of
    sentences) and P(acceptable) close (median |Δ|). Sentences ending in "?" or "!" are left out."""
    plain = [s.rstrip() for s in sentences if not s.rstrip().endswith(("?", "!", "."))]
    a, b = predictor.predict_proba(plain), predictor.predict_proba([s + "." for s in plain])
    same_label = float((predictor.decide(a) == predictor.decide(b)).mean())
    return same_label, float(np.median(np.abs(a[:, predictor.positive] - b[:, predictor.positive])))


def trailing_whitespace_change(predictor: BundlePredictor, sentences: list[str]) -> float:
    """Invariance: the largest change in P(acceptable) from appending spaces, a tab and a newline."""
    return float(
        np.abs(p_acceptable(predictor, sentences) - p_acceptable(predictor, [s + "  \t\n" for s in sentences])).max()
    )


def summary(predictor: BundlePredictor, sentences: list[str], labels: list[int]) -> dict:
    """Every check on a test split, each with its score and its limit, for the model card."""
    pairs, by_phenomenon = minimal_pairs(predictor)
    acceptable = [s for s, label in zip(sentences, labels, strict=True) if label == 1]
    shuffled, n_shuffled = shuffled_scores_lower(predictor, acceptable)
    same_label, median_change = final_period_invariance(predictor, sentences)
    whitespace = trailing_whitespace_change(predictor, pd.read_csv(PAIRS, sep="\t")["acceptable"].tolist())
    checks: dict[str, dict] = {
        "minimal_pairs": {"score": pairs, "at_least": FLOORS["minimal_pairs"], "by_phenomenon": by_phenomenon},
        "shuffled_lower": {"score": shuffled, "at_least": FLOORS["shuffled_lower"], "n": n_shuffled},
        "period_same_label": {"score": same_label, "at_least": FLOORS["period_same_label"]},
        "period_median_change": {"score": median_change, "at_most": MAX_PERIOD_MEDIAN_CHANGE},
        "whitespace_change": {"score": whitespace, "at_most": MAX_WHITESPACE_CHANGE},
    }
    for check in checks.values():
        if not np.isfinite(check["score"]):  # no sentence the check applies to (e.g. all end in a period)
            check["score"], check["passed"] = None, None
            continue
        check["score"] = round(check["score"], 4)
        limit_met = check["score"] >= check["at_least"] if "at_least" in check else check["score"] <= check["at_most"]
        check["passed"] = bool(limit_met)
    return checks
