"""The routes: /predict (POST and GET), /health, /ready, /model (the bundle's model card), /metrics, / (a page).
The work is done by the PredictionService in `app.state.service`; the documented schemas depend on the settings,
hence a factory."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from app import pages
from app.errors import error_response, on_input_error, on_refused
from app.inputs import SENTENCE_PATTERN, InputError, check_query, check_sentences, parse_body, request_schema
from app.middleware import CLIENT_CLOSED
from app.service import ClientGone, PredictionService, Refused
from app.settings import Settings


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


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 413, 415, 422, 503, 504)
}


async def get_service(request: Request) -> PredictionService:  # async: FastAPI runs a plain def in a thread pool
    return request.app.state.service


Service = Annotated[PredictionService, Depends(get_service)]


async def predict_post(request: Request) -> Response:
    """Body `{"text": "a sentence"}` or `{"text": ["one", "two", ...]}`; a list is classified in one model call."""
    settings = request.app.state.service.settings
    texts = parse_body(await request.body(), request.headers.get("content-type"), settings)
    return await _answer(request, texts)


class PredictLane:
    """POST /predict straight to its endpoint, ahead of Starlette's exception middleware and router and FastAPI's
    request handler: the same endpoint, the same error handlers and the same route in logs and metrics, without
    that per-request machinery (a fifth of the event loop's CPU per prediction; docs/serving.md, Benchmark).
    Everything else, GET /predict too, goes on to FastAPI, which also documents this route (and would serve it
    the same way without the lane)."""

    def __init__(self, app, route: APIRoute):
        self.app, self.route = app, route

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.route.path:
            return await self.app(scope, receive, send)
        scope["route"] = self.route  # as Starlette's router sets it: RequestTelemetry logs the route's template
        request = Request(scope, receive)
        try:
            response = await predict_post(request)
        except InputError as exc:
            response = await on_input_error(request, exc)
        except Refused as exc:
            response = await on_refused(request, exc)
        await response(scope, receive, send)


def post_predict_route(router: APIRouter) -> APIRoute:
    return next(
        r for r in router.routes if isinstance(r, APIRoute) and r.path == "/predict" and "POST" in (r.methods or ())
    )


async def _answer(request: Request, texts: list[str]) -> Response:
    service: PredictionService = request.app.state.service  # not a dependency: FastAPI resolves those per request
    try:
        return Response(orjson.dumps(await service.classify(request, texts)), media_type="application/json")
    except ClientGone:
        service.rejected("client_gone", request.state.request_id)
        return Response(status_code=CLIENT_CLOSED)


def build_router(settings: Settings) -> APIRouter:
    router = APIRouter()
    add_predict_routes(router, settings)
    add_status_routes(router, settings.expose_metrics)
    add_pages(router, settings.expose_docs)
    return router


def add_predict_routes(router: APIRouter, settings: Settings) -> None:
    """POST /predict (JSON body) and GET /predict?text=..., with the limits of `settings` in their schemas."""
    body_schema = request_schema(settings).model_json_schema()
    request_body = {"required": True, "content": {"application/json": {"schema": body_schema}}}

    router.post(
        "/predict",
        response_model=PredictResponse,
        responses=ERRORS,
        summary="Classify one sentence or a list",
        openapi_extra={"requestBody": request_body},
    )(predict_post)

    @router.get(
        "/predict", response_model=PredictResponse, responses=ERRORS, summary="Classify one sentence (query string)"
    )
    async def predict_get(
        request: Request,
        text: str = Query(
            ..., min_length=1, max_length=settings.max_chars, pattern=SENTENCE_PATTERN, description="The sentence"
        ),
    ):
        """Kept for users of the original project: `GET /predict?text=...`."""
        check_query(request.scope["query_string"])
        return await _answer(request, check_sentences([text], settings))


def add_status_routes(router: APIRouter, expose_metrics: bool) -> None:
    """/health, /ready, /model and (when exposed on this port) /metrics."""

    @router.get("/health", summary="Liveness")
    async def health():
        return {"status": "ok"}

    @router.get("/ready", summary="Readiness: the bundle is loaded and matched its sha256 manifest; 503 while draining")
    async def ready(service: Service):
        version = service.predictor.version
        if service.draining:
            return JSONResponse({"status": "draining", "model_version": version}, status_code=503)
        return {"status": "ready", "model_version": version, "variant": service.predictor.variant}

    @router.get(
        "/model",
        summary="The model card: what the served model is, its data, test metrics and limits",
        responses={404: {"model": ErrorResponse}},
    )
    async def model_card(request: Request, service: Service):
        """The bundle's model_card.json (contract/bundle.py), checked against its manifest when the bundle loaded."""
        if service.predictor.card is None:
            message = "the served bundle has no model card (exported before cards): re-run `dvc repro export_onnx`"
            return error_response(request, 404, "no_model_card", message)
        return service.predictor.card

    if expose_metrics:  # else 404; the image serves them on COLA_METRICS_PORT (app/__main__.py)

        @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
        async def prometheus_metrics(service: Service):
            return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def add_pages(router: APIRouter, expose_docs: bool) -> None:
    """The page at /, and /docs and /redoc when the docs are exposed."""
    html, headers = pages.page(expose_docs)

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index():
        return HTMLResponse(html, headers=headers)

    if expose_docs:

        @router.get("/docs", response_class=HTMLResponse, include_in_schema=False)
        async def swagger_ui(request: Request):
            content, headers = pages.swagger_ui(request.app.title)
            return HTMLResponse(content, headers=headers)

        @router.get("/redoc", response_class=HTMLResponse, include_in_schema=False)
        async def redoc(request: Request):
            content, headers = pages.redoc(request.app.title)
            return HTMLResponse(content, headers=headers)
