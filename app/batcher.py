"""Micro-batching with admission control: bounded queued work, a queue-time budget, cancellable jobs.

No timer: requests that arrive while the model is busy are merged into the next call. At concurrency 1
a request runs alone at once; under load one ONNX Runtime call serves many requests. Inference runs in
worker threads, so the event loop keeps accepting (and refusing) requests meanwhile; up to `max_calls`
model calls run at once (ONNX Runtime sessions are thread-safe), each on its own core. A worker that ends a
call takes the next queued work itself: under load the event loop is busy parsing requests, and a model that
waited for the loop to hand it the next batch would sit idle (scripts/bench_serving.py, section limit).

Work is measured in tokens the model will compute (`Encoded.cost`), not in requests: 64 long sentences
cost a hundred times one short one. A request is refused at once (`Overloaded`) when the queued tokens
would pass `max_queued_tokens` (memory stays bounded), or when the estimated time until its answer —
queued + running + its own tokens over the measured tokens/s — would pass `queue_budget_s` (accepted
requests keep their latency). An idle batcher always accepts. A cancelled job (deadline passed, client
gone) that has not started is never computed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from app.telemetry import log_event
from runtime.predictor import Encoded

SMOOTHING = 0.3  # weight of the newest model call in the tokens/s estimate


class Overloaded(Exception):
    def __init__(self, reason: str, retry_after_s: int, message: str):
        super().__init__(message)
        self.reason, self.retry_after_s, self.message = reason, retry_after_s, message


@dataclass(eq=False)
class Job:
    encoded: Encoded
    cost: int
    future: asyncio.Future
    started: bool = False  # taken into a model call: cancelling it no longer saves work
    enqueued_at: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class BatchStats:
    sentences: int  # in the model call
    seconds: float  # the call, in its worker thread
    queue_seconds: list[float]  # per job: from submit() to the start of the call


class MicroBatcher:
    """Admission and the queue live on the event loop's side; model calls in worker threads. Both sides touch
    the queue and the token counts under one lock; results go back to each request's loop."""

    def __init__(
        self,
        infer: Callable[[Encoded], np.ndarray],
        max_batch: int,
        max_queued_tokens: int,
        queue_budget_s: float,
        on_batch: Callable[[BatchStats], None] = lambda stats: None,
        max_calls: int = 1,
    ):
        self.infer = infer  # public: tests gate it
        self._max_batch = max_batch  # sentences merged into one call (the predictor splits it by length)
        self.max_queued_tokens = max_queued_tokens
        self.queue_budget_s = queue_budget_s
        self._on_batch = on_batch  # called in the worker thread, after each call
        self._queue: deque[Job] = deque()
        self.queued_tokens = 0  # in jobs not yet started and not cancelled
        self.running_tokens = 0
        self.tokens_per_s: float | None = None  # measured per call; None until the first call ends
        self.max_calls = max_calls
        self._calls = 0  # workers running model calls
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=max_calls, thread_name_prefix="model")

    @property
    def busy(self) -> bool:
        """Work is queued or running (an idle batcher admits anything)."""
        return bool(self.queued_tokens or self.running_tokens)

    def estimated_wait_s(self, extra_tokens: int = 0) -> float:
        if self.tokens_per_s is None:
            return 0.0
        return (self.queued_tokens + self.running_tokens + extra_tokens) / (self.tokens_per_s * self.max_calls)

    def submit(self, encoded: Encoded) -> Job:
        """Queue `encoded` or raise Overloaded; await `job.future` for its probabilities."""
        cost = encoded.cost
        job = Job(encoded, cost, asyncio.get_running_loop().create_future())
        with self._lock:
            self._admit(cost)
            self._queue.append(job)
            self.queued_tokens += cost
            jobs = self._take() if self._calls < self.max_calls else []
            if jobs:
                self._calls += 1
        if jobs:
            self._executor.submit(self._run_calls, jobs)
        return job

    def _admit(self, cost: int) -> None:
        busy = self.busy
        if busy and self.queued_tokens + cost > self.max_queued_tokens:
            raise Overloaded(
                "queue_full",
                self._retry_after(),
                f"the server has {self.queued_tokens} tokens of work queued; this request ({cost} tokens) "
                f"would pass the limit of {self.max_queued_tokens}: retry later or send fewer sentences",
            )
        wait = self.estimated_wait_s(cost)
        if busy and wait > self.queue_budget_s:
            raise Overloaded(
                "queue_budget",
                self._retry_after(),
                f"the server is busy: this request would be answered in about {wait * 1000:.0f} ms, over the "
                f"{self.queue_budget_s * 1000:.0f} ms budget: retry later",
            )

    def cancel(self, job: Job) -> None:
        """The caller gave up (deadline, client gone): drop the job if it has not started."""
        with self._lock:
            if not job.future.done():
                job.future.cancel()
                if not job.started:
                    self.queued_tokens -= job.cost

    def _retry_after(self) -> int:
        return max(1, math.ceil(self.estimated_wait_s()))

    def _take(self) -> list[Job]:
        """The next call's jobs, moved from queued to running (under the lock)."""
        jobs: list[Job] = []
        size = 0
        while self._queue:
            job = self._queue[0]
            if job.future.done():  # cancelled while queued: its tokens were already released
                self._queue.popleft()
                continue
            sentences = len(job.encoded.ids)
            if jobs and size + sentences > self._max_batch:
                break
            self._queue.popleft()
            jobs.append(job)  # at least one job, even one larger than max_batch
            size += sentences
        for job in jobs:
            job.started = True
            self.queued_tokens -= job.cost
            self.running_tokens += job.cost
        return jobs

    def _run_calls(self, jobs: list[Job]) -> None:
        """A worker thread: run a call, take the next queued jobs, until none are left."""
        while jobs:
            cost = sum(job.cost for job in jobs)
            start = time.perf_counter()
            try:
                result: np.ndarray | BaseException = self.infer(Encoded.merge([job.encoded for job in jobs]))
            except Exception as exc:  # handed to every waiting request
                result = exc
            seconds = time.perf_counter() - start
            with self._lock:
                self.running_tokens -= cost
                if not isinstance(result, BaseException):
                    rate = cost / max(seconds, 1e-6)
                    self.tokens_per_s = (
                        rate if self.tokens_per_s is None else SMOOTHING * rate + (1 - SMOOTHING) * self.tokens_per_s
                    )
                done, jobs = jobs, self._take()  # the next call's jobs first: no hop through the event loop
                if not jobs:
                    self._calls -= 1
            try:
                done[0].future.get_loop().call_soon_threadsafe(_deliver, done, result)
            except RuntimeError:  # that event loop is closed: nobody waits for these answers any more
                pass
            if not isinstance(result, BaseException):
                sentences = sum(len(job.encoded.ids) for job in done)
                try:  # metrics must not stop the worker: the jobs it took next would never run
                    self._on_batch(BatchStats(sentences, seconds, [start - job.enqueued_at for job in done]))
                except Exception:
                    log_event("error", level=logging.ERROR, exc_info=True, message="on_batch failed")


def _deliver(jobs: list[Job], result: np.ndarray | BaseException) -> None:
    """On the event loop: each job's rows (or the call's exception), unless its caller gave up."""
    offset = 0
    for job in jobs:
        end = offset + len(job.encoded.ids)
        if not job.future.done():
            if isinstance(result, BaseException):
                job.future.set_exception(result)
            else:
                job.future.set_result(result[offset:end])
        offset = end
