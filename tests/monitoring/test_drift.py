"""Drift statistics on synthetic data with known answers."""

import numpy as np
import pytest
from omegaconf import OmegaConf

from cola import drift

THRESHOLDS = OmegaConf.create(
    dict(psi=0.2, ks=0.15, label_p_value=0.001, label_shift=0.1, unk_rate_shift=0.01, upper_ratio_shift=0.3)
)


@pytest.fixture
def rng() -> np.random.Generator:
    """Per test, seeded: each test draws the same numbers whichever tests run before it (-k, -x, reordering)."""
    return np.random.default_rng(0)


def test_psi_is_near_zero_for_the_same_distribution_and_large_for_a_shift(rng):
    reference = rng.normal(40, 20, 8000)
    assert drift.psi(reference, rng.normal(40, 20, 1000)) < 0.05
    assert drift.psi(reference, rng.normal(80, 20, 1000)) > 1.0


def test_psi_handles_integer_data_with_repeated_quantiles_and_values_outside_the_reference(rng):
    reference = rng.integers(5, 15, 5000).astype(float)  # many quantiles coincide
    assert len(drift.quantile_edges(reference, 10)) < 10
    same = drift.psi(reference, rng.integers(5, 15, 1000).astype(float))
    beyond = drift.psi(reference, np.full(500, 100.0))  # every live value past the reference's maximum
    assert same < 0.05 and np.isfinite(beyond) and beyond > 2


def test_ks_statistic_measures_the_gap_between_distributions(rng):
    d_same, p_same = drift.ks(rng.uniform(0, 1, 2000), rng.uniform(0, 1, 2000))
    d_apart, p_apart = drift.ks(rng.uniform(0, 1, 2000), rng.uniform(0.5, 1.5, 2000))
    assert d_same < 0.06 and p_same > 0.001
    assert d_apart == pytest.approx(0.5, abs=0.05) and p_apart < 1e-10


def test_label_chi_square():
    assert drift.label_chi_square(np.array([300, 700]), np.array([30, 70])) == (0.0, 1.0)
    chi2, p = drift.label_chi_square(np.array([300, 700]), np.array([80, 20]))
    assert chi2 > 50 and p < 1e-10
    assert drift.label_chi_square(np.array([0, 100]), np.array([0, 50])) == (0.0, 1.0)  # one label only


def synthetic(rng, n, length_mean=40.0, acceptable=0.7, confidence=0.85, unk=0.0, upper=0.0):
    chars = rng.normal(length_mean, 15, n).clip(5)
    tokens = np.round(chars / 3.6) + 2
    return {
        "char_length": chars,
        "token_length": tokens,
        "token_density": tokens / chars,
        "confidence": rng.normal(confidence, 0.08, n).clip(0.5, 1),
        "label": (rng.uniform(size=n) < acceptable).astype(int),
        "unk_rate": np.full(n, unk),
        "upper_ratio": np.full(n, upper),
    }


def alerted(checks):
    return {(c.feature, c.statistic) for c in checks if c.alert}


def test_compare_raises_no_alert_for_a_sample_of_the_reference(rng):
    figures, checks = drift.compare(synthetic(rng, 8000), synthetic(rng, 1000), THRESHOLDS)
    assert alerted(checks) == set()
    assert {c.feature for c in checks} == set(drift.FEATURES)
    assert figures["predicted_label"]["p_value"] > 0.001


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        # [CLS]/[SEP] weigh less in longer inputs, so tokens per character moves too
        (
            {"length_mean": 150.0},
            {(f, s) for f in ("char_length", "token_length", "token_density") for s in ("psi", "ks")},
        ),
        ({"acceptable": 0.3}, {("predicted_label", "acceptable_share_shift")}),
        ({"confidence": 0.6}, {("confidence", "psi"), ("confidence", "ks")}),
        ({"unk": 0.2}, {("unk_rate", "mean_shift")}),
        ({"upper": 1.0}, {("upper_ratio", "mean_shift")}),
    ],
)
def test_compare_alerts_on_exactly_the_shifted_feature(rng, change, expected):
    _, checks = drift.compare(synthetic(rng, 8000), synthetic(rng, 1000, **change), THRESHOLDS)
    assert alerted(checks) == expected


def test_a_significant_but_small_label_shift_does_not_alert(rng):
    reference, live = synthetic(rng, 100_000, acceptable=0.70), synthetic(rng, 100_000, acceptable=0.73)
    figures, checks = drift.compare(reference, live, THRESHOLDS)
    assert figures["predicted_label"]["p_value"] < 0.001  # significant at this sample size...
    assert ("predicted_label", "acceptable_share_shift") not in alerted(checks)  # ...but too small to matter


def test_features_missing_on_either_side_are_skipped(rng):
    live = synthetic(rng, 500)
    del live["upper_ratio"]
    _, checks = drift.compare(synthetic(rng, 2000), live, THRESHOLDS)
    assert "upper_ratio" not in {c.feature for c in checks}
