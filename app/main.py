"""The FastAPI app: /predict (POST and GET), /health, /ready, /metrics, / (a small page), /docs.

Build it with create_app(predictor, settings); `python -m app` serves it with uvicorn, and
app/lambda_handler.py wraps it with Mangum. Importing this module loads no model and no torch.
"""

from __future__ import annotations

import logging
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

from app.batcher import MicroBatcher
from app.inputs import SENTENCE_PATTERN, InputError, check_sentences, parse_body, request_schema
from app.middleware import BodyLimit, RequestTelemetry
from app.predictor import BundlePredictor, upper_ratio
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


ERRORS = {status: {"model": ErrorResponse} for status in (400, 413, 415, 422)}


def error_response(request: Request, status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None)
    return JSONResponse({"error": code, "message": message, "request_id": request_id}, status_code=status, headers=headers)


def create_app(predictor: BundlePredictor, settings: Settings) -> FastAPI:
    setup_logging()
    metrics = Metrics(predictor.version, predictor.variant)
    labels = predictor.labels
    positive = labels.index("acceptable") if "acceptable" in labels else len(labels) - 1

    def observe_batch(size: int, seconds: float) -> None:
        metrics.inference_latency.observe(seconds)
        metrics.batch_size.observe(size)

    batcher = MicroBatcher(predictor.run, settings.max_batch, observe_batch)
    app = FastAPI(
        title="CoLA acceptability classifier",
        version=predictor.version,
        description="Is an English sentence grammatically acceptable? A fine-tuned MiniLM served with ONNX Runtime.",
    )

    async def classify(request: Request, texts: list[str]) -> JSONResponse:
        start = time.perf_counter()
        result = await batcher(texts)
        latency_ms = (time.perf_counter() - start) * 1000
        request_id = request.state.request_id
        winners = np.argmax(result.batch.probs, axis=1)
        predictions, names, confidences = [], [], []
        for text, probs, winner, tokens, unk_rate in zip(
            texts, result.batch.probs.tolist(), winners.tolist(), result.batch.tokens, result.batch.unk_rates, strict=True
        ):
            label, confidence = labels[winner], probs[winner]
            predictions.append({"label": label, "confidence": confidence, "probabilities": dict(zip(labels, probs, strict=True))})
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
                prob_acceptable=round(probs[positive], 6),
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

    @app.get("/ready", summary="Readiness: the bundle is loaded and matched its sha256 manifest")
    async def ready():
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
    app.add_middleware(RequestTelemetry, metrics=metrics)  # outermost: 413s are counted and logged too
    log_event("startup", model_version=predictor.version, variant=predictor.variant, bundle=str(predictor.bundle_dir))
    return app


def from_env() -> FastAPI:
    """App factory for `uvicorn --factory app.main:from_env` (`python -m app` is the usual entry point)."""
    settings = Settings.from_env()
    return create_app(BundlePredictor(settings.bundle_dir, threads=settings.ort_threads), settings)
