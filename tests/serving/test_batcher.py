"""Micro-batching and admission control: merged model calls, bounded queued work, the queue-time budget,
cancelled jobs never computed."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from app.batcher import MicroBatcher, Overloaded
from runtime.predictor import Encoded


def encoded(*names: str, tokens: int = 4) -> Encoded:
    """Rows named by their first id (1 = "yes", 0 = "no", others are labels for the test), `tokens` long."""
    ids = [[{"yes": 1, "no": 0}.get(name, hash(name) % 1000 + 2)] * tokens for name in names]
    return Encoded(ids, [[0] * tokens for _ in names], [tokens] * len(names), [0.0] * len(names))


class GatedModel:
    """Stands in for the model so the test decides when a call finishes (the real one is too fast to
    observe queueing deterministically); records the first id of every row of each call."""

    def __init__(self, open_: bool = False):
        self.calls: list[list[int]] = []
        self.gate = threading.Event()
        if open_:
            self.gate.set()

    def __call__(self, batch: Encoded) -> np.ndarray:
        self.calls.append([row[0] for row in batch.ids])
        self.gate.wait(timeout=30)
        return np.array([[0.0, 1.0] if row[0] == 1 else [1.0, 0.0] for row in batch.ids], dtype=np.float32)


def batcher_for(
    model, max_batch=8, max_queued_tokens=10_000, queue_budget_s=10.0, stats=None, max_calls=1
) -> MicroBatcher:
    on_batch = stats.append if stats is not None else lambda s: None
    return MicroBatcher(model, max_batch, max_queued_tokens, queue_budget_s, on_batch, max_calls)


async def started(model: GatedModel, calls: int = 1, limit_s: float = 10) -> None:
    """Wait until `calls` model calls are running (blocked on the gate); fail, not hang, if they never start."""
    deadline = time.monotonic() + limit_s
    while len(model.calls) < calls:
        assert time.monotonic() < deadline, f"{len(model.calls)} model call(s) started within {limit_s} s, not {calls}"
        await asyncio.sleep(0.001)


def test_concurrent_requests_share_a_call_and_get_their_own_rows():
    model, stats = GatedModel(), []
    batcher = batcher_for(model, stats=stats)

    async def scenario():
        first = batcher.submit(encoded("yes"))
        await started(model)
        rest = [batcher.submit(encoded("yes", "no")) for _ in range(3)]
        model.gate.set()
        return await first.future, await asyncio.gather(*(job.future for job in rest))

    first, rest = asyncio.run(scenario())
    assert model.calls == [[1], [1, 0, 1, 0, 1, 0]]  # three requests, one call
    assert [s.sentences for s in stats] == [1, 6] and len(stats[1].queue_seconds) == 3
    assert first.tolist() == [[0.0, 1.0]]
    assert all(rows.tolist() == [[0.0, 1.0], [1.0, 0.0]] for rows in rest)
    assert batcher.queued_tokens == 0 and batcher.tokens_per_s > 0  # measured from the calls


def test_with_two_calls_a_second_request_runs_beside_the_first_and_a_third_waits():
    model = GatedModel()
    batcher = batcher_for(model, max_batch=1, max_calls=2)

    async def scenario():
        jobs = [batcher.submit(encoded(name)) for name in ("yes", "no")]
        await started(model, calls=2)  # both running at once: neither waited for the other
        jobs.append(batcher.submit(encoded("third")))
        queued_while_both_run = batcher.queued_tokens
        batcher.tokens_per_s = 4.0  # per call: two calls drain 8 tokens/s
        wait = batcher.estimated_wait_s()
        model.gate.set()
        await asyncio.gather(*(job.future for job in jobs))
        return queued_while_both_run, wait

    queued, wait = asyncio.run(scenario())
    assert [call[0] for call in model.calls[:2]] == [1, 0] and len(model.calls) == 3
    assert queued == 4  # the third waited for a free call
    assert wait == pytest.approx((4 + 8) / 8)  # queued + running tokens over both calls' rate
    assert batcher.running_tokens == 0 and batcher.queued_tokens == 0


def test_a_worker_takes_the_next_queued_work_itself_while_the_event_loop_is_busy():
    # under load the loop is busy parsing requests; the model must not wait for it to hand over the next batch
    model = GatedModel()
    batcher = batcher_for(model)

    async def scenario():
        first = batcher.submit(encoded("yes"))
        await started(model)
        second = batcher.submit(encoded("no"))
        model.gate.set()
        deadline = time.monotonic() + 10  # a hang guard, not a speed assertion
        while len(model.calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.001)  # blocks the event loop: no callback of it can run meanwhile
        calls_while_the_loop_was_blocked = len(model.calls)
        return calls_while_the_loop_was_blocked, await first.future, await second.future

    calls, first, second = asyncio.run(scenario())
    assert calls == 2 and model.calls == [[1], [0]]
    assert first.tolist() == [[0.0, 1.0]] and second.tolist() == [[1.0, 0.0]]
    assert batcher.queued_tokens == 0 and batcher.running_tokens == 0


def test_a_failing_on_batch_is_logged_and_the_worker_goes_on(log_lines):
    model = GatedModel()

    def broken_metrics(stats):
        raise RuntimeError("metrics broke")

    batcher = MicroBatcher(model, 8, 10_000, 10.0, broken_metrics, 1)

    async def scenario():
        first = batcher.submit(encoded("yes"))
        await started(model)
        second = batcher.submit(encoded("no"))  # queued: the worker takes it after the first call's on_batch
        model.gate.set()
        return await asyncio.wait_for(asyncio.gather(first.future, second.future), timeout=10)

    first, second = asyncio.run(scenario())
    assert first.tolist() == [[0.0, 1.0]] and second.tolist() == [[1.0, 0.0]]
    errors = log_lines("error")
    assert len(errors) == 2 and all("metrics broke" in e["exception"] for e in errors)


def test_max_batch_splits_calls_and_failures_reach_every_waiter():
    model = GatedModel(open_=True)
    batcher = batcher_for(model, max_batch=2)

    async def scenario():
        return await asyncio.gather(*(batcher.submit(encoded("yes")).future for _ in range(5)))

    assert len(asyncio.run(scenario())) == 5 and all(len(call) <= 2 for call in model.calls)

    def broken(batch):
        raise RuntimeError("model failed")

    failing = batcher_for(broken, max_batch=4)

    async def failing_scenario():
        jobs = [failing.submit(encoded("a")), failing.submit(encoded("b"))]
        return await asyncio.gather(*(job.future for job in jobs), return_exceptions=True)

    assert [str(e) for e in asyncio.run(failing_scenario())] == ["model failed", "model failed"]
    assert failing.queued_tokens == 0 and failing.running_tokens == 0


def test_one_request_larger_than_max_batch_or_the_token_limit_runs_when_idle():
    model = GatedModel(open_=True)
    batcher = batcher_for(model, max_batch=2, max_queued_tokens=5)

    async def scenario():
        return await batcher.submit(encoded("yes", "yes", "no", tokens=4)).future  # 12 tokens > 5

    assert asyncio.run(scenario()).shape == (3, 2)


def test_queued_tokens_over_the_limit_are_refused_at_once():
    model = GatedModel()
    batcher = batcher_for(model, max_queued_tokens=10)

    async def scenario():
        running = batcher.submit(encoded("yes", tokens=50))  # running work does not count against the limit
        await started(model)
        queued = batcher.submit(encoded("no", tokens=6))
        with pytest.raises(Overloaded) as refused:
            batcher.submit(encoded("no", tokens=6))  # 6 + 6 > 10
        small = batcher.submit(encoded("yes", tokens=4))  # 6 + 4 fits
        model.gate.set()
        await asyncio.gather(running.future, queued.future, small.future)
        return refused.value

    refused = asyncio.run(scenario())
    assert refused.reason == "queue_full" and refused.retry_after_s >= 1
    assert "6 tokens" in refused.message and "limit of 10" in refused.message
    assert model.calls == [[1], [0, 1]]


def test_estimated_wait_over_the_budget_is_refused():
    model = GatedModel()
    batcher = batcher_for(model, queue_budget_s=0.5)

    async def scenario():
        running = batcher.submit(encoded("yes", tokens=50))  # no rate measured yet: admitted
        await started(model)
        batcher.tokens_per_s = 100.0  # as if measured: 50 running tokens = 0.5 s
        with pytest.raises(Overloaded) as refused:
            batcher.submit(encoded("no", tokens=10))  # (50 + 10) / 100 = 0.6 s > 0.5 s
        model.gate.set()
        await running.future
        return refused.value

    refused = asyncio.run(scenario())
    assert refused.reason == "queue_budget" and "600 ms" in refused.message and "500 ms" in refused.message
    assert refused.retry_after_s == 1


def test_a_wait_exactly_at_the_budget_is_admitted_and_one_token_more_is_refused():
    model = GatedModel()
    batcher = batcher_for(model, queue_budget_s=2.0)

    async def scenario():
        running = batcher.submit(encoded("yes", tokens=150))
        await started(model)
        batcher.tokens_per_s = 100.0  # as if measured: 150 running tokens = 1.5 s
        at_budget = batcher.submit(encoded("no", tokens=50))  # (150 + 50) / 100 = 2.0 s: the budget, not over it
        with pytest.raises(Overloaded) as refused:
            batcher.submit(encoded("no", tokens=1))  # (150 + 50 + 1) / 100 = 2.01 s
        model.gate.set()
        await asyncio.gather(running.future, at_budget.future)
        return refused.value

    refused = asyncio.run(scenario())
    assert refused.reason == "queue_budget"
    assert "in about 2010 ms, over the 2000 ms budget" in refused.message and refused.retry_after_s == 2
    assert model.calls == [[1], [0]]


def test_before_any_rate_is_measured_a_busy_batcher_still_admits():
    # no model call has ended yet, so there is no estimate to refuse on: the token limit alone bounds the queue
    model = GatedModel()
    batcher = batcher_for(model, queue_budget_s=0.001)

    async def scenario():
        running = batcher.submit(encoded("yes"))
        await started(model)
        queued = batcher.submit(encoded("no"))  # busy, yet admitted: nothing says it would wait past the budget
        model.gate.set()
        return await asyncio.gather(running.future, queued.future)

    assert [rows.tolist() for rows in asyncio.run(scenario())] == [[[0.0, 1.0]], [[1.0, 0.0]]]


def test_an_idle_batcher_admits_a_request_whose_own_time_passes_the_budget():
    model = GatedModel(open_=True)
    batcher = batcher_for(model, max_queued_tokens=5, queue_budget_s=0.5)
    batcher.tokens_per_s = 100.0  # as if measured: the request alone is 2 s of work, four times the budget

    async def scenario():
        return await batcher.submit(encoded("yes", tokens=200)).future

    assert asyncio.run(scenario()).tolist() == [[0.0, 1.0]]  # refusing it would refuse it forever


def test_a_cancelled_job_is_never_computed_and_releases_its_tokens():
    model = GatedModel()
    batcher = batcher_for(model)

    async def scenario():
        running = batcher.submit(encoded("yes"))
        await started(model)
        gone = batcher.submit(encoded("gone", tokens=7))
        kept = batcher.submit(encoded("no"))
        assert batcher.queued_tokens == 11
        batcher.cancel(gone)
        assert batcher.queued_tokens == 4
        batcher.cancel(running)  # already running: its result is simply dropped
        model.gate.set()
        await started(model, 2)
        return await kept.future, running.future.cancelled()

    kept, running_cancelled = asyncio.run(scenario())
    assert model.calls == [[1], [0]]  # "gone" never reached the model
    assert kept.tolist() == [[1.0, 0.0]] and running_cancelled
    assert batcher.queued_tokens == 0


pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
