"""Model tier: behavioural tests of the trained, served model (minimal pairs, directional, invariance).

Runs on the pipeline's bundle (artifacts/bundle, or COLA_MODEL_BUNDLE); without one every test here is skipped and
listed under "trained-model" in the run's summary. The floors are what the committed model scores
(docs/experiments.md) less a small margin for int8 kernels that differ between CPUs: a retrained model that
regresses fails here."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from cola import behaviour
from cola.behaviour import FLOORS, MAX_PERIOD_MEDIAN_CHANGE, MAX_WHITESPACE_CHANGE
from contract.bundle import CONFIG, write_manifest
from runtime.predictor import BundlePredictor
from tests.conftest_bundle import cola_rows


@pytest.fixture
def predictor(trained_bundle) -> BundlePredictor:
    return BundlePredictor(trained_bundle)


@pytest.fixture
def test_sentences(trained_test_split) -> pd.DataFrame:  # GLUE validation; a missing split is a skipped tier
    return pd.read_parquet(trained_test_split)


def test_minimal_pairs_prefer_the_acceptable_sentence(predictor):
    share, by_phenomenon = behaviour.minimal_pairs(predictor)
    print(f"minimal pairs: {share:.3f} {by_phenomenon}")
    assert share >= FLOORS["minimal_pairs"], by_phenomenon


def test_shuffling_the_words_of_acceptable_sentences_lowers_their_score(predictor, test_sentences):
    acceptable = test_sentences.loc[test_sentences["label"] == 1, "sentence"].tolist()
    share, n = behaviour.shuffled_scores_lower(predictor, acceptable)
    print(f"shuffled scores lower: {share:.3f} of {n}")
    assert n > 300 and share >= FLOORS["shuffled_lower"]


def test_a_final_period_changes_neither_label_nor_score_much(predictor, test_sentences):
    same_label, median_change = behaviour.final_period_invariance(predictor, test_sentences["sentence"].tolist())
    print(f"final period: same label {same_label:.3f}, median |dP| {median_change:.4f}")
    assert same_label >= FLOORS["period_same_label"] and median_change <= MAX_PERIOD_MEDIAN_CHANGE


def test_trailing_whitespace_changes_nothing(predictor):
    sentences = pd.read_csv(behaviour.PAIRS, sep="\t")["acceptable"].tolist()
    assert behaviour.trailing_whitespace_change(predictor, sentences) <= MAX_WHITESPACE_CHANGE


def test_the_bundles_model_card_reports_what_this_tier_measures(predictor, test_sentences):
    """The card export_onnx wrote into the bundle: every behavioural check passed and each score is what this tier
    measures on the same bundle; its MCC is the served variant's."""
    card = predictor.card
    assert card is not None, "the committed bundle has no model card: re-run `dvc repro export_onnx`"
    assert all(check["passed"] for check in card["behaviour"].values()), card["behaviour"]
    assert card["behaviour"]["minimal_pairs"]["score"] == round(behaviour.minimal_pairs(predictor)[0], 4)
    assert card["evaluation"]["n"] == len(test_sentences)
    mcc = card["evaluation"]["metrics"]["mcc"]
    assert mcc["low"] < mcc["value"] < mcc["high"]
    assert mcc["value"] == round(predictor.manifest["metrics"]["test"]["mcc"], 4)


def test_the_floors_catch_a_bundle_whose_labels_are_swapped(trained_bundle, tmp_path):
    """A realistic breakage (label order in config.json reversed): the same checks must fail on it."""
    broken = shutil.copytree(trained_bundle, tmp_path / "swapped")
    config = json.loads((broken / CONFIG).read_text())
    (broken / CONFIG).write_text(json.dumps(config | {"labels": config["labels"][::-1]}))
    write_manifest(broken, {}, {})
    share, _ = behaviour.minimal_pairs(BundlePredictor(broken))
    assert share < FLOORS["minimal_pairs"]


def test_the_floors_catch_an_untrained_model(tiny_bundle):
    """Runs everywhere (the tests' random tiny bundle): a model that learnt nothing fails the floors."""
    predictor = BundlePredictor(tiny_bundle)
    sentences, labels = cola_rows(200)
    acceptable = [s for s, label in zip(sentences, labels, strict=True) if label == 1]
    shuffled, _ = behaviour.shuffled_scores_lower(predictor, acceptable)
    pairs, _ = behaviour.minimal_pairs(predictor)
    assert shuffled < FLOORS["shuffled_lower"] and pairs < FLOORS["minimal_pairs"]
