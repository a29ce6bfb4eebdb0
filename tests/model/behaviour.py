"""Behavioural checks of a served model (Made-With-ML's model tier), written against the bundle's predictor so
they test exactly what users get. Each returns a score; tests/model/test_behaviour.py holds the floors, set from
the committed model (docs/experiments.md), so a retrained model that regresses fails."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd

from app.predictor import BundlePredictor

PAIRS = Path(__file__).with_name("minimal_pairs.tsv")  # written for this project, not taken from CoLA


def p_acceptable(predictor: BundlePredictor, texts: list[str]) -> np.ndarray:
    return predictor.predict_proba(texts)[:, predictor.positive]


def minimal_pairs(predictor: BundlePredictor) -> tuple[float, dict[str, float]]:
    """Share of pairs where the acceptable sentence gets the higher P(acceptable): overall and per phenomenon."""
    pairs = pd.read_csv(PAIRS, sep="\t")
    better = p_acceptable(predictor, pairs["acceptable"].tolist()) > p_acceptable(
        predictor, pairs["unacceptable"].tolist()
    )
    by_phenomenon = pairs.assign(better=better).groupby("phenomenon")["better"].mean()
    return float(better.mean()), {k: round(float(v), 3) for k, v in by_phenomenon.items()}


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
