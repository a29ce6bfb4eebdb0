"""The replay helper (tests/monitoring/streams.py) labels like the app: by the bundle's decision rule, so replayed
held-out data cannot look like label drift; and it says in one line when its data is missing."""

import os
import subprocess
import sys

import numpy as np
import pytest

from cola.paths import ROOT
from runtime.predictor import BundlePredictor
from tests.monitoring import streams


def test_records_carry_the_served_label_not_argmax(tiny_bundle):
    predictor = BundlePredictor(tiny_bundle)
    texts = streams.streams()["replay"]
    p_acceptable = predictor.predict_proba(texts)[:, predictor.positive]
    predictor.threshold = float(np.median(p_acceptable))  # a threshold away from 0.5 that splits these rows
    records = streams.prediction_records(predictor, texts)
    served = [predictor.labels[i] for i in predictor.decide(predictor.predict_proba(texts))]
    argmax = [predictor.labels[i] for i in predictor.predict_proba(texts).argmax(axis=1)]
    assert served != argmax, "the chosen threshold must make the two rules disagree, or this test cannot fail"
    assert [r["label"] for r in records] == served
    for record in records:  # as the app logs it: the probability of the label it served
        p = record["prob_acceptable"]
        assert record["confidence"] == pytest.approx(p if record["label"] == "acceptable" else 1 - p, abs=1e-6)


def test_missing_data_is_one_line(tiny_bundle, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tests.monitoring.streams", str(tiny_bundle), str(tmp_path / "out"), str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"streams: {tmp_path / 'validation.tsv'} does not exist: pass a CoLA-format folder (train.tsv, "
        f"validation.tsv) as the third argument, e.g. {streams.COLA_DIR} (the tests' fixture) or the full copy at "
        f"{streams.FULL_COLA_DIR}"
    )
