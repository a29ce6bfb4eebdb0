"""Overload, deadlines and shutdown, end to end: 503 + Retry-After when the queue is full, 504 past the
deadline (and the dropped work never computed), nothing computed for a client that left, and SIGTERM
draining a real server: every request in flight is answered, then exit code 0."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import httpx
import pytest

from app.main import create_app
from cola.paths import ROOT
from tests.net import free_port
from tests.serving.conftest import serve_env, wait_ready
from tests.serving.labels import assert_labels_follow_the_threshold


class Gate:
    """Holds every model call until opened (the tiny bundle is too fast to observe a queue); counts the
    sentences each call computed."""

    def __init__(self, infer):
        self.infer, self.opened, self.calls = infer, threading.Event(), []

    def __call__(self, encoded):
        self.calls.append(len(encoded.ids))
        self.opened.wait(timeout=30)
        return self.infer(encoded)


@pytest.fixture
def gated():
    """gated(app) -> Gate: the app's model calls held by a gate from now on (after its warm-up call)."""
    gates = []

    def attach(app) -> Gate:
        batcher = app.state.service.batcher
        gates.append(Gate(batcher.infer))
        batcher.infer = gates[-1]
        return gates[-1]

    yield attach
    for gate in gates:
        gate.opened.set()


def metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


async def until(condition, limit_s: float = 10) -> None:
    end = time.monotonic() + limit_s  # a hang guard, not a speed assertion
    while not condition():
        assert time.monotonic() < end, "condition not reached"
        await asyncio.sleep(0.005)


def run_app(app, scenario):
    async def main():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await scenario(client)

    return asyncio.run(main())


def test_work_over_the_queue_limit_gets_503_with_retry_after(predictor, settings, gated, log_lines):
    app = create_app(predictor, replace(settings, max_queued_tokens=20, queue_budget_ms=60_000))
    gate = gated(app)

    async def scenario(client):
        first = asyncio.ensure_future(client.post("/predict", json={"text": "The cat sat."}))  # runs (held)
        await until(lambda: gate.calls)
        second = asyncio.ensure_future(client.post("/predict", json={"text": "The dog barked loudly."}))  # queued
        await until(lambda: app.state.service.batcher.queued_tokens > 0)
        refused = await client.post(
            "/predict", json={"text": ["A long sentence that will not fit the queue at all."] * 2}
        )
        gate.opened.set()
        answered = await asyncio.gather(first, second)
        return refused, answered, (await client.get("/metrics")).text

    refused, answered, metrics = run_app(app, scenario)
    assert refused.status_code == 503 and refused.headers["retry-after"].isdigit()
    body = refused.json()
    assert body["error"] == "overloaded" and "limit of 20" in body["message"]
    assert body["request_id"] == refused.headers["x-request-id"]
    assert [r.status_code for r in answered] == [200, 200]  # admitted work is not affected
    assert metric(metrics, 'cola_rejected_total{reason="queue_full"}') == 1
    assert metric(metrics, 'cola_rejected_total{reason="deadline"}') == 0
    assert log_lines("rejected")[0]["reason"] == "queue_full"
    predicts = [line for line in log_lines("request") if line["path"] == "/predict"]
    assert sorted(line["status"] for line in predicts) == [200, 200, 503]
    assert next(line for line in predicts if line["status"] == 503)["request_id"] == body["request_id"]


def test_an_idle_server_answers_a_request_over_the_budget_and_a_busy_one_refuses_it(predictor, settings, gated):
    # a zero budget: every request's own estimated time (its tokens over the rate the warm-up measured on the real
    # tiny bundle) passes it. Idle, the server still answers (else a large request would be refused forever);
    # busy, the same request is refused.
    app = create_app(predictor, replace(settings, queue_budget_ms=0))
    batcher = app.state.service.batcher
    texts = ["A long sentence that the idle server answers although it alone passes the budget."] * 8
    assert batcher.estimated_wait_s(predictor.encode(texts).cost) > batcher.queue_budget_s == 0

    async def scenario(client):
        idle = await client.post("/predict", json={"text": texts})
        gate = gated(app)
        held = asyncio.ensure_future(client.post("/predict", json={"text": texts}))
        await until(lambda: gate.calls)
        busy = await client.post("/predict", json={"text": texts})
        gate.opened.set()
        return idle, await held, busy

    idle, held, busy = run_app(app, scenario)
    assert idle.status_code == 200 and held.status_code == 200
    assert_labels_follow_the_threshold(predictor, idle.json()["predictions"])
    assert (
        busy.status_code == 503
        and busy.json()["error"] == "overloaded"
        and "over the 0 ms budget" in busy.json()["message"]
    )


