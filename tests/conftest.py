"""Shared fixtures and tier reporting. Test tiers (Made-With-ML style): code (unit/), data (the CoLA-format
fixture, plus real-CoLA checks in unit/test_data.py), model (LightningModule, export parity), and slow integration
tiers (DVC CLI, containers, AWS emulation, browser).

A tier whose tools are missing is skipped with the command that installs them, and the run ends with a list of the
skipped tiers. COLA_REQUIRE_ALL_TIERS=1 (set by .ci/run) turns every such skip, and a missing full CoLA copy, into
a failure: CI must not pass by testing less."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

from cola.paths import ROOT

pytest_plugins = ["tests.conftest_bundle"]

# Property tests (hypothesis, schemathesis; marker `fuzz`) draw the same examples on every run by default: the seed
# comes from each test's name, and no .hypothesis/ database replays what an earlier local run found. Loaded here,
# before test modules are imported, so every @settings(...) inherits it. `--hypothesis-profile=fuzz` (hypothesis'
# pytest option) draws new random examples instead; Hypothesis prints the seed of a failure (schemathesis a curl).
settings.register_profile("repro", derandomize=True, database=None, print_blob=True)
settings.register_profile("fuzz", derandomize=False, database=None, print_blob=True)
settings.load_profile("repro")

# Small made-up CoLA-format data (tests/fixtures/make_cola_fixture.py): drives every test that does not need the
# real corpus, so the suite runs on any machine.
FIXTURE_COLA = Path(__file__).parent / "fixtures" / "cola"
# The read-only full CoLA copy beside the repo (this project's CI lays ../shared next to the clone).
SHARED_COLA = Path(os.environ.get("COLA_SHARED_DIR", ROOT.parent / "shared" / "data" / "cola"))
REQUIRE_ALL = os.environ.get("COLA_REQUIRE_ALL_TIERS") == "1"

PIP_DEV = "install: python3 -m pip install -r requirements-dev.txt"
CONTAINER_BASE_IMAGE = "localhost/cola-base:bookworm"


def _program(name: str) -> bool:
    # pip-installed tools live beside the interpreter even when its bin/ is not on PATH
    return bool(shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent)))


def _chromium() -> bool:
    return Path("/usr/bin/chromium").is_file()  # where tests/monitoring/test_report_browser.py looks for it


def _module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _base_image() -> bool:
    if not shutil.which("podman"):
        return True  # cannot tell; reported as "podman" missing, and podman-setup.sh installs both
    result = subprocess.run(["podman", "image", "exists", CONTAINER_BASE_IMAGE], capture_output=True, timeout=60)
    return result.returncode == 0


# tier -> (what to check: label -> check, how to install it). Checked once, when the first test of the tier runs.
TIERS: dict[str, tuple[dict[str, object], str]] = {
    "container": (
        {
            "podman": lambda: _program("podman"),
            "runc": lambda: _program("runc"),
            f"base image {CONTAINER_BASE_IMAGE}": _base_image,
        },
        "install: sudo bash docker/podman-setup.sh (Debian/Ubuntu: podman, runc, a debootstrap base image)",
    ),
    "browser": (
        {"/usr/bin/chromium": _chromium, "playwright": lambda: _module("playwright")},
        "install: sudo apt-get install chromium && python3 -m pip install -r requirements-dev.txt",
    ),
    "dvc": (
        {"git": lambda: _program("git"), "dvc": lambda: _program("dvc")},
        "install: sudo apt-get install git && python3 -m pip install -r requirements-dev.txt",
    ),
    "prometheus": (
        {name: (lambda n=name: _program(n)) for name in ("prometheus", "promtool", "prometheus-alertmanager")},
        "install: sudo apt-get install prometheus prometheus-alertmanager",
    ),
    "moto": ({"moto_server": lambda: _program("moto_server")}, PIP_DEV),
    "actionlint": ({"actionlint": lambda: _program("actionlint")}, PIP_DEV),
    "shellcheck": ({"shellcheck": lambda: _program("shellcheck")}, "install: sudo apt-get install shellcheck"),
    "awslambdaric": ({"awslambdaric": lambda: _module("awslambdaric")}, PIP_DEV),
    "mermaid": (  # the Mermaid CLI renders the PR comment's charts with the system Chromium (.ci/mermaid/)
        {
            ".venv-tools/mermaid (mmdc)": lambda: (ROOT / ".venv-tools/mermaid/node_modules/.bin/mmdc").is_file(),
            "/usr/bin/chromium": _chromium,
        },
        "install: sudo apt-get install chromium nodejs npm && bash .ci/install.sh (npm ci into .venv-tools/mermaid)",
    ),
    "iac": (  # in their own venvs: their pins conflict with moto's and each other's (.ci/install.sh)
        {
            f".venv-tools/{tool}": (lambda t=tool: (ROOT / ".venv-tools" / t / "bin" / t).is_file())
            for tool in ("sam", "checkov")
        },
        "install: bash .ci/install.sh (AWS SAM CLI, cfn-lint and checkov in .venv-tools/)",
    ),
}
# tiers by marker, then by test id prefix (the integration tests each run a different external program)
MARKER_TIERS = {"container": "container", "browser": "browser"}
PREFIX_TIERS = {
    "tests/integration/test_dvc_pipeline.py": ["dvc"],
    "tests/integration/test_plots_offline.py": ["dvc"],
    "tests/aws/test_dvc_remote.py": ["dvc", "moto"],
    "tests/aws/test_deploy_gate.py": ["dvc"],  # git + gto (a dvc dependency)
    "tests/aws/test_check_reviewed.py": ["dvc", "moto"],
    "tests/aws/test_pr_report.py": ["dvc"],
    "tests/aws/test_pr_report.py::test_charts_render": ["mermaid"],
    "tests/aws/test_pr_charts.py": ["mermaid"],
    "tests/aws/test_workflow_runs.py": ["dvc", "moto"],
    "tests/aws/test_train_workflow.py": ["dvc", "moto"],
    "tests/aws/test_workflows.py::test_actionlint": ["actionlint"],
    "tests/aws/test_workflows.py::test_actionlint_runs_shellcheck": ["shellcheck"],
    "tests/monitoring/test_cloudwatch.py": ["moto"],
    "tests/monitoring/test_prometheus.py": ["prometheus"],
    "tests/serving/test_lambda.py::test_real_runtime_client": ["awslambdaric"],
    "tests/aws/test_templates.py::test_sam_validate": ["iac"],
    "tests/aws/test_templates.py::test_checkov": ["iac"],
    "tests/aws/test_templates.py::test_cfn_lint": ["iac"],
    "tests/serving/test_sam_local.py": ["iac"],
}
FULL_DATA_TIER = "full-data"
FULL_DATA_HOW = (
    f"to run it: put the full CoLA copy (train.tsv, validation.tsv) at {SHARED_COLA}, or point COLA_SHARED_DIR at one"
)


def tiers_of(item: pytest.Item) -> list[str]:
    names = [tier for marker, tier in MARKER_TIERS.items() if item.get_closest_marker(marker)]
    return names + [tier for prefix, tiers in PREFIX_TIERS.items() if item.nodeid.startswith(prefix) for tier in tiers]


missing_cache: dict[str, list[str]] = {}
skipped_tiers: dict[str, dict] = {}  # tier -> {"missing": [...], "remedy": str, "tests": int}


def missing_for(tier: str) -> list[str]:
    if tier not in missing_cache:
        checks, _ = TIERS[tier]
        missing_cache[tier] = [label for label, check in checks.items() if not check()]
    return missing_cache[tier]


def skip_tier(tier: str, missing: list[str], remedy: str) -> None:
    """Skip the running test because its tier cannot run here; under COLA_REQUIRE_ALL_TIERS=1 fail instead."""
    entry = skipped_tiers.setdefault(tier, {"missing": missing, "remedy": remedy, "tests": 0})
    entry["tests"] += 1
    reason = f"{tier} tier: {', '.join(missing)} missing; {remedy}"
    if REQUIRE_ALL:
        pytest.fail(f"{reason} (COLA_REQUIRE_ALL_TIERS=1: every tier must run)", pytrace=False)
    pytest.skip(reason)


def pytest_runtest_setup(item: pytest.Item) -> None:
    for tier in tiers_of(item):
        missing = missing_for(tier)
        if missing:
            skip_tier(tier, missing, TIERS[tier][1])


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not skipped_tiers:
        return
    failed = REQUIRE_ALL
    verb = "FAILED (COLA_REQUIRE_ALL_TIERS=1)" if failed else "skipped"
    terminalreporter.section(f"test tiers {verb}", sep="=", yellow=not failed, red=failed)
    for tier, entry in sorted(skipped_tiers.items()):
        terminalreporter.write_line(f"{tier}: {entry['tests']} test(s) skipped; missing {', '.join(entry['missing'])}")
        terminalreporter.write_line(f"    {entry['remedy']}")


# The pipeline's own trained bundle: checks a random model cannot pass (behaviour, drift on real predictions).
TRAINED_BUNDLE = Path(os.environ.get("COLA_MODEL_BUNDLE", ROOT / "artifacts" / "bundle"))
TRAINED_MODEL_TIER = "trained-model"
TRAINED_MODEL_HOW = (
    "to run it: `make trained-model` (the committed model from the DVC remote, or trained: ~15 min on 2 cores), "
    "or point COLA_MODEL_BUNDLE at a bundle"
)


@pytest.fixture  # per test, so each skipped test is counted in the tier summary
def trained_bundle() -> Path:
    """The fine-tuned model's serving bundle. Required under COLA_REQUIRE_ALL_TIERS (.ci/run runs
    `make trained-model` first); elsewhere skipped and listed, with the command that provides it."""
    from contract.bundle import BundleError, verify_manifest

    try:
        verify_manifest(TRAINED_BUNDLE)
    except BundleError as exc:
        skip_tier(TRAINED_MODEL_TIER, [f"a trained bundle at {TRAINED_BUNDLE} ({exc})"], TRAINED_MODEL_HOW)
    return TRAINED_BUNDLE


@pytest.fixture  # per test, like trained_bundle
def trained_test_split(trained_bundle) -> Path:
    """The test split the trained model is judged on (data/prepared/test.parquet): part of the trained-model tier,
    skipped and listed with it when absent."""
    split = ROOT / "data" / "prepared" / "test.parquet"
    if not split.is_file():
        skip_tier(TRAINED_MODEL_TIER, [f"the test split {split}"], TRAINED_MODEL_HOW)
    return split


@pytest.fixture(scope="session")
def cola_dir() -> Path:
    """The small CoLA-format fixture (always present; see tests/fixtures/make_cola_fixture.py)."""
    return FIXTURE_COLA


@pytest.fixture  # per test (a cheap check), so each skipped test is counted in the tier summary
def full_cola_dir() -> Path:
    """The full CoLA copy, for checks that only the real corpus can answer; skipped when it is not there."""
    if not (SHARED_COLA / "train.tsv").is_file() or not (SHARED_COLA / "validation.tsv").is_file():
        skip_tier(FULL_DATA_TIER, [f"CoLA at {SHARED_COLA}"], FULL_DATA_HOW)
    return SHARED_COLA
