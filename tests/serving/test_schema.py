"""Schemathesis: generated requests (valid and invalid) from the app's own OpenAPI schema, sent to a real
`python -m app` server. No input may produce a server error, and every answer must match the schema.

Derandomized by the `repro` hypothesis profile (tests/conftest.py): every run sends the same requests.
`python -m pytest -m fuzz --hypothesis-profile=fuzz` sends new random ones."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings


@pytest.fixture
def api_schema(live_server):
    return schemathesis.openapi.from_url(f"{live_server}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.slow
@pytest.mark.fuzz
@schema.parametrize()
# No derandomize/database here: those come from the loaded profile, which this @settings inherits.
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_schema_conformance(case):
    case.call_and_validate()
