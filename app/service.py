"""The prediction service behind the routes: tokenize, admit, queue for the model, wait within the deadline,
record telemetry. One per app, in `app.state.service`; it also holds the drain state (SIGTERM)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
from fastapi import Request

from app.batcher import BatchStats, MicroBatcher, Overloaded
from app.settings import Settings
from app.telemetry import Metrics, emf_records, log_event, print_emf
from contract.features import upper_ratio
from contract.logs import PREDICTION_EVENT, TEXT_FIELD
from runtime.predictor import BundlePredictor, Encoded

LAMBDA_MARGIN_MS = 300  # kept back from the Lambda's remaining time to send the 504 and its logs
# Typical CoLA-length sentences for the warm-up call that measures the model's first tokens/s.
WARMUP_SENTENCES = [
    "The cat sat on the mat.", "Who did you say that Mary met?", "The more you read, the more you know.",
    "John seems to be happy.", "She gave the book to him yesterday.", "What did the children eat for lunch?",
    "The dog that chased the cat was tired.", "I wonder whether he will come.",
] * 2  # fmt: skip


class Refused(Exception):
    """A valid request the server will not compute now: 503 (overloaded, draining) or 504 (deadline)."""

    def __init__(self, status: int, code: str, reason: str, message: str, retry_after_s: int | None = None):
        super().__init__(message)
        self.status, self.code, self.reason, self.message = status, code, reason, message
        self.retry_after_s = retry_after_s


def deadline_exceeded() -> Refused:
    return Refused(
        504, "deadline_exceeded", "deadline", "no answer within the deadline: retry later or send fewer sentences"
    )


class ClientGone(Exception):
    """The client disconnected before its answer: nothing was (or will be) computed for it."""


async def _client_gone(receive) -> None:
    """Return when the client disconnects (uvicorn, Mangum and httpx all deliver http.disconnect)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class PredictionService:
    def __init__(self, predictor: BundlePredictor, settings: Settings):
        self.predictor, self.settings = predictor, settings
        self.metrics = Metrics(predictor.version, predictor.variant)
        self.batcher = MicroBatcher(
            predictor.infer,
            settings.max_batch,
            settings.max_queued_tokens,
            settings.queue_budget_ms / 1000,
            self._observe_batch,
            settings.concurrent_calls,
        )
        self.draining = False
        self.drain_started = float("inf")
        self._warm_up()

    def begin_drain(self) -> None:
        """SIGTERM: say not-ready and refuse requests received from now on; those received before are computed."""
        if not self.draining:
            self.draining, self.drain_started = True, time.perf_counter()
            self.metrics.draining.set(1)
            log_event("draining", model_version=self.predictor.version, queued_tokens=self.batcher.queued_tokens)

    def _warm_up(self) -> None:
        """Two model calls before the first request: the first pays ONNX Runtime's one-off allocations, the
        second gives admission control a measured tokens/s from the start (otherwise a burst arriving before
        the first call ends would all be admitted)."""
        encoded = self.predictor.encode(WARMUP_SENTENCES)
        self.predictor.infer(encoded)
        start = time.perf_counter()
        self.predictor.infer(encoded)
        self.batcher.tokens_per_s = encoded.cost / max(time.perf_counter() - start, 1e-6)

    def rejected(self, reason: str, request_id: str | None) -> None:
        self.metrics.rejected.labels(reason=reason).inc()
        log_event("rejected", reason=reason, request_id=request_id, queued_tokens=self.batcher.queued_tokens)

    async def classify(self, request: Request, texts: list[str]) -> dict:
        """The /predict body for `texts`; raises Refused (503/504) or ClientGone."""
        start = time.perf_counter()
        encoded = self.predictor.encode(texts)  # here, not in the model call: admission needs the token counts
        self.metrics.in_flight.inc()
        try:
            probs = await self._compute(request, encoded, start + self._deadline_ms(request) / 1000)
        finally:
            self.metrics.in_flight.dec()
        latency_ms = (time.perf_counter() - start) * 1000
        labels = self.predictor.labels
        predictions = []
        rows = zip(
            texts, probs.tolist(), self.predictor.decide(probs).tolist(), encoded.tokens, encoded.unk_rates, strict=True
        )
        for text, row, winner, tokens, unk_rate in rows:
            predictions.append(
                {
                    "label": labels[winner],
                    "confidence": row[winner],
                    "probabilities": dict(zip(labels, row, strict=True)),
                }
            )
            self._record(request.state.request_id, text, row, winner, tokens, unk_rate, latency_ms)
        if self.settings.on_lambda:
            print_emf(
                emf_records(
                    self.predictor.version,
                    latency_ms,
                    [p["label"] for p in predictions],
                    [p["confidence"] for p in predictions],
                )
            )
        return {"model_version": self.predictor.version, "predictions": predictions}

    async def _compute(self, request: Request, encoded: Encoded, deadline: float) -> np.ndarray:
        """Admit, queue and wait for the model; work given up on is dropped before it is computed."""
        if (
            getattr(request.state, "received_at", float("inf")) >= self.drain_started
        ):  # only work received after SIGTERM
            raise Refused(
                503, "draining", "draining", "the server is shutting down: retry, another instance will answer", 1
            )
        if deadline <= time.perf_counter():  # e.g. a Lambda with less time left than its margin: never start it
            raise deadline_exceeded()
        try:
            job = self.batcher.submit(encoded)
        except Overloaded as exc:
            raise Refused(503, "overloaded", exc.reason, exc.message, exc.retry_after_s) from None
        self.metrics.queued_tokens.set(self.batcher.queued_tokens)
        watcher = asyncio.ensure_future(_client_gone(request.receive))
        try:
            done, _ = await asyncio.wait(
                (job.future, watcher), timeout=deadline - time.perf_counter(), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            watcher.cancel()
        if job.future in done:
            return job.future.result()
        self.batcher.cancel(job)
        self.metrics.queued_tokens.set(self.batcher.queued_tokens)
        if watcher in done:
            raise ClientGone
        raise deadline_exceeded()

    def _deadline_ms(self, request: Request) -> float:
        """COLA_DEADLINE_MS, or less on Lambda: answer 504 ourselves before the function times out."""
        remaining = getattr(request.scope.get("aws.context"), "get_remaining_time_in_millis", None)
        return (
            self.settings.deadline_ms
            if remaining is None
            else min(self.settings.deadline_ms, remaining() - LAMBDA_MARGIN_MS)
        )

    def _record(
        self, request_id: str, text: str, row: list[float], winner: int, tokens: int, unk_rate: float, latency_ms: float
    ) -> None:
        """Metrics and the log line of one prediction (its fields: contract/logs.py, read by cola/monitoring.py)."""
        label, confidence = self.predictor.labels[winner], row[winner]
        self.metrics.observe_prediction(label, confidence, len(text), tokens, unk_rate)
        fields: dict[str, Any] = {TEXT_FIELD: text} if self.settings.log_text else {}
        log_event(
            PREDICTION_EVENT,
            request_id=request_id,
            model_version=self.predictor.version,
            label=label,
            confidence=round(confidence, 6),
            prob_acceptable=round(row[self.predictor.positive], 6),
            latency_ms=round(latency_ms, 3),
            chars=len(text),
            tokens=tokens,
            unk_rate=round(unk_rate, 6),
            upper_ratio=round(upper_ratio(text), 4),
            **fields,
        )

    def _observe_batch(self, stats: BatchStats) -> None:
        self.metrics.inference_latency.observe(stats.seconds)
        self.metrics.batch_size.observe(stats.sentences)
        for seconds in stats.queue_seconds:
            self.metrics.queue_wait.observe(seconds)
        self.metrics.queued_tokens.set(self.batcher.queued_tokens)
