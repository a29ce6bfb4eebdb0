"""Shared fixtures. Test tiers (Made-With-ML style): code (unit/), data (real CoLA checks in unit/test_data.py),
model (LightningModule, export parity), and slow integration tiers (DVC CLI, containers, AWS emulation, browser)."""

from pathlib import Path

import pytest

from cola.config import ROOT

pytest_plugins = ["tests.conftest_bundle"]

SHARED_COLA = ROOT.parent / "shared" / "data" / "cola"


@pytest.fixture(scope="session")
def cola_dir() -> Path:
    """The read-only offline CoLA copy beside the repo (CI lays ../shared next to the clone)."""
    if not (SHARED_COLA / "train.tsv").is_file():
        pytest.fail(f"offline CoLA copy not found at {SHARED_COLA}: the data tier needs ../shared/data/cola")
    return SHARED_COLA
