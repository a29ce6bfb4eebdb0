"""Shared fixtures. Test tiers (Made-With-ML style): code (unit/), data (real CoLA checks in unit/test_data.py),
model (LightningModule, export parity), and slow integration tiers (DVC CLI, containers, AWS emulation, browser)."""

from pathlib import Path

import pytest
from hypothesis import settings

from cola.config import ROOT

pytest_plugins = ["tests.conftest_bundle"]

# Property tests (hypothesis, schemathesis; marker `fuzz`) draw the same examples on every run by default: the seed
# comes from each test's name, and no .hypothesis/ database replays what an earlier local run found. Loaded here,
# before test modules are imported, so every @settings(...) inherits it. `--hypothesis-profile=fuzz` (hypothesis'
# pytest option) draws new random examples instead; Hypothesis prints the seed of a failure (schemathesis a curl).
settings.register_profile("repro", derandomize=True, database=None, print_blob=True)
settings.register_profile("fuzz", derandomize=False, database=None, print_blob=True)
settings.load_profile("repro")

SHARED_COLA = ROOT.parent / "shared" / "data" / "cola"


@pytest.fixture(scope="session")
def cola_dir() -> Path:
    """The read-only offline CoLA copy beside the repo (CI lays ../shared next to the clone)."""
    if not (SHARED_COLA / "train.tsv").is_file():
        pytest.fail(f"offline CoLA copy not found at {SHARED_COLA}: the data tier needs ../shared/data/cola")
    return SHARED_COLA
