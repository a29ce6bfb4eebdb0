"""Bounds on what one TCP client can hold: uvicorn's httptools protocol with the limits it lacks.

uvicorn bounds only the idle time after a response (keep-alive, 5 s). A client that connects and sends nothing,
or sends headers a byte at a time, or a body that never ends, holds a connection (a file descriptor, a parser,
a task) forever, and enough of them hold the server. Here:

- headers: a request's headers must arrive within `header_timeout_s` of the connection (or of the request's
  first byte on a kept-alive connection), else 408 and the connection is closed;
- body: the app reads bodies with its own deadline (app/middleware.py BodyLimit: 408 `body_timeout`); a body
  nobody reads is cut here a second later;
- size: more than `max_header_bytes` of request line + headers, or more than `max_headers` headers: 431;
- connections: past `max_connections` open at once, a new one gets 503 and is closed at once.

uvicorn's own parse errors (malformed HTTP) answer the app's JSON error shape instead of plain text. Measured
alternatives (docs/serving.md): uvicorn's limit_concurrency counts tasks too and answers plain text, h11's size
limit is h11-only (the app runs httptools for speed).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from app.settings import Settings

LINGER_S = 2.0  # after our side closed: how long what the client still sends is read and dropped
BODY_GRACE_S = 1.0  # the app answers a slow body itself (408 with its request id); this is the backstop


def error_bytes(status: int, code: str, message: str) -> bytes:
    """A complete HTTP/1.1 response, sent before (or instead of) the app: the app's JSON error shape."""
    body = json.dumps({"error": code, "message": message, "request_id": None}).encode()
    return b"".join(
        [
            STATUS_LINE[status],
            b"content-type: application/json\r\n",
            b"x-content-type-options: nosniff\r\n",
            b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body),
            body,
        ]
    )


class LingeringTransport:
    """The connection's transport as uvicorn sees it, with nginx's lingering close: `close()` ends our side (FIN),
    reads and drops what the client still sends, and closes for good when the client closes or after LINGER_S.

    Closing at once while client bytes sit unread (a partial request we time out, a body we refuse, a client still
    sending) makes the kernel send a reset instead of a FIN: the client's next read fails with ECONNRESET, and an
    answer not yet transmitted is destroyed. Every close of this protocol and of uvicorn's goes through here.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport, self._loop = transport, loop
        self.lingering = False
        self.write = transport.write  # the hot path: bound once, not looked up through __getattr__

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self.lingering or self._transport.is_closing()

    def close(self) -> None:
        if self.is_closing():
            return
        self.lingering = True
        if not self._transport.can_write_eof():
            self._transport.close()
            return
        self._transport.write_eof()  # sent after what is buffered; asyncio closes for good on the client's EOF
        if not self._transport.is_reading():
            self._transport.resume_reading()  # drain even if flow control had paused reads
        self._loop.call_later(LINGER_S, self._transport.close)


class BoundedHttpTools(HttpToolsProtocol):
    header_timeout_s = 10.0
    body_timeout_s = 20.0
    max_header_bytes = 32 * 1024
    max_headers = 100
    max_connections = 2048

    @classmethod
    def configured(cls, settings: Settings) -> type[BoundedHttpTools]:
        """The protocol class with these settings' limits (uvicorn builds one instance per connection)."""
        limits = {
            "header_timeout_s": settings.header_timeout_ms / 1000,
            "body_timeout_s": settings.body_timeout_ms / 1000,
            "max_header_bytes": settings.max_header_bytes,
            "max_headers": settings.max_headers,
            "max_connections": settings.max_connections,
        }
        return type("BoundedHttpToolsConfigured", (cls,), limits)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._timer: asyncio.TimerHandle | None = None
        self._reading_headers = True
        self._header_bytes = self._header_count = self._raw_header_bytes = 0
        self._refusal: bytes | None = None
        if len(self.connections) >= self.max_connections:
            # closed at once, not lingering: under a connection flood, refused sockets must not pile up
            transport.write(error_bytes(503, "too_many_connections", "the server has too many open connections"))
            transport.close()
            return
        super().connection_made(LingeringTransport(transport, self.loop))  # type: ignore[arg-type]
        self._arm(self.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.transport is not None:  # None: refused in connection_made, never registered
            super().connection_lost(exc)

    # -- the read deadline: armed while a request's headers or body are expected, off while the app answers
    def _arm(self, seconds: float) -> None:
        self._disarm()
        if seconds > 0:
            self._timer = self.loop.call_later(seconds, self._read_timeout)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _read_timeout(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self._reading_headers and (self.cycle is None or self.cycle.response_complete):
            what = f"the request headers did not arrive within {self.header_timeout_s:g} s"
            self.transport.write(error_bytes(408, "request_timeout", what))
        self.transport.close()  # a body nobody read in time: the app (if waiting) sees a disconnect

    # -- parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_headers = True
        self._header_bytes = self._header_count = self._raw_header_bytes = 0
        if self._timer is None:  # a kept-alive connection's next request: its headers get the full time
            self._arm(self.header_timeout_s)

    def on_url(self, url: bytes) -> None:
        self._count(len(url), 0)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4, 1)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        self._arm(self.body_timeout_s + BODY_GRACE_S)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _count(self, size: int, headers: int) -> None:
        self._header_bytes += size
        self._header_count += headers
        if self._header_bytes > self.max_header_bytes or self._header_count > self.max_headers:
            self._refusal = self._too_large()
            raise ValueError("headers over the limit")  # stops the parser: feed_data raises HttpParserCallbackError

    def _too_large(self) -> bytes:
        limits = f"at most {self.max_header_bytes} bytes and {self.max_headers} headers"
        return error_bytes(431, "headers_too_large", f"the request line and headers must be {limits}")

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():  # our side is closed: what the client still sends is read and dropped
            return
        reading_headers = self._reading_headers
        super().data_received(data)
        # httptools buffers a header until it ends, so the callbacks alone would let one endless header grow:
        # a chunk read while the headers stayed incomplete was all header bytes.
        if reading_headers and self._reading_headers and not self.transport.is_closing():
            self._raw_header_bytes += len(data)
            if self._raw_header_bytes > self.max_header_bytes:
                self._refusal = self._too_large()
                self.send_400_response("")

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a malformed request (or to our refusal above), as JSON instead of plain text."""
        self._disarm()
        if self.transport.is_closing():
            return
        self.transport.write(self._refusal or error_bytes(400, "invalid_http", "the request is not valid HTTP/1.1"))
        self.transport.close()  # lingering (a client may still be sending its 1 MB header)
