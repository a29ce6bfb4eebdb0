"""The pure helpers of the serving load benchmark (scripts/loadgen.py, scripts/bench_serving.py): statistics,
status classes, the SIGTERM classification, the long-list inputs, and the raw HTTP client on a loopback
server. Nothing here is timed."""

from __future__ import annotations

import asyncio
import json
import random
import time

import pytest

from scripts import bench_serving as bench
from scripts import loadgen

Record = loadgen.Record


def test_percentile_interpolates_and_handles_edges():
    assert loadgen.percentile([], 50) is None
    assert loadgen.percentile([7.0], 99) == 7.0
    assert loadgen.percentile([1, 2, 3, 4], 50) == 2.5
    assert loadgen.percentile(list(range(101)), 99) == 99
    assert loadgen.percentile([5, 1, 3], 100) == 5


def test_status_counts_groups_the_goal_classes():
    counts = loadgen.status_counts({200: 5, 503: 3, 504: 1, 500: 2, 502: 1, 422: 4}, socket_errors=2)
    assert counts == {"200": 5, "503": 3, "504": 1, "other_5xx": 3, "other": 4, "socket_errors": 2, "total": 18}


def test_wrk_status_lines_split_timed_and_uncorrelated():
    timed, counts = loadgen.parse_wrk_status_lines(["200 1.5", "503 0.2", "200 3.0", "503 -", "garbage", ""])
    assert timed == {200: [1.5, 3.0], 503: [0.2]}
    assert counts == {200: 2, 503: 2}


def test_sigterm_classification():
    t = 100.0
    records = [
        Record(start=98.0, sent=98.0, done=99.0, status=200),  # answered before SIGTERM: not in flight
        Record(start=99.5, sent=99.5, done=100.4, status=200),  # in flight, answered: accepted
        Record(start=99.9, sent=99.9, done=100.1, error="reset"),  # in flight, connection dropped: lost
        Record(start=99.95, sent=99.95, done=100.2, status=503, error_code="draining"),  # accepted (an answer)
        Record(start=100.2, sent=100.2, done=100.3, status=503, error_code="draining"),  # after
        Record(start=100.5, done=100.5, error="connect_refused", fresh_connection=True),  # after, never sent
        Record(start=99.99, sent=100.01, done=100.3, error="eof"),  # written after the signal: after, not lost
    ]
    out = loadgen.classify_sigterm(records, t)
    assert out["sent_before_sigterm"] == 4
    assert out["in_flight_at_sigterm"] == 3
    assert out["in_flight_outcomes"] == {"200": 1, "error:reset": 1, "503": 1}
    assert out["in_flight_200"] == 1
    assert out["accepted_before_sigterm"] == 3
    assert out["lost"] == 1 and out["lost_detail"][0]["error"] == "reset"
    assert out["after_sigterm"] == 3
    assert out["after_sigterm_outcomes"] == {"503 draining": 1, "error:connect_refused (never sent)": 1, "error:eof": 1}
    assert out["last_200_after_sigterm_s"] == pytest.approx(0.4)


def test_long_list_body_stays_within_the_app_limits():
    rng = random.Random(0)
    body = loadgen.long_list_body(rng, sentences=64, target_chars=900)
    texts = json.loads(body)["text"]
    assert len(texts) == 64 and len(body) < 256 * 1024
    assert all(850 <= len(t) <= 1000 and t[0].isupper() and t.endswith(".") for t in texts)
    assert all(w.strip(",.").lower() in loadgen.WORDS for w in texts[0].split())
    assert loadgen.long_list_body(random.Random(0)) == body  # seeded: the same load every run


def test_prometheus_samples():
    text = (
        '# HELP x\ncola_rejected_total{reason="queue_full"} 3.0\ncola_rejected_total{reason="deadline"} 0.0\nother 1\n'
    )
    assert loadgen.prometheus_samples(text, ("cola_rejected_total",)) == {
        'cola_rejected_total{reason="queue_full"}': 3.0,
        'cola_rejected_total{reason="deadline"}': 0.0,
    }


def test_summarize_records_reads_error_codes_and_accepted_latency():
    records = [
        Record(start=0.0, sent=0.0, done=0.1, status=200),
        Record(start=0.0, sent=0.0, done=0.3, status=200),
        Record(start=0.0, sent=0.0, done=0.01, status=503, error_code="overloaded", retry_after="1"),
        Record(start=0.0, done=0.0, error="connect_refused"),
    ]
    out = loadgen.summarize_records(records)
    assert out["status"]["200"] == 2 and out["status"]["503"] == 1 and out["status"]["socket_errors"] == 1
    assert out["non_200_by_error_code"] == {"503 overloaded": 1}
    assert out["retry_after_values"] == ["1"]
    assert out["accepted_latency"]["p50_ms"] == pytest.approx(200)


