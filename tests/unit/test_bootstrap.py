"""cola/bootstrap.py: sklearn's metrics, nominal coverage on synthetic paired predictions, verdicts."""

from __future__ import annotations

import re

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from cola import bootstrap as pb

N_TEST = 1043  # CoLA's test split


def population(size: int, base_right: float, new_right: float, seed: int = 1):
    """Labels and two models' predictions; one hardness per sentence makes their errors correlated, as two
    fine-tunings of one model are."""
    rng = np.random.default_rng(seed)
    labels = rng.random(size) < 0.7  # CoLA is ~70 % acceptable
    hardness = rng.random(size)
    base_ok = hardness < base_right
    new_ok = (hardness + rng.normal(0, 0.1, size)) < new_right
    return labels, np.where(base_ok, labels, ~labels), np.where(new_ok, labels, ~labels)


def truth(labels, base, new) -> dict[str, float]:
    metrics = {"mcc": matthews_corrcoef, "accuracy": accuracy_score}
    found = {name: fn(labels, new) - fn(labels, base) for name, fn in metrics.items()}
    found["f1_macro"] = f1_score(labels, new, average="macro") - f1_score(labels, base, average="macro")
    return found


def test_scores_are_sklearns():
    labels, base, new = population(N_TEST, 0.72, 0.76)
    changes = pb.paired_bootstrap(labels, base, new, resamples=10)
    assert changes["mcc"].base == pytest.approx(matthews_corrcoef(labels, base), abs=1e-12)
    assert changes["accuracy"].new == pytest.approx(accuracy_score(labels, new), abs=1e-12)
    assert changes["f1_macro"].new == pytest.approx(f1_score(labels, new, average="macro"), abs=1e-12)
    # a constant prediction: sklearn's MCC is 0, not NaN
    assert pb.paired_bootstrap(labels, np.ones(N_TEST), new, resamples=10)["mcc"].base == 0.0


def test_interval_covers_the_true_difference_at_about_the_nominal_rate():
    """200 test sets drawn from one large population with a known difference (+4 points of accuracy)."""
    labels, base, new = population(200_000, 0.72, 0.76)
    true = truth(labels, base, new)
    assert true["mcc"] > 0.05  # a real difference, not 0
    rng = np.random.default_rng(7)
    covered = {metric: 0 for metric in pb.METRICS}
    repetitions = 200
    for rep in range(repetitions):
        drawn = rng.choice(labels.size, N_TEST, replace=False)
        changes = pb.paired_bootstrap(labels[drawn], base[drawn], new[drawn], seed=rep)
        for metric, change in changes.items():
            covered[metric] += change.low <= true[metric] <= change.high
    rates = {metric: count / repetitions for metric, count in covered.items()}
    assert all(0.9 <= rate <= 0.99 for rate in rates.values()), rates


def test_identical_revisions_are_within_noise_around_zero():
    labels, base, _ = population(N_TEST, 0.72, 0.76)
    for metric, change in pb.paired_bootstrap(labels, base, base.copy()).items():
        assert change.diff == 0 and change.low <= 0 <= change.high, metric
        assert change.verdict == "within noise"


def test_clear_changes_get_a_verdict_and_a_small_one_does_not():
    labels, base, new = population(N_TEST, 0.60, 0.85)
    assert {c.verdict for c in pb.paired_bootstrap(labels, base, new).values()} == {"better"}
    assert {c.verdict for c in pb.paired_bootstrap(labels, new, base).values()} == {"worse"}
    slightly = base.copy()
    slightly[:3] = labels[:3]  # at most 3 sentences of 1,043 fixed
    assert {c.verdict for c in pb.paired_bootstrap(labels, base, slightly).values()} == {"within noise"}


def test_seeded_intervals_repeat():
    labels, base, new = population(N_TEST, 0.72, 0.76)
    assert pb.paired_bootstrap(labels, base, new) == pb.paired_bootstrap(labels, base, new)
    assert pb.paired_bootstrap(labels, base, new) != pb.paired_bootstrap(labels, base, new, seed=1)


CSV = 'sentence,label,pred,prob_acceptable\n"a, b",1,1,0.9\nc,0,1,0.6\nd,1,0,0.2\n'


def test_predictions_are_paired_by_sentence_even_reordered():
    base = pb.read_predictions(CSV, "base")
    assert base.sentences == ["a, b", "c", "d"] and base.labels.tolist() == [True, False, True]
    shuffled = 'sentence,label,pred,prob_acceptable\nd,1,1,0.9\n"a, b",1,0,0.1\nc,0,0,0.3\n'
    labels, old, new = pb.pair(base, pb.read_predictions(shuffled, "new"))
    by_sentence = dict(zip(sorted(base.sentences), zip(labels, old, new, strict=True), strict=True))
    assert by_sentence == {"a, b": (True, True, False), "c": (False, True, False), "d": (True, False, True)}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sentence,label\nx,1\n", "base: no rows or no column(s) pred"),
        ("sentence,label,pred\n", "base: no rows or no column(s)"),
        ("sentence,label,pred\nx,1,yes\n", "base: label/pred must be 0 or 1"),
        ("sentence,label,pred\nx,1,2\n", "base: label/pred must be 0 or 1"),
    ],
)
def test_unusable_predictions_say_why(text, message):
    with pytest.raises(pb.PredictionsError, match="^" + re.escape(message)):
        pb.read_predictions(text, "base")


def test_different_test_sets_are_not_paired():
    base = pb.read_predictions(CSV, "base")
    other = pb.read_predictions(CSV.replace("c,0", "e,0"), "new")
    with pytest.raises(pb.PredictionsError, match=r"the test sets differ \(3 vs 3 sentences\): not paired"):
        pb.pair(base, other)


def test_one_models_interval_holds_its_sklearn_scores_and_covers_the_population_value():
    """The card's interval: the point value is sklearn's; over many test sets drawn from one population the
    95 % interval covers the population MCC about 95 % of the time."""
    labels, _, preds = population(200_000, 0.7, 0.8)
    truth = matthews_corrcoef(labels, preds)
    covered = []
    for rep in range(100):
        drawn = np.random.default_rng(100 + rep).integers(0, labels.size, N_TEST)
        found = pb.interval(labels[drawn], preds[drawn], resamples=1000, seed=rep)
        assert found["mcc"].value == pytest.approx(matthews_corrcoef(labels[drawn], preds[drawn]))
        assert found["accuracy"].value == pytest.approx(accuracy_score(labels[drawn], preds[drawn]))
        assert found["f1_macro"].value == pytest.approx(f1_score(labels[drawn], preds[drawn], average="macro"))
        covered.append(found["mcc"].low <= truth <= found["mcc"].high)
    assert 0.88 <= np.mean(covered) <= 0.99


def test_interval_of_a_perfect_model_is_a_point_and_bad_input_says_why():
    labels = np.array([True, False] * 50)
    assert pb.interval(labels, labels)["mcc"] == pb.Interval(1.0, 1.0, 1.0)
    with pytest.raises(pb.PredictionsError, match=r"equal, non-empty lengths"):
        pb.interval(labels, labels[:10])