def test_past_the_deadline_is_a_504_and_the_queued_work_is_dropped(predictor, settings, gated):
    app = create_app(predictor, replace(settings, deadline_ms=300, queue_budget_ms=60_000))
    gate = gated(app)

    async def scenario(client):
        first = asyncio.ensure_future(client.post("/predict", json={"text": "The cat sat."}))
        await until(lambda: gate.calls)
        late = await client.post("/predict", json={"text": ["One.", "Two.", "Three."]})  # queued behind it
        gate.opened.set()
        return late, await first, (await client.get("/metrics")).text

    late, first, metrics = run_app(app, scenario)
    assert (
        late.status_code == 504 and late.json()["error"] == "deadline_exceeded" and "deadline" in late.json()["message"]
    )
    assert first.status_code == 504  # it was running when its deadline passed: the answer is not awaited
    assert gate.calls == [1]  # the three sentences behind it were never computed
    assert metric(metrics, 'cola_rejected_total{reason="deadline"}') == 2
    assert metric(metrics, "cola_queued_tokens") == 0


async def asgi_post(
    app,
    body: bytes,
    sent: list[dict],
    body_arrives: asyncio.Event,
    disconnect: asyncio.Event,
    body_wanted: asyncio.Event | None = None,
) -> None:
    """POST /predict straight through the ASGI interface, like a server would: the body is delivered when
    `body_arrives` is set, then http.disconnect when `disconnect` is (how uvicorn reports a client that left).
    `body_wanted` is set when the app first asks for the body (it has the headers and is waiting)."""
    delivered = False

    async def receive():
        nonlocal delivered
        if not delivered:
            if body_wanted is not None:
                body_wanted.set()
            await body_arrives.wait()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/predict", "raw_path": b"/predict", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json")], "client": ("127.0.0.1", 1),
             "server": ("test", 80)}  # fmt: skip
    await app(scope, receive, send)


def statuses(sent: list[dict]) -> list[int]:
    return sorted(m["status"] for m in sent if m["type"] == "http.response.start")


def test_nothing_is_computed_for_a_client_that_went_away(predictor, settings, gated, log_lines):
    app = create_app(predictor, replace(settings, queue_budget_ms=60_000))
    gate = gated(app)
    sent: list[dict] = []
    body = json.dumps({"text": ["Leaving now.", "Gone."]}).encode()

    async def scenario():
        arrived, stay, leave = asyncio.Event(), asyncio.Event(), asyncio.Event()
        arrived.set()
        running = asyncio.ensure_future(asgi_post(app, json.dumps({"text": "Stays."}).encode(), sent, arrived, stay))
        await until(lambda: gate.calls)
        leaving = asyncio.ensure_future(asgi_post(app, body, sent, arrived, leave))
        await until(lambda: app.state.service.batcher.queued_tokens > 0)
        leave.set()  # the client disconnects while its request is queued
        await leaving
        gate.opened.set()
        await running
        stay.set()

    asyncio.run(scenario())
    assert gate.calls == [1]  # the leaving client's two sentences were never computed
    assert statuses(sent) == [200, 499]
    assert [line["reason"] for line in log_lines("rejected")] == ["client_gone"]


