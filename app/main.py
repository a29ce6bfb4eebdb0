"""The FastAPI app: /predict (POST and GET), /health, /ready, /metrics, / (a small page), /docs.

Build it with create_app(predictor, settings); `python -m app` serves it with uvicorn, and
app/lambda_handler.py wraps it with Mangum. Importing this module loads no model and no torch.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.routing import Match

from app.batcher import BatchStats, MicroBatcher, Overloaded
from app.inputs import SENTENCE_PATTERN, InputError, check_sentences, parse_body, request_schema
from app.middleware import BodyLimit, RequestTelemetry, ShedWhenBusy
from app.predictor import BundlePredictor, Encoded, upper_ratio
from app.settings import Settings
from app.telemetry import Metrics, emf_records, log_event, print_emf, setup_logging

PAGE = Path(__file__).with_name("static") / "index.html"


class Prediction(BaseModel):
    label: str
    confidence: float
    probabilities: dict[str, float]


class PredictResponse(BaseModel):
    model_version: str
    predictions: list[Prediction]


class ErrorResponse(BaseModel):
    error: str
    message: str
    request_id: str | None = None


ERRORS = {status: {"model": ErrorResponse} for status in (400, 413, 415, 422, 503, 504)}
GIL_SWITCH_INTERVAL_S = 0.001
LAMBDA_MARGIN_MS = 300  # kept back from the Lambda's remaining time to send the 504 and its logs
CLIENT_CLOSED = 499  # nginx's status for "the client went away first"; logged and counted, never received


class Refused(Exception):
    """A valid request the server will not compute now: 503 (overloaded, draining) or 504 (deadline)."""

    def __init__(self, status: int, code: str, reason: str, message: str, retry_after_s: int | None = None):
        super().__init__(message)
        self.status, self.code, self.reason, self.message, self.retry_after_s = status, code, reason, message, retry_after_s


async def _client_gone(receive) -> None:
    """Return when the client disconnects (uvicorn, Mangum and httpx all deliver http.disconnect)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def error_response(request: Request, status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None)
    return JSONResponse({"error": code, "message": message, "request_id": request_id}, status_code=status, headers=headers)


