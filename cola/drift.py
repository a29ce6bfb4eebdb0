"""Drift statistics between reference data and live predictions: pure functions over numpy arrays.

`compare()` runs every check the monitor knows and says which ones pass their thresholds. Thresholds are on
effect sizes (PSI, the KS statistic D, a shift in share or mean), not on p-values alone: with thousands of
live predictions a p-value flags differences too small to matter.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

EPS = 1e-4  # stands in for an empty bin's share, so PSI stays finite
DISTRIBUTIONS = ("char_length", "token_length", "token_density", "confidence")
FEATURES = (*DISTRIBUTIONS, "predicted_label", "unk_rate", "upper_ratio")


def quantile_edges(reference: np.ndarray, bins: int) -> np.ndarray:
    """Inner bin edges at the reference's quantiles (deduplicated: token lengths are integers)."""
    return np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))


def shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of `values` in each bin; the outer bins are open, so no value falls outside."""
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return counts / max(len(values), 1)


def psi(reference: np.ndarray, live: np.ndarray, bins: int = 10) -> float:
    """Population stability index over the reference's quantile bins (0 = same; > 0.2 = a real shift)."""
    edges = quantile_edges(reference, bins)
    ref, cur = (np.clip(shares(x, edges), EPS, None) for x in (reference, live))
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def ks(reference: np.ndarray, live: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov: (statistic D, p-value)."""
    result = stats.ks_2samp(reference, live)
    return float(result.statistic), float(result.pvalue)


def label_chi_square(reference_counts: np.ndarray, live_counts: np.ndarray) -> tuple[float, float]:
    """Chi-square test that two label-count vectors come from the same label ratio: (chi2, p-value)."""
    table = np.array([reference_counts, live_counts], dtype=float)
    table = table[:, table.sum(axis=0) > 0]  # a label neither side predicted carries no information
    if table.shape[1] < 2:
        return 0.0, 1.0
    chi2, p_value, _, _ = stats.chi2_contingency(table, correction=False)
    return float(chi2), float(p_value)


def histogram(reference: np.ndarray, live: np.ndarray, bins: int = 20) -> dict:
    """Shared equal-width bins over both samples (for plots): edges and each side's share per bin."""
    lo, hi = float(min(reference.min(), live.min())), float(max(reference.max(), live.max()))
    edges = np.linspace(lo, hi if hi > lo else lo + 1, bins + 1)
    ref, _ = np.histogram(reference, edges)
    cur, _ = np.histogram(live, edges)
    return {"edges": edges.tolist(), "reference": (ref / len(reference)).tolist(), "live": (cur / len(live)).tolist()}


@dataclass
class Check:
    """One drift test: `alert` is True when `value` passes `threshold`."""

    feature: str
    statistic: str
    value: float
    threshold: float
    alert: bool


def distribution_checks(feature: str, reference: np.ndarray, live: np.ndarray, thresholds, bins: int):
    """PSI and KS for one numeric feature: (figures for metrics.json, checks)."""
    psi_value = psi(reference, live, bins)
    d, p_value = ks(reference, live)
    figures = {
        "psi": psi_value,
        "ks": d,
        "ks_p_value": p_value,
        "reference_mean": float(reference.mean()),
        "live_mean": float(live.mean()),
    }
    return figures, [
        Check(feature, "psi", psi_value, thresholds.psi, psi_value > thresholds.psi),
        Check(feature, "ks", d, thresholds.ks, d > thresholds.ks),
    ]


def label_checks(reference_labels: np.ndarray, live_labels: np.ndarray, thresholds):
    """Predicted label ratio (1 = acceptable): chi-square, alerting when significant *and* large."""
    ref_counts = np.bincount(reference_labels, minlength=2)[:2]
    live_counts = np.bincount(live_labels, minlength=2)[:2]
    chi2, p_value = label_chi_square(ref_counts, live_counts)
    shift = float(live_labels.mean() - reference_labels.mean())
    figures = {
        "chi2": chi2,
        "p_value": p_value,
        "reference_acceptable": float(reference_labels.mean()),
        "live_acceptable": float(live_labels.mean()),
        "shift": shift,
    }
    alert = p_value < thresholds.label_p_value and abs(shift) > thresholds.label_shift
    return figures, [Check("predicted_label", "acceptable_share_shift", shift, thresholds.label_shift, alert)]


def mean_shift_check(feature: str, reference: np.ndarray, live: np.ndarray, threshold: float):
    """Shift in the mean of a rate (unknown tokens, capital letters): alert when live exceeds reference."""
    shift = float(live.mean() - reference.mean())
    figures = {"reference_mean": float(reference.mean()), "live_mean": float(live.mean()), "shift": shift}
    return figures, [Check(feature, "mean_shift", shift, threshold, shift > threshold)]


def compare(reference: dict, live: dict, thresholds, bins: int = 10) -> tuple[dict, list[Check]]:
    """Run every check whose feature both sides have.

    `reference` and `live` map feature names to 1-D arrays: numeric features `char_length`, `token_length`,
    `token_density`, `confidence`; rates `unk_rate`, `upper_ratio`; `label` (0/1 predicted labels).
    Returns (figures per feature, checks).
    """
    figures, checks = {}, []

    def add(feature, result):
        figures[feature], new_checks = result
        checks.extend(new_checks)

    for feature in DISTRIBUTIONS:
        if _both(reference, live, feature):
            add(feature, distribution_checks(feature, reference[feature], live[feature], thresholds, bins))
    if _both(reference, live, "label"):
        add("predicted_label", label_checks(reference["label"], live["label"], thresholds))
    for feature, threshold in (("unk_rate", thresholds.unk_rate_shift), ("upper_ratio", thresholds.upper_ratio_shift)):
        if _both(reference, live, feature):
            add(feature, mean_shift_check(feature, reference[feature], live[feature], threshold))
    return figures, checks


def _both(reference: dict, live: dict, feature: str) -> bool:
    return len(reference.get(feature, ())) > 0 and len(live.get(feature, ())) > 0


def checks_as_dicts(checks: list[Check]) -> list[dict]:
    return [asdict(c) for c in checks]
