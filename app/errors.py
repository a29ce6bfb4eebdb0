"""Every error the app answers is JSON `{"error": <code>, "message": <what and how to fix>, "request_id"}`."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from app.inputs import InputError
from app.service import Refused


def error_response(
    request: Request, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None)
    return JSONResponse(
        {"error": code, "message": message, "request_id": request_id}, status_code=status, headers=headers
    )


async def on_input_error(request: Request, exc: InputError):
    return error_response(request, exc.status, exc.code, exc.message)


async def on_refused(request: Request, exc: Refused):
    request.app.state.service.rejected(exc.reason, request.state.request_id)
    headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s else None
    return error_response(request, exc.status, exc.code, exc.message, headers)


async def on_validation_error(request: Request, exc: RequestValidationError):
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    return error_response(request, 422, "invalid_request", problems)


async def on_http_error(request: Request, exc: HTTPException):
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    headers = exc.headers
    if exc.status_code == 405:  # Starlette lists only the first matching route's methods; list them all
        routes = request.app.routes
        allowed = {m for r in routes if r.matches(request.scope)[0] != Match.NONE for m in getattr(r, "methods", ())}
        headers = {"Allow": ", ".join(sorted(allowed))}
    return error_response(request, exc.status_code, code, f"{exc.detail}: {request.method} {request.url.path}", headers)


def add_error_handlers(app: FastAPI) -> None:
    # Starlette types every handler as taking Exception; each of these is registered for its own class only.
    app.add_exception_handler(InputError, on_input_error)  # type: ignore[arg-type]
    app.add_exception_handler(Refused, on_refused)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, on_validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, on_http_error)  # type: ignore[arg-type]
    # Any other exception: answered by RequestTelemetry (app/middleware.py), outside these handlers, so that the
    # 500 carries X-Request-ID and the traceback is logged once.