def create_app(predictor: BundlePredictor, settings: Settings) -> FastAPI:
    setup_logging()
    # The inference thread needs the GIL for a moment around each ONNX Runtime call; under a flood of requests
    # the event loop holds it, and at Python's default 5 ms switch interval the model then waits more than it
    # computes (512 connections: 470 answered/s at 5 ms, 1200/s at 1 ms in scripts/bench_serving.py).
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    metrics = Metrics(predictor.version, predictor.variant)
    labels = predictor.labels
    positive = labels.index("acceptable") if "acceptable" in labels else len(labels) - 1

    def observe_batch(stats: BatchStats) -> None:
        metrics.inference_latency.observe(stats.seconds)
        metrics.batch_size.observe(stats.sentences)
        for seconds in stats.queue_seconds:
            metrics.queue_wait.observe(seconds)
        metrics.queued_tokens.set(batcher.queued_tokens)

    batcher = MicroBatcher(predictor.infer, settings.max_batch, settings.max_queued_tokens, settings.queue_budget_ms / 1000, observe_batch)
    app = FastAPI(
        title="CoLA acceptability classifier",
        version=predictor.version,
        description="Is an English sentence grammatically acceptable? A fine-tuned MiniLM served with ONNX Runtime.",
    )

    app.state.batcher = batcher
    app.state.draining = False

    def begin_drain() -> None:
        """SIGTERM: refuse new work, say not-ready; the server lets in-flight requests finish."""
        if not app.state.draining:
            app.state.draining = True
            metrics.draining.set(1)
            log_event("draining", model_version=predictor.version, queued_tokens=batcher.queued_tokens)

    app.state.begin_drain = begin_drain

    async def compute(request: Request, encoded: Encoded, deadline: float) -> np.ndarray | None:
        """Admit, queue and wait for the model; Refused when the work is not done, None if the client left."""
        if app.state.draining:
            raise Refused(503, "draining", "draining", "the server is shutting down: retry, another instance will answer", 1)
        try:
            job = batcher.submit(encoded)
        except Overloaded as exc:
            raise Refused(503, "overloaded", exc.reason, exc.message, exc.retry_after_s) from None
        metrics.queued_tokens.set(batcher.queued_tokens)
        watcher = asyncio.ensure_future(_client_gone(request.receive))
        try:
            done, _ = await asyncio.wait((job.future, watcher), timeout=deadline - time.perf_counter(), return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if job.future in done:
            return job.future.result()
        batcher.cancel(job)  # not computed if it had not started
        metrics.queued_tokens.set(batcher.queued_tokens)
        if watcher in done:
            return None
        raise Refused(504, "deadline_exceeded", "deadline", "no answer within the deadline: retry later or send fewer sentences")

    def deadline_ms(request: Request) -> float:
        """COLA_DEADLINE_MS, or less on Lambda: answer 504 ourselves before the function times out."""
        remaining = getattr(request.scope.get("aws.context"), "get_remaining_time_in_millis", None)
        return settings.deadline_ms if remaining is None else min(settings.deadline_ms, remaining() - LAMBDA_MARGIN_MS)

    async def classify(request: Request, texts: list[str]) -> Response:
        start = time.perf_counter()
        metrics.in_flight.inc()
        encoded = predictor.encode(texts)  # here, not in the model call: admission needs the token counts
        try:
            probs = await compute(request, encoded, start + deadline_ms(request) / 1000)
        finally:
            metrics.in_flight.dec()
        if probs is None:
            metrics.rejected.labels(reason="client_gone").inc()
            log_event("rejected", reason="client_gone", request_id=request.state.request_id)
            return Response(status_code=CLIENT_CLOSED)
        latency_ms = (time.perf_counter() - start) * 1000
        request_id = request.state.request_id
        winners = np.argmax(probs, axis=1)
        predictions, names, confidences = [], [], []
        for text, row, winner, tokens, unk_rate in zip(
            texts, probs.tolist(), winners.tolist(), encoded.tokens, encoded.unk_rates, strict=True
        ):
            label, confidence = labels[winner], row[winner]
            predictions.append({"label": label, "confidence": confidence, "probabilities": dict(zip(labels, row, strict=True))})
            names.append(label)
            confidences.append(confidence)
            metrics.predictions.labels(label=label).inc()
            metrics.confidence.observe(confidence)
            metrics.input_chars.observe(len(text))
            metrics.input_tokens.observe(tokens)
            metrics.unk_rate.observe(unk_rate)
            log_event(
                "prediction",
                request_id=request_id,
                model_version=predictor.version,
                label=label,
                confidence=round(confidence, 6),
                prob_acceptable=round(row[positive], 6),
                latency_ms=round(latency_ms, 3),
                chars=len(text),
                tokens=tokens,
                unk_rate=round(unk_rate, 6),
                upper_ratio=round(upper_ratio(text), 4),
                **({"text": text} if settings.log_text else {}),
            )
        if settings.on_lambda:
            print_emf(emf_records(predictor.version, latency_ms, names, confidences))
        return JSONResponse({"model_version": predictor.version, "predictions": predictions})

    @app.post("/predict", response_model=PredictResponse, responses=ERRORS, summary="Classify one sentence or a list",
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": request_schema(settings).model_json_schema()}}}})  # fmt: skip
    async def predict_post(request: Request):
        """Body `{"text": "a sentence"}` or `{"text": ["one", "two", ...]}`; a list is classified in one model call."""
        texts = parse_body(await request.body(), request.headers.get("content-type"), settings)
        return await classify(request, texts)

    @app.get("/predict", response_model=PredictResponse, responses=ERRORS, summary="Classify one sentence (query string)")
    async def predict_get(
        request: Request,
        text: str = Query(..., min_length=1, max_length=settings.max_chars, pattern=SENTENCE_PATTERN, description="The sentence"),
    ):
        """Kept for users of the original project: `GET /predict?text=...`."""
        return await classify(request, check_sentences([text], settings))

    @app.get("/health", summary="Liveness")
    async def health():
        return {"status": "ok"}

    @app.get("/ready", summary="Readiness: the bundle is loaded and matched its sha256 manifest; 503 while draining")
    async def ready():
        if app.state.draining:
            return JSONResponse({"status": "draining", "model_version": predictor.version}, status_code=503)
        return {"status": "ready", "model_version": predictor.version, "variant": predictor.variant}

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus_metrics():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    page = PAGE.read_text()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index():
        return page

    @app.exception_handler(InputError)
    async def on_input_error(request: Request, exc: InputError):
        return error_response(request, exc.status, exc.code, exc.message)

    @app.exception_handler(Refused)
    async def on_refused(request: Request, exc: Refused):
        metrics.rejected.labels(reason=exc.reason).inc()
        log_event("rejected", reason=exc.reason, request_id=request.state.request_id, queued_tokens=batcher.queued_tokens)
        headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s else None
        return error_response(request, exc.status, exc.code, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return error_response(request, 422, "invalid_request", problems)

    @app.exception_handler(HTTPException)
    async def on_http_error(request: Request, exc: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = exc.headers
        if exc.status_code == 405:  # Starlette lists only the first matching route's methods; list them all
            allowed = {m for r in app.routes if r.matches(request.scope)[0] != Match.NONE for m in getattr(r, "methods", ())}
            headers = {"Allow": ", ".join(sorted(allowed))}
        return error_response(request, exc.status_code, code, f"{exc.detail}: {request.method} {request.url.path}", headers)

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception):
        log_event("error", level=logging.ERROR, exc_info=True, request_id=getattr(request.state, "request_id", None))
        return error_response(request, 500, "internal_error", "the server failed to answer; the error is logged with this request id")

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    def on_shed(request_id: str | None) -> None:
        metrics.rejected.labels(reason="queue_budget").inc()
        log_event("rejected", reason="queue_budget", request_id=request_id, queued_tokens=batcher.queued_tokens)

    app.add_middleware(ShedWhenBusy, batcher=batcher, on_shed=on_shed)
    app.add_middleware(RequestTelemetry, metrics=metrics)  # outermost: 413s are counted and logged too
    log_event("startup", model_version=predictor.version, variant=predictor.variant, bundle=str(predictor.bundle_dir))
    return app


def load_predictor(settings: Settings) -> BundlePredictor:
    return BundlePredictor(settings.bundle_dir, threads=settings.ort_threads, max_batch_tokens=settings.max_batch_tokens)


def from_env() -> FastAPI:
    """App factory for `uvicorn --factory app.main:from_env` (`python -m app` is the usual entry point)."""
    settings = Settings.from_env()
    return create_app(load_predictor(settings), settings)
