"""What one TCP client can hold, on a real `python -m app` (uvicorn + httptools) over real sockets: idle,
partial-header and slow-body clients are answered 408 and closed while other clients are served; oversized
headers are 431, malformed HTTP is a JSON 400, and connections past COLA_MAX_CONNECTIONS are refused.

The socket timeouts below are hang guards (a server that never closes fails the test after them), not speed
assertions: the server's own limits are 1 s."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import urllib.request
from contextlib import contextmanager

import pytest

from cola.paths import ROOT
from tests.net import free_port
from tests.serving.conftest import serve_env, wait_ready

pytestmark = pytest.mark.slow
GUARD_S = 30


@contextmanager
def server(bundle, **env):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "--port", str(port)], cwd=ROOT, env=serve_env(bundle, **env),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_ready(f"http://127.0.0.1:{port}", process)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def strict_port(tiny_bundle):
    with server(tiny_bundle, COLA_HEADER_TIMEOUT_MS="1000", COLA_BODY_TIMEOUT_MS="1000") as port:
        yield port


def connect(port: int, data: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=GUARD_S)
    if data:
        sock.sendall(data)
    return sock


def until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (fails after GUARD_S: it never did)."""
    received = b""
    with sock:
        while chunk := sock.recv(65536):
            received += chunk
    return received


def answer(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


def served(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=GUARD_S) as response:
        return response.status


HEADERS = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


def test_idle_partial_and_slow_clients_are_closed_while_others_are_served(strict_port):
    idle = [connect(strict_port) for _ in range(20)]
    partial = [connect(strict_port, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Ty") for _ in range(20)]
    slow = [connect(strict_port, HEADERS + b"Content-Length: 100\r\n\r\n" + b'{"text": "a') for _ in range(5)]
    trickle = connect(strict_port, HEADERS + b"Content-Length: 100000\r\n\r\n")
    stop = threading.Event()

    def drip():  # a byte every 0.1 s: always "sending", never done
        try:
            while not stop.wait(0.1):
                trickle.send(b" ")
        except OSError:
            pass  # the server closed it

    dripping = threading.Thread(target=drip)
    dripping.start()
    try:
        assert served(strict_port) == 200  # held connections do not stop others from being served
        for sock in idle + partial:
            status, body = answer(until_closed(sock))
            assert (status, body["error"]) == (408, "request_timeout")
        for sock in [*slow, trickle]:
            status, body = answer(until_closed(sock))
            assert (status, body["error"]) == (408, "body_timeout") and body["request_id"]
        assert served(strict_port) == 200
    finally:
        stop.set()
        dripping.join()


@pytest.mark.parametrize(
    "headers",
    [b"X-Big: " + b"a" * 1_000_000 + b"\r\n", b"".join(b"X-H%d: v\r\n" % i for i in range(5000))],
    ids=["one 1 MB header", "5,000 headers"],
)
def test_oversized_headers_are_a_431(strict_port, headers):
    sock = connect(strict_port)
    try:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    except OSError:
        pass  # the server answered and closed while we were still sending
    status, body = answer(until_closed(sock))
    assert (status, body["error"]) == (431, "headers_too_large")
    assert served(strict_port) == 200


def test_malformed_http_is_a_json_400(strict_port):
    status, body = answer(until_closed(connect(strict_port, b"GET / HTTP/1.1\r\nHost x\r\n\r\n")))
    assert (status, body["error"]) == (400, "invalid_http")


def test_connections_past_the_limit_are_refused(tiny_bundle):
    with server(tiny_bundle, COLA_MAX_CONNECTIONS="3") as port:
        held = [connect(port) for _ in range(3)]
        try:
            status, body = answer(until_closed(connect(port)))
            assert (status, body["error"]) == (503, "too_many_connections")
        finally:
            for sock in held:
                sock.close()
        assert served(port) == 200  # closed ones free their place