def test_a_full_queue_refuses_before_parsing_the_request(client, log_lines):
    batcher = client.app.state.service.batcher
    batcher.tokens_per_s, batcher.queued_tokens = 100.0, 1000  # as if measured: 10 s of work queued
    try:
        refused = client.post("/predict", content=b"not even JSON")  # refused before the body is read
        refused_get = client.get("/predict", params={"text": "Fine."})
        ok = client.get("/health")
    finally:
        batcher.queued_tokens = 0
    assert refused.status_code == 503 and refused.json()["error"] == "overloaded"
    assert "over the 500 ms budget" in refused.json()["message"] and refused.headers["retry-after"] == "10"
    assert refused_get.status_code == 503 and ok.status_code == 200
    assert [line["reason"] for line in log_lines("rejected")] == ["queue_budget", "queue_budget"]
    assert 'cola_rejected_total{reason="queue_budget"} 2.0' in client.get("/metrics").text
    assert client.get("/predict", params={"text": "Fine."}).status_code == 200


def test_a_request_received_before_sigterm_is_computed_even_if_its_body_comes_after(predictor, settings):
    app = create_app(predictor, settings)
    sent: list[dict] = []

    async def scenario():
        body_arrives, done, body_wanted = asyncio.Event(), asyncio.Event(), asyncio.Event()
        request = asyncio.ensure_future(
            asgi_post(app, b'{"text": "Sent before the signal."}', sent, body_arrives, done, body_wanted)
        )
        await body_wanted.wait()  # headers received, the app waits for the body, still on its way
        app.state.service.begin_drain()
        body_arrives.set()
        await request
        done.set()
        late = asyncio.Event()
        late.set()
        await asgi_post(app, b'{"text": "Sent after the signal."}', sent, late, late)

    asyncio.run(scenario())
    assert statuses(sent) == [200, 503]


def test_the_warm_up_measures_the_model_before_the_first_request(predictor, settings):
    batcher = create_app(predictor, settings).state.service.batcher
    assert batcher.tokens_per_s > 0  # so a burst that arrives before the first request ends is sized too
    assert batcher.queued_tokens == 0 and batcher.running_tokens == 0


def test_a_large_request_is_refused_before_parsing_when_its_size_alone_passes_the_budget(client):
    batcher = client.app.state.service.batcher
    batcher.tokens_per_s, batcher.queued_tokens = 100.0, 10  # busy: 0.1 s of work queued, budget 0.5 s
    try:
        large = client.post("/predict", content=b'{"text": "' + b"word " * 80 + b'"}')  # >= 50 tokens: +0.5 s
        small = client.get("/predict", params={"text": "Fine."})  # a few bytes: admitted
    finally:
        batcher.queued_tokens = 0
    assert small.status_code == 200
    assert large.status_code == 503 and large.json()["error"] == "overloaded" and large.headers["retry-after"] == "1"


def test_draining_says_not_ready_and_refuses_new_work(predictor, settings, client):
    assert client.get("/ready").status_code == 200
    client.app.state.service.begin_drain()
    ready = client.get("/ready")
    assert ready.status_code == 503 and ready.json()["status"] == "draining"
    refused = client.post("/predict", json={"text": "Too late."})
    assert (
        refused.status_code == 503 and refused.json()["error"] == "draining" and refused.headers["retry-after"] == "1"
    )
    assert client.get("/health").status_code == 200  # alive, just not taking work
    assert 'cola_rejected_total{reason="draining"} 1.0' in client.get("/metrics").text


