"""The FastAPI app: create_app(predictor, settings) wires the service, the routes, the error handlers and the
middleware; `python -m app` serves it with uvicorn, app/lambda_handler.py wraps it with Mangum.
Importing this module loads no model and no torch.

    app/routes.py      the endpoints and their documented schemas
    app/service.py     tokenize, admit, queue, deadline, telemetry (app.state.service)
    app/batcher.py     micro-batching and admission control
    app/errors.py      every error as JSON {"error", "message", "request_id"}
    app/middleware.py  body limit, early load shedding, request id + request log line
"""

from __future__ import annotations

import sys

from fastapi import FastAPI

from app.errors import add_error_handlers
from app.middleware import BodyLimit, RequestTelemetry, ShedWhenBusy
from app.routes import PredictLane, build_router, post_predict_route
from app.service import PredictionService
from app.settings import Settings
from app.telemetry import log_event, setup_logging
from runtime.predictor import BundlePredictor

# The inference thread needs the GIL for a moment around each ONNX Runtime call; under a flood of requests the
# event loop holds it, and at Python's default 5 ms switch interval the model then waits more than it computes
# (512 connections: 470 answered/s at 5 ms, 1200/s at 1 ms in scripts/bench_serving.py).
GIL_SWITCH_INTERVAL_S = 0.001


def create_app(predictor: BundlePredictor, settings: Settings) -> FastAPI:
    setup_logging()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    service = PredictionService(predictor, settings)
    app = FastAPI(
        title="CoLA acceptability classifier",
        version=predictor.version,
        description="Is an English sentence grammatically acceptable? A fine-tuned MiniLM served with ONNX Runtime.",
        # COLA_EXPOSE_DOCS=0 (the images, Lambda): no /docs, /redoc, /openapi.json at all (404)
        openapi_url="/openapi.json" if settings.expose_docs else None,
        docs_url=None,  # /docs and /redoc: app/routes.py (pinned, with integrity and a CSP: app/pages.py)
        redoc_url=None,
    )
    app.state.service = service
    router = build_router(settings)
    app.include_router(router)
    add_error_handlers(app)
    app.add_middleware(PredictLane, route=post_predict_route(router))  # innermost: after the body limit and shedding
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout_ms / 1000)
    app.add_middleware(
        ShedWhenBusy, batcher=service.batcher, on_shed=lambda request_id: service.rejected("queue_budget", request_id)
    )
    app.add_middleware(RequestTelemetry, metrics=service.metrics)  # outermost: 413s and shed requests are logged too
    log_event("startup", model_version=predictor.version, variant=predictor.variant, bundle=str(predictor.bundle_dir))
    return app


def load_predictor(settings: Settings) -> BundlePredictor:
    return BundlePredictor(
        settings.bundle_dir, threads=settings.ort_threads, max_batch_tokens=settings.max_batch_tokens
    )


def from_env() -> FastAPI:
    """App factory for `uvicorn --factory app.main:from_env` (`python -m app` is the usual entry point)."""
    settings = Settings.from_env()
    return create_app(load_predictor(settings), settings)
