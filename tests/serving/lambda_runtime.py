"""A small loopback implementation of the AWS Lambda Runtime API (the part a runtime client uses).

AWS's runtime interface emulator cannot be fetched here, so tests run the real `awslambdaric` (on the host
or inside the Lambda image) against this server: it hands out queued events on /invocation/next and
collects what the function returns. See AWS's "Lambda runtime API" documentation for the endpoints.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PREFIX = "/2018-06-01/runtime"


class LambdaRuntimeAPI:
    def __init__(self, function_name: str = "cola-classifier"):
        self.function_name = function_name
        self.events: queue.Queue = queue.Queue()
        self.results: dict[str, queue.Queue] = {}
        self.init_errors: list[dict] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LambdaRuntimeAPI:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.events.put(None)  # release a waiting /next
        self.server.shutdown()
        self.server.server_close()

    def invoke(self, event, timeout_s: float = 120) -> tuple[str, object]:
        """Queue one event; wait for ("response" | "error", parsed body). The timeout only guards hangs."""
        request_id = str(uuid.uuid4())
        self.results[request_id] = queue.Queue()
        self.events.put((request_id, event))
        kind, body = self.results[request_id].get(timeout=timeout_s)
        return kind, json.loads(body) if body else None

    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _reply(self, status: int, body: bytes = b'{"status":"OK"}', headers: dict | None = None):
                try:
                    self._send(status, body, headers)
                except (BrokenPipeError, ConnectionResetError):  # the client went away (test teardown)
                    pass

            def _send(self, status: int, body: bytes, headers: dict | None):
                self.send_response(status)
                # awslambdaric fails on a response without Content-Type, so always send one
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path != f"{PREFIX}/invocation/next":
                    return self._reply(404, b'{"errorType":"NotFound"}')
                item = api.events.get()
                if item is None:
                    api.events.put(None)
                    return self._reply(500, b'{"errorType":"ShuttingDown"}')
                request_id, event = item
                self._reply(
                    200,
                    json.dumps(event).encode(),
                    {
                        "Lambda-Runtime-Aws-Request-Id": request_id,
                        "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + 60_000),
                        "Lambda-Runtime-Invoked-Function-Arn": (
                            f"arn:aws:lambda:eu-west-1:123456789012:function:{api.function_name}"
                        ),
                        "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000;Sampled=0",
                    },
                )

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                parts = self.path.removeprefix(PREFIX + "/").split("/")
                if parts == ["init", "error"]:
                    api.init_errors.append(json.loads(body) if body else {})
                    return self._reply(202)
                if len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
                    results = api.results.get(parts[1])
                    if results is None:
                        return self._reply(400, b'{"errorType":"InvalidRequestID"}')
                    results.put((parts[2], body))
                    return self._reply(202)
                self._reply(404, b'{"errorType":"NotFound"}')

        return Handler
