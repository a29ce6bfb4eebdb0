"""Pure ASGI middleware: a body size limit, and a request id + one log line + metrics per request."""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import Sequence

from app.telemetry import Metrics, log_event

REQUEST_ID_HEADER = b"x-request-id"
_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


async def _send_json(send, status: int, body: dict, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class BodyLimit:
    """Reject bodies over `max_bytes` with a 413 before the app parses them.

    The body is read here (it is small by policy) so the limit holds with or without Content-Length.
    """

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        chunks, size, more = [], 0, True
        too_large = declared is not None and declared.isdigit() and int(declared) > self.max_bytes
        while more and not too_large:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            too_large = size > self.max_bytes
        if too_large:
            return await _send_json(
                send,
                413,
                {
                    "error": "body_too_large",
                    "message": f"the request body is over {self.max_bytes} bytes: send fewer or shorter sentences",
                    "request_id": scope.get("state", {}).get("request_id"),
                },
            )
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class ShedWhenBusy:
    """Refuse POST/GET /predict with 503 before any parsing when the server is busy and the queued work plus
    a lower bound of this request's own (from its size) is over the budget.

    Clients that retry at once and ignore Retry-After turn overload into a flood of requests; refusing
    must then cost far less than answering, or the refusals take the CPU the model needs and accepted
    requests slow down too (parsing and tokenizing 64 long sentences takes ~10 ms). The exact check, with
    the request's own token count, stays in MicroBatcher.submit.
    """

    BYTES_PER_TOKEN = 8  # at least: English WordPiece averages ~4-5 characters per token, JSON adds a few bytes

    def __init__(self, app, batcher, on_shed):
        self.app, self.batcher, self.on_shed = app, batcher, on_shed  # on_shed(request_id): count and log

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/predict" or not self.batcher.busy:
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        size = int(declared) if declared.isdigit() else len(scope.get("query_string", b""))
        wait = self.batcher.estimated_wait_s(size // self.BYTES_PER_TOKEN)
        if wait <= self.batcher.queue_budget_s:
            return await self.app(scope, receive, send)
        request_id = scope.get("state", {}).get("request_id")
        self.on_shed(request_id)
        budget_ms = self.batcher.queue_budget_s * 1000
        message = (
            f"the server is busy: this request would be answered in about {wait * 1000:.0f} ms, "
            f"over the {budget_ms:.0f} ms budget: retry later"
        )
        retry_after = str(max(1, math.ceil(self.batcher.estimated_wait_s()))).encode()
        await _send_json(
            send,
            503,
            {"error": "overloaded", "message": message, "request_id": request_id},
            [(b"retry-after", retry_after)],
        )


class RequestTelemetry:
    """Give each request an id (X-Request-ID if the client sent a sane one), then count and log it."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        request_id = self._request_id(scope)
        scope.setdefault("state", {}).update(request_id=request_id, received_at=start)  # received_at: see begin_drain
        status = 500  # if the app raises before answering

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", "unmatched")  # the template, never the raw path
            self.metrics.requests.labels(route=route, method=scope["method"], status=str(status)).inc()
            self.metrics.request_latency.labels(route=route).observe(seconds)
            log_event(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                latency_ms=round(seconds * 1000, 3),
                request_id=request_id,
            )

    @staticmethod
    def _request_id(scope) -> str:
        sent = dict(scope["headers"]).get(REQUEST_ID_HEADER, b"").decode("latin-1")
        if _SAFE_ID.fullmatch(sent):
            return sent
        lambda_context = scope.get("aws.context")  # set by Mangum
        return getattr(lambda_context, "aws_request_id", None) or uuid.uuid4().hex