def test_http_client_on_a_loopback_server():
    """Content-Length and chunked bodies, the JSON error code, Retry-After, and a dropped connection."""
    answers = [
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}",
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2\r\ntransfer-encoding: chunked\r\n\r\n"
        b'12\r\n{"error": "overloa\r\n4\r\nded"\r\n1\r\n}\r\n0\r\n\r\n',
        None,  # close without answering
    ]

    async def handle(reader, writer):
        for answer in answers:
            await reader.readuntil(b"\r\n\r\n")
            if answer is None:
                break
            writer.write(answer)
            await writer.drain()
        writer.close()

    async def go():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = loadgen.HttpClient(port, timeout_s=10)
        try:
            return [await client.request("GET", "/x") for _ in range(3)]
        finally:
            await client.close()
            server.close()
            await server.wait_closed()

    ok, refused, dropped = asyncio.run(go())
    assert (ok.status, ok.fresh_connection) == (200, True)
    assert (refused.status, refused.error_code, refused.retry_after, refused.fresh_connection) == (
        503,
        "overloaded",
        "2",
        False,
    )
    assert dropped.status is None and dropped.error in ("eof", "reset") and dropped.sent is not None


def _overload(p99: float, service: float, other_5xx: int = 0, rss: float = 200.0) -> dict:
    status = {"200": 10, "503": 5, "504": 0, "other_5xx": other_5xx, "other": 0, "socket_errors": 0, "total": 15}
    return {"status": status, "accepted_latency": {"p99_ms": p99, "max_ms": p99},
            "one_batch_service": {"p50_ms": service}, "rss": {"rss_start_mb": 150.0, "rss_peak_mb": rss}}  # fmt: skip


def test_goal_checks():
    c32 = {"app": {"concurrency_1": {}, "concurrency_32": {"req_per_s": 900.0, "p50_ms": 30.0, "p99_ms": 95.0,
                                                           "non_2xx": 0, "socket_errors": 0}},
           "original": {"concurrency_32": {"req_per_s": 50.0}}}  # fmt: skip
    results = {
        "c32": c32,
        "overload_a": _overload(p99=520.0, service=50.0),
        "overload_b": {"long_post": _overload(p99=400.0, service=0), **_overload(p99=0, service=300.0, rss=300.0)},
        "sigterm": {"lost": 0, "in_flight_at_sigterm": 32, "in_flight_200": 32, "exit_code": 0, "drain_time_s": 0.4},
    }
    checks = {c["goal"]: c["pass"] for c in bench.goal_checks(results, budget_ms=500)}
    assert checks["concurrency_32: app req/s >= 15x original"] is True  # 18x
    assert checks["concurrency_32: app p99 <= 3x p50"] is False  # 3.2x
    assert checks["overload_a: accepted p99 <= queue budget 500 ms (strict)"] is False
    assert checks["overload_a: accepted p99 <= budget + one batch's service time"] is True
    assert checks["overload_b long_post: accepted p99 <= queue budget 500 ms (strict)"] is True
    assert checks["overload_b: peak RSS <= 250 MB"] is False
    assert checks["sigterm: 0 accepted requests lost"] is True
    assert checks["sigterm: exit code 0 within the grace period"] is True


def _limit(req_per_s: float, model_per_s: float, c1_ms: float, model_c1_ms: float, p99: float = 60.0) -> dict:
    loaded = {"req_per_s": req_per_s, "p50_ms": 30.0, "p99_ms": p99, "non_2xx": 0, "socket_errors": 0}
    return {"concurrency_1": {"p50_ms": c1_ms}, "concurrency_32": loaded, "rss_peak_mb": 190.0,
            "model_only": {"c1_p50_ms": model_c1_ms, "sentences_per_s": model_per_s, "calls": 2, "batch": 6},
            "throughput_ratio": req_per_s / model_per_s, "c1_overhead_ms": c1_ms - model_c1_ms}  # fmt: skip


def test_limit_checks_hold_the_app_to_the_models_own_figures():
    results = {"limit": {"app": _limit(1200.0, 1450.0, 2.2, 1.95), "granian": _limit(1100.0, 1450.0, 2.3, 1.95, 95.0)}}
    checks = {c["goal"]: c["pass"] for c in bench.goal_checks(results, budget_ms=500)}
    assert checks["limit app: HTTP concurrency_32 req/s >= 80% of model-only sentences/s"] is True  # 83 %
    assert checks["limit granian: HTTP concurrency_32 req/s >= 80% of model-only sentences/s"] is False  # 76 %
    assert checks["limit app: c=1 HTTP p50 <= model-only p50 + 0.3 ms"] is True  # +0.25 ms
    assert checks["limit granian: c=1 HTTP p50 <= model-only p50 + 0.3 ms"] is False  # +0.35 ms
    assert checks["limit granian: concurrency_32 p99 <= 3x p50"] is False  # 3.2x


def test_thread_cpu_counts_this_process_threads():
    import os
    import threading

    stop = threading.Event()
    spinner = threading.Thread(target=lambda: [None for _ in iter(stop.is_set, True)])
    spinner.start()
    try:
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            pass
        cpu = bench.thread_cpu_s(os.getpid())
    finally:
        stop.set()
        spinner.join()
    assert os.getpid() in cpu and spinner.native_id in cpu  # the main thread's id is the process id
    assert cpu[os.getpid()] >= 0.1 and cpu[spinner.native_id] > 0
