"""Micro-batching: requests that arrive while a batch runs are merged into the next model call."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from app.batcher import MicroBatcher
from app.predictor import Batch


class GatedModel:
    """Stands in for the model so the test decides when a call finishes (the real one is too fast to
    observe merging deterministically); records the texts of each call."""

    def __init__(self):
        self.calls: list[list[str]] = []
        self.gate = threading.Event()

    def __call__(self, texts: list[str]) -> Batch:
        self.calls.append(list(texts))
        self.gate.wait(timeout=30)
        probs = np.array([[0.0, 1.0] if t.startswith("yes") else [1.0, 0.0] for t in texts], dtype=np.float32)
        return Batch(probs, [len(t) for t in texts], [0.0] * len(texts))


def test_concurrent_requests_share_a_call_and_get_their_own_rows():
    model = GatedModel()
    batches: list[int] = []
    batcher = MicroBatcher(model, max_batch=8, on_batch=lambda size, seconds: batches.append(size))

    async def scenario():
        first = asyncio.create_task(batcher(["yes 0"]))
        while not model.calls:  # the first call is running (blocked on the gate)
            await asyncio.sleep(0.001)
        rest = [asyncio.create_task(batcher([f"yes {i}", f"no {i}"])) for i in range(1, 4)]
        await asyncio.sleep(0.01)
        model.gate.set()
        return await first, await asyncio.gather(*rest)

    first, rest = asyncio.run(scenario())
    assert model.calls[0] == ["yes 0"]
    assert model.calls[1] == ["yes 1", "no 1", "yes 2", "no 2", "yes 3", "no 3"]  # three requests, one call
    assert batches == [1, 6]
    assert first.batch.probs.tolist() == [[0.0, 1.0]]
    for i, result in enumerate(rest, start=1):
        assert result.batch.probs.tolist() == [[0.0, 1.0], [1.0, 0.0]]
        assert result.batch.tokens == [len(f"yes {i}"), len(f"no {i}")]
        assert result.batch_size == 6


def test_max_batch_splits_calls_and_failures_reach_every_waiter():
    model = GatedModel()
    model.gate.set()
    batcher = MicroBatcher(model, max_batch=2, on_batch=lambda size, seconds: None)

    async def scenario():
        return await asyncio.gather(*(batcher([f"yes {i}"]) for i in range(5)))

    results = asyncio.run(scenario())
    assert len(results) == 5 and all(len(call) <= 2 for call in model.calls)

    def broken(texts):
        raise RuntimeError("model failed")

    failing = MicroBatcher(broken, max_batch=4, on_batch=lambda size, seconds: None)

    async def failing_scenario():
        return await asyncio.gather(failing(["a"]), failing(["b"]), return_exceptions=True)

    assert [str(e) for e in asyncio.run(failing_scenario())] == ["model failed", "model failed"]


def test_one_request_larger_than_max_batch_still_runs():
    model = GatedModel()
    model.gate.set()
    batcher = MicroBatcher(model, max_batch=2, on_batch=lambda size, seconds: None)
    result = asyncio.run(batcher(["yes a", "yes b", "no c"]))
    assert result.batch.probs.shape == (3, 2)


pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