def scraped(url: str, name: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
        return metric(response.read().decode(), name)


def in_flight(url: str) -> float:
    return scraped(url, "cola_requests_in_flight")


def in_flight_requests(pool: ThreadPoolExecutor, url: str, texts: list[list[str]], limit_s: float = 60) -> list:
    """POST each list of `texts` from the pool, return their futures once the server counts them all in flight."""
    answers = [pool.submit(post, url, batch) for batch in texts]
    end = time.monotonic() + limit_s  # a hang guard, not a speed assertion
    while in_flight(url) < len(answers):
        assert time.monotonic() < end, "requests never all reached the server"
        time.sleep(0.02)
    return answers


def post(url: str, texts: list[str]) -> int | str:
    request = urllib.request.Request(
        url + "/predict", json.dumps({"text": texts}).encode(), {"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError as exc:  # connection refused / reset: a lost request
        return type(getattr(exc, "reason", exc)).__name__


@pytest.mark.slow
def test_sigterm_answers_every_request_in_flight_then_exits_0(tiny_bundle):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.serving.slow_server", str(port), "0.4"],  # each model call takes 0.4 s more
        cwd=ROOT,
        env=serve_env(tiny_bundle, COLA_MAX_BATCH="1", COLA_QUEUE_BUDGET_MS="60000", COLA_DEADLINE_MS="60000"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    listener_closed = threading.Event()

    def read_output() -> None:
        for line in server.stdout:
            lines.append(line)
            if "Waiting for connections to close" in line:  # uvicorn logs it right after closing its listener
                listener_closed.set()

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()
    try:
        wait_ready(url, server)
        requests = 5  # one model call each (COLA_MAX_BATCH=1): about 2 s of queued work
        with ThreadPoolExecutor(requests) as pool:
            answers = in_flight_requests(pool, url, [[f"Sentence number {i} is here."] for i in range(requests)])
            server.send_signal(signal.SIGTERM)
            assert listener_closed.wait(timeout=30), "uvicorn never closed its listener"  # a hang guard
            after = post(url, ["Sent after SIGTERM."])  # the listener is closed
            statuses = [a.result() for a in answers]
        exit_code = server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
    reader.join(timeout=30)
    log = [json.loads(line) for line in lines if line.startswith("{")]
    assert statuses == [200] * requests  # every accepted request answered: none lost
    assert after == "ConnectionRefusedError"
    assert exit_code == 0
    events = [line["event"] for line in log]
    assert "draining" in events and events[-1] == "stopped"
    assert sum(1 for line in log if line["event"] == "prediction") == requests


@pytest.mark.slow
def test_a_client_that_closes_its_socket_while_queued_is_a_499_and_never_computed(tiny_bundle):
    """test_nothing_is_computed_for_a_client_that_went_away over a real TCP connection to a real uvicorn server:
    a client whose whole request was read and queued closes its socket; uvicorn reports the disconnect, the request
    is a 499 (logged and counted, never a 5xx) and its sentences never reach the model. The model calls are held
    (slow_server's hold mode), so each step waits for an event, not for time to pass."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.serving.slow_server", str(port), "hold"],
        cwd=ROOT,  # one model call at a time, so the second request queues behind the held first one
        env=serve_env(tiny_bundle, COLA_MODEL_CALLS="1", COLA_QUEUE_BUDGET_MS="60000", COLA_DEADLINE_MS="60000"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    held, gone = threading.Event(), threading.Event()

    def read_output() -> None:
        for line in server.stdout:
            lines.append(line)
            if line.startswith("held "):
                held.set()
            if line.startswith("{") and json.loads(line).get("status") == 499:  # logged once it is counted
                gone.set()

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()
    body = json.dumps({"text": ["Leaving now.", "Gone."]}).encode()
    try:
        wait_ready(url, server)
        with ThreadPoolExecutor(1) as pool:
            staying = pool.submit(post, url, ["Stays."])
            assert held.wait(timeout=30), "the first request never reached the model"  # a hang guard
            with socket.create_connection(("127.0.0.1", port), timeout=30) as leaving:
                leaving.sendall(
                    b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                end = time.monotonic() + 30  # a hang guard, not a speed assertion
                while scraped(url, "cola_queued_tokens") == 0:  # read, parsed and queued behind the held call
                    assert time.monotonic() < end, "the second request was never queued"
                    time.sleep(0.02)
            # the socket is closed: the client left while its request was queued
            assert gone.wait(timeout=30), "the server never noticed the client leave"
            status_499 = scraped(url, 'cola_requests_total{method="POST",route="/predict",status="499"}')
            server.stdin.write("\n")  # let the held call finish
            server.stdin.flush()
            assert staying.result() == 200
    finally:
        server.stdin.close()  # releases any call still held, so the server can drain and stop
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    reader.join(timeout=30)
    log = [json.loads(line) for line in lines if line.startswith("{")]
    assert [line for line in lines if line.startswith("held ")] == ["held 1\n"]  # only "Stays." reached the model
    assert [line["reason"] for line in log if line["event"] == "rejected"] == ["client_gone"]
    assert sum(line["event"] == "prediction" for line in log) == 1
    predicts = [line for line in log if line["event"] == "request" and line["path"] == "/predict"]
    assert sorted(line["status"] for line in predicts) == [200, 499]
    assert status_499 == 1
