"""Micro-batching without a timer: requests that arrive while a batch runs are merged into the next one.

At concurrency 1 a request runs alone at once (no added wait); under load, one ONNX Runtime call serves
many requests, which is what makes 2 cores reach hundreds of requests per second. Inference runs in a
worker thread, so the event loop keeps accepting requests meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from app.predictor import Batch


@dataclass(frozen=True)
class Result:
    batch: Batch  # rows for this request only
    inference_ms: float  # the ONNX Runtime call (incl. tokenization) that served it
    batch_size: int  # sentences in that call


class MicroBatcher:
    def __init__(self, run: Callable[[list[str]], Batch], max_batch: int, on_batch: Callable[[int, float], None]):
        self._run = run
        self._max_batch = max_batch
        self._on_batch = on_batch  # (sentences, seconds) per ONNX Runtime call, for metrics
        self._queue: list[tuple[list[str], asyncio.Future]] = []
        self._drainer: asyncio.Task | None = None

    async def __call__(self, texts: list[str]) -> Result:
        future = asyncio.get_running_loop().create_future()
        self._queue.append((texts, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        return await future

    def _take(self) -> list[tuple[list[str], asyncio.Future]]:
        jobs = [self._queue.pop(0)]  # always at least one job, even one larger than max_batch
        size = len(jobs[0][0])
        while self._queue and size + len(self._queue[0][0]) <= self._max_batch:
            size += len(self._queue[0][0])
            jobs.append(self._queue.pop(0))
        return jobs

    async def _drain(self) -> None:
        while self._queue:
            jobs = self._take()
            texts = [text for job_texts, _ in jobs for text in job_texts]
            start = time.perf_counter()
            try:
                batch = await asyncio.to_thread(self._run, texts)
            except Exception as exc:  # hand the failure to every waiting request
                for _, future in jobs:
                    if not future.done():
                        future.set_exception(exc)
                continue
            seconds = time.perf_counter() - start
            self._on_batch(len(texts), seconds)
            offset = 0
            for job_texts, future in jobs:
                end = offset + len(job_texts)
                if not future.done():
                    rows = Batch(batch.probs[offset:end], batch.tokens[offset:end], batch.unk_rates[offset:end])
                    future.set_result(Result(rows, seconds * 1000, len(texts)))
                offset = end
