"""Fixtures for the monitoring tests: reference inputs built from the tests' CoLA-format fixture, served bundles,
ports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cola.paths import ROOT
from runtime.predictor import BundlePredictor
from tests.monitoring import streams


def write_reference(bundle_dir: Path, folder: Path) -> dict:
    """stats.json from the fixture's training file, a held-out split sampled from it (never the test split), and a
    params file whose monitor section is conf/monitor/default.yaml pointed at them."""
    predictor = BundlePredictor(bundle_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "stats.json").write_text(json.dumps(streams.reference_stats(predictor)))
    texts, labels = streams.read_tsv("train.tsv")
    # a quarter (prepare holds out 10 % of real CoLA's 8551 rows): enough rows for stable KS/PSI on the fixture
    pick = np.random.default_rng(42).choice(len(texts), len(texts) // 4, replace=False)
    pd.DataFrame({"sentence": [texts[i] for i in pick], "label": [labels[i] for i in pick]}).to_parquet(
        folder / "validation.parquet"
    )
    monitor = yaml.safe_load((ROOT / "conf" / "monitor" / "default.yaml").read_text())
    monitor.update(
        reference_stats=str(folder / "stats.json"),
        held_out=str(folder / "validation.parquet"),
        bundle_dir=str(bundle_dir),
        out_dir=str(folder / "out"),
    )
    (folder / "params.yaml").write_text(yaml.safe_dump({"monitor": monitor}))
    return {"predictor": predictor, "params": folder / "params.yaml", "out": folder / "out", "folder": folder}


@pytest.fixture(scope="session")
def tiny_reference(tiny_bundle, tmp_path_factory) -> dict:
    return write_reference(tiny_bundle, tmp_path_factory.mktemp("tiny_reference"))


@pytest.fixture  # per test, like trained_bundle (tests/conftest.py), whose skip it inherits
def trained_reference(trained_bundle, tmp_path_factory) -> dict:
    return write_reference(trained_bundle, tmp_path_factory.mktemp("trained_reference"))
