"""Pure ASGI middleware: a body size limit, and a request id + one log line + metrics per request."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import re
import time
from collections.abc import Sequence

from starlette.requests import ClientDisconnect

from app.telemetry import Metrics, log_event

REQUEST_ID_HEADER = b"x-request-id"
CLOSE = (b"connection", b"close")
CLIENT_CLOSED = 499  # nginx's status for "the client went away first"; logged and counted, never received
# On every answer: no MIME sniffing, no Referer leaking our paths, and (unless a page sets its own, app/pages.py)
# a policy that lets a response load and run nothing, in no frame. JSON needs nothing more.
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
}
_SECURITY = [(name.encode(), value.encode()) for name, value in SECURITY_HEADERS.items()]
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
    """Reject bodies over `max_bytes` with a 413 before the app parses them, and bodies that take longer than
    `timeout_s` to arrive with a 408 (a slow client must not hold a connection and its task forever).

    The body is read here (it is small by policy) so the limit holds with or without Content-Length. Both
    refusals close the connection: the rest of the body is not read.
    """

    def __init__(self, app, max_bytes: int, timeout_s: float):
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        chunks, size, more = [], 0, True
        too_large = declared is not None and declared.isdigit() and int(declared) > self.max_bytes
        request_id = scope.get("state", {}).get("request_id")
        try:
            async with asyncio.timeout(self.timeout_s):
                while more and not too_large:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    chunks.append(message.get("body", b""))
                    size += len(chunks[-1])
                    more = message.get("more_body", False)
                    too_large = size > self.max_bytes
        except TimeoutError:
            message = f"the request body did not arrive within {self.timeout_s:g} s ({size} bytes did)"
            body = {"error": "body_timeout", "message": message, "request_id": request_id}
            return await _send_json(send, 408, body, [CLOSE])
        if too_large:
            message = f"the request body is over {self.max_bytes} bytes: send fewer or shorter sentences"
            body = {"error": "body_too_large", "message": message, "request_id": request_id}
            return await _send_json(send, 413, body, [CLOSE])
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
    """Give each request an id, answer what nothing else answered, then count and log it.

    `request_id` is ours: the Lambda request id, else 32 random hex digits; it is in the logs and in error bodies.
    A client's own X-Request-ID (if sane) is logged beside it as `client_request_id` and echoed in the X-Request-ID
    response header (load generators match answers by it); without one, the header carries ours. Every response has
    it.

    The status logged and counted is what was sent; a request that ended without an answer because the client
    left (disconnect while its body was read or its work queued) is 499, never a 5xx: the 5xx alert must count
    only what the server did wrong. An exception no handler answered becomes one JSON 500 here (with the ids) and
    one `error` log line with the traceback, instead of Starlette's and uvicorn's plain-text 500 and two tracebacks.
    """

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        request_id, client_id = self._ids(scope)
        scope.setdefault("state", {}).update(request_id=request_id, received_at=start)  # received_at: see begin_drain
        header_id = (client_id or request_id).encode()
        status: int | None = None
        client_left = False

        async def watch_receive():
            nonlocal client_left
            message = await receive()
            client_left = client_left or message["type"] == "http.disconnect"
            return message

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = _with_defaults(message.get("headers", []), header_id)
            await send(message)

        try:
            await self.app(scope, watch_receive, send_with_id)
        except Exception as exc:
            if status is None and (client_left or isinstance(exc, ClientDisconnect)):
                status = CLIENT_CLOSED
            elif status is None:
                log_event("error", level=logging.ERROR, exc_info=True, request_id=request_id)
                status = 500
                await _send_json(send, 500, _internal_error(request_id), _with_defaults([], header_id))
            else:  # the answer had started: nothing more can be sent, the server closes the connection
                log_event("error", level=logging.ERROR, exc_info=True, request_id=request_id)
        else:
            if status is None and client_left:
                status = CLIENT_CLOSED
            elif status is None:  # a bug: an app must answer; say so rather than leave uvicorn's plain 500
                log_event("error", level=logging.ERROR, request_id=request_id, message="the app did not answer")
                status = 500
                await _send_json(send, 500, _internal_error(request_id), _with_defaults([], header_id))
        finally:
            seconds = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", "unmatched")  # the template, never the raw path
            logged = CLIENT_CLOSED if status is None else status  # only a cancelled task ends here without one
            self.metrics.observe_request(route, scope["method"], logged, seconds)
            log_event(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=logged,
                latency_ms=round(seconds * 1000, 3),
                request_id=request_id,
                client_request_id=client_id,
            )

    @staticmethod
    def _ids(scope) -> tuple[str, str | None]:
        """(ours, the client's X-Request-ID if it is 1-64 of [A-Za-z0-9._:-], else None)."""
        sent = dict(scope["headers"]).get(REQUEST_ID_HEADER, b"").decode("latin-1")
        lambda_context = scope.get("aws.context")  # set by Mangum
        # An id, not a secret: Python's generator (seeded from os.urandom, reseeded after fork), not uuid4's
        # os.urandom, a system call per request where the event loop is the bottleneck.
        ours = getattr(lambda_context, "aws_request_id", None) or f"{random.getrandbits(128):032x}"
        return ours, sent if _SAFE_ID.fullmatch(sent) else None


def _with_defaults(headers, request_id: bytes) -> list[tuple[bytes, bytes]]:
    present = {name.lower() for name, _ in headers}
    return [*headers, (REQUEST_ID_HEADER, request_id), *(h for h in _SECURITY if h[0] not in present)]


def _internal_error(request_id: str) -> dict:
    message = "the server failed to answer; the error is logged with this request id"
    return {"error": "internal_error", "message": message, "request_id": request_id}
