"""How many model calls run at once: COLA_MODEL_CALLS, or by default enough single-threaded calls to fill the cores."""

from __future__ import annotations

import os

import pytest

from app.settings import Settings


@pytest.fixture
def four_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)


@pytest.mark.parametrize(
    ("ort_threads", "model_calls", "expected"),
    [(1, 0, 4), (2, 0, 2), (3, 0, 1), (0, 0, 1), (1, 1, 1), (2, 3, 3)],
    ids=["1 thread fills 4 cores", "2 threads", "3 threads", "ORT's own threads", "set to 1", "set to 3"],
)
def test_concurrent_calls(four_cores, ort_threads, model_calls, expected):
    assert Settings(ort_threads=ort_threads, model_calls=model_calls).concurrent_calls == expected


def test_model_calls_from_the_environment(four_cores, monkeypatch):
    monkeypatch.setenv("COLA_MODEL_CALLS", "1")
    assert Settings.from_env().concurrent_calls == 1
    monkeypatch.delenv("COLA_MODEL_CALLS")
    assert Settings.from_env().concurrent_calls == 4
    monkeypatch.setenv("COLA_MODEL_CALLS", "two")
    with pytest.raises(ValueError, match="COLA_MODEL_CALLS='two' must be an integer"):
        Settings.from_env()
