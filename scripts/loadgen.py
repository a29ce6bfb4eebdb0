"""Load-generation helpers for scripts/bench_serving.py (not a test, not part of the app).

- `wrk_by_status`: wrk (the maintained tool; the overload sections) with a Lua script that times every request
  by its X-Request-ID, so latency is known per HTTP status (wrk's own histogram mixes fast 503s with slow 200s);
- `HttpClient` / `run_clients`: an asyncio HTTP/1.1 keep-alive client on raw sockets that records, per request,
  when it was written, when it was answered and with what (status, `error` code of a JSON error body,
  Retry-After) or which connection error ended it;
- `RssSampler`: resident memory of a server process and its children, sampled every 100 ms;
- pure helpers (percentiles, status classes, the SIGTERM classification, long English-looking sentences,
  Prometheus text parsing) that tests/serving/test_bench_serving.py checks.

Why the SIGTERM and long-list sections do not use wrk or locust: they judge each request by when its last byte
was handed to the kernel (in flight at SIGTERM, or not yet sent), by whether it rode a fresh or a reused
connection, and by what ended it: a status with the JSON body's `error` code and Retry-After, or a connection
error by kind (refused, reset, EOF, broken pipe, timeout). wrk only counts socket errors (connect/read/write/
timeout totals in `done()`), never per request nor when they happened, and reconnects on its own; locust's
clients (requests/urllib3, geventhttpclient) keep a connection pool that retries or reopens a connection the
server closed, which hides exactly the refusals and resets a drain produces, and neither tool reports when a
request was fully written. HttpClient, read_response and run_clients (about 110 lines) give those per-request records.

Everything talks to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import re
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"

# ---------------------------------------------------------------------------------------------- statistics


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation between closest ranks; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def latency_summary(ms: list[float]) -> dict:
    """count, p50, p90, p99, max (ms, rounded) of a list of latencies."""

    def r(x):
        return None if x is None else round(x, 2)

    return {"count": len(ms), "p50_ms": r(percentile(ms, 50)), "p90_ms": r(percentile(ms, 90)),
            "p99_ms": r(percentile(ms, 99)), "max_ms": r(max(ms) if ms else None)}  # fmt: skip


def status_counts(statuses: dict[int, int], socket_errors: int = 0) -> dict:
    """Group responses the way the goals read them: 200, 503, 504, other 5xx, other statuses, socket errors."""
    out = {"200": 0, "503": 0, "504": 0, "other_5xx": 0, "other": 0, "socket_errors": socket_errors}
    for status, n in statuses.items():
        if status in (200, 503, 504):
            out[str(status)] += n
        elif 500 <= status < 600:
            out["other_5xx"] += n
        else:
            out["other"] += n
    out["total"] = sum(statuses.values()) + socket_errors
    return out


# ---------------------------------------------------------------------------------------------- wrk

WRK_STATUS_LUA = r"""
-- Per-status latency for wrk 4: every request carries X-Request-ID "w<thread>-<n>"; response() finds its send
-- time by the echoed header (or the "request_id" of a JSON error body) and appends "<status> <ms>" to a file
-- per thread (C stdio flushes them when wrk exits). Unmatched responses are written with latency "-".
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } lg_timespec;
int clock_gettime(int clk_id, lg_timespec *tp);
]]
local ts = ffi.new("lg_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end

local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
  thread:set("out", "__PREFIX__" .. #threads)
end

sent_n, answered, unmatched = 0, 0, 0
local sent = {}
local f

function init(args)
  f = io.open(out, "w")
end

function request()
  sent_n = sent_n + 1
  local rid = "w" .. tid .. "-" .. sent_n
  sent[rid] = now_us()
  return wrk.format(nil, nil, {["X-Request-ID"] = rid})
end

function response(status, headers, body)
  local rid = headers["x-request-id"] or headers["X-Request-ID"] or headers["X-Request-Id"]
  if not rid and body then rid = string.match(body, '"request_id"%s*:%s*"([^"]+)"') end
  local t0 = rid and sent[rid]
  if t0 then
    sent[rid] = nil
    answered = answered + 1
    f:write(status, " ", string.format("%.3f", (now_us() - t0) / 1000), "\n")
  else
    unmatched = unmatched + 1
    f:write(status, " -\n")
  end
end

function done(summary, latency, requests)
  local s, a, u = 0, 0, 0
  for _, t in ipairs(threads) do
    s = s + t:get("sent_n"); a = a + t:get("answered"); u = u + t:get("unmatched")
  end
  local e = summary.errors
  io.write(string.format('WRK_JSON {"requests":%d,"duration_s":%.3f,"connect_errors":%d,"read_errors":%d,'
    .. '"write_errors":%d,"timeouts":%d,"status_errors":%d,"sent":%d,"answered":%d,"unmatched":%d,'
    .. '"all_p50_ms":%.3f,"all_p99_ms":%.3f,"all_max_ms":%.3f}\n', summary.requests, summary.duration / 1e6,
    e.connect, e.read, e.write, e.timeout, e.status, s, a, u, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end
"""


def parse_wrk_status_lines(lines: list[str]) -> tuple[dict[int, list[float]], dict[int, int]]:
    """("<status> <ms>" | "<status> -") lines -> ({status: [ms, ...]} timed, {status: n} all responses)."""
    timed: dict[int, list[float]] = {}
    counts: dict[int, int] = {}
    for line in lines:
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            continue
        status = int(parts[0])
        counts[status] = counts.get(status, 0) + 1
        if parts[1] != "-":
            timed.setdefault(status, []).append(float(parts[1]))
    return timed, counts


def wrk_by_status(url: str, connections: int, seconds: int, threads: int = 2, timeout_s: int = 10) -> dict:
    """wrk against `url`; status counts (200/503/504/other 5xx/other, socket errors) and latency per status."""
    with tempfile.TemporaryDirectory(prefix="wrk-status-") as tmp:
        script = Path(tmp) / "status.lua"
        script.write_text(WRK_STATUS_LUA.replace("__PREFIX__", str(Path(tmp) / "thread")))
        threads = max(1, min(threads, connections))
        out = subprocess.run(
            ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", f"{timeout_s}s",
             "-s", str(script), url],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        summary = json.loads(next(line for line in out.splitlines() if line.startswith("WRK_JSON ")).split(" ", 1)[1])
        lines = [line for i in range(1, threads + 1) if (Path(tmp) / f"thread{i}").exists()
                 for line in (Path(tmp) / f"thread{i}").read_text().splitlines()]  # fmt: skip
    timed, counts = parse_wrk_status_lines(lines)
    socket_errors = summary["connect_errors"] + summary["read_errors"] + summary["write_errors"] + summary["timeouts"]
    return {
        "connections": connections,
        "duration_s": summary["duration_s"],
        "responses": sum(counts.values()),
        "req_per_s": round(sum(counts.values()) / summary["duration_s"], 1),
        "status": status_counts(counts, socket_errors),
        "socket_error_kinds": {k: summary[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts")},
        "accepted_latency": latency_summary(timed.get(200, [])),
        "latency_by_status": {str(s): latency_summary(v) for s, v in sorted(timed.items())},
        "all_responses_latency_wrk": {k: round(summary[k], 2) for k in ("all_p50_ms", "all_p99_ms", "all_max_ms")},
        "unanswered_incl_in_flight_at_end": summary["sent"] - summary["answered"] - summary["unmatched"],
        "uncorrelated_responses": summary["unmatched"],
    }


# ---------------------------------------------------------------------------------------------- memory


def _children(pid: int) -> list[int]:
    kids = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            kids += [int(k) for k in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    except OSError:
        pass
    return kids


def process_tree(pid: int) -> list[int]:
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += _children(p)
    return tree


def proc_status_mb(pid: int, field_name: str = "VmRSS") -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class RssSampler:
    """Sum of VmRSS over a process and its descendants every `interval` s, in a thread; the peak of that
    sum, and the largest VmHWM (kernel's own peak) seen per process."""

    def __init__(self, pid: int, interval: float = 0.1):
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, float]] = []
        self.hwm: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> float | None:
        total, seen = 0.0, False
        for p in process_tree(self.pid):
            rss = proc_status_mb(p)
            if rss is not None:
                total, seen = total + rss, True
                hwm = proc_status_mb(p, "VmHWM")
                if hwm is not None:
                    self.hwm[p] = max(self.hwm.get(p, 0.0), hwm)
        if seen:
            self.samples.append((time.monotonic(), total))
        return total if seen else None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def summary(self) -> dict:
        values = [v for _, v in self.samples]
        return {
            "rss_start_mb": round(values[0], 1) if values else None,
            "rss_peak_mb": round(max(values), 1) if values else None,
            "rss_end_mb": round(values[-1], 1) if values else None,
            "vmhwm_sum_mb": round(sum(self.hwm.values()), 1) if self.hwm else None,  # upper bound of the tree's peak
            "processes": len(self.hwm),
            "samples": len(values),
        }


# ---------------------------------------------------------------------------------------------- HTTP client


@dataclass
class Record:
    """One request as the client saw it. Times are time.monotonic() seconds."""

    start: float  # before the first byte was written (or the connection was opened for it)
    sent: float | None = None  # the whole request was handed to the kernel; None: never sent
    done: float | None = None  # response complete or error
    status: int | None = None
    error: str | None = None  # connection error that ended it: connect_refused, reset, eof, timeout, ...
    error_code: str | None = None  # "error" of a JSON error body
    retry_after: str | None = None
    fresh_connection: bool = False
    kind: str = ""  # the caller's label, e.g. "long_post" or "short_get"

    @property
    def latency_ms(self) -> float | None:
        return None if self.done is None else (self.done - self.start) * 1000


class HttpError(Exception):
    def __init__(self, code: str):
        super().__init__(code)
        self.code = code


def error_code(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)  # urllib's URLError wraps the socket error
    if isinstance(reason, BaseException):
        exc = reason
    if isinstance(exc, HttpError):
        return exc.code
    if isinstance(exc, ConnectionRefusedError):
        return "connect_refused"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, BrokenPipeError):
        return "broken_pipe"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "eof"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, (ValueError, asyncio.LimitOverrunError)):
        return "bad_response"
    return type(exc).__name__


class HttpClient:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1:port, reopened when the server closes it."""

    def __init__(self, port: int, timeout_s: float = 60.0):
        self.port, self.timeout_s = port, timeout_s
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except Exception:
                pass
        self.reader = self.writer = None

    async def request(self, method: str, path: str, body: bytes | None = None, kind: str = "",
                      headers: dict[str, str] | None = None) -> Record:  # fmt: skip
        record = Record(start=time.monotonic(), kind=kind)
        try:
            await asyncio.wait_for(self._exchange(record, method, path, body, headers or {}), self.timeout_s)
        except (
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
            HttpError,
            ValueError,
        ) as exc:
            record.error = error_code(exc)
            await self.close()
        record.done = time.monotonic()
        return record

    async def _exchange(self, record: Record, method: str, path: str, body: bytes | None, headers: dict) -> None:
        if self.writer is None or self.reader is None:
            record.fresh_connection = True
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        head = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{self.port}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None:
            head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + (body or b""))
        await self.writer.drain()
        record.sent = time.monotonic()
        status, response_headers, payload = await read_response(self.reader)
        record.status = status
        record.retry_after = response_headers.get("retry-after")
        if status != 200 and payload[:1] == b"{":
            try:
                record.error_code = json.loads(payload).get("error")
            except (ValueError, AttributeError):
                pass
        if response_headers.get("connection", "").lower() == "close":
            await self.close()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise HttpError("bad_status_line")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            chunks.append(chunk[:-2])
        body = b"".join(chunks)
    else:
        body = await reader.read()
    return int(parts[1]), headers, body


async def run_clients(port: int, clients: int, next_request, stop: asyncio.Event | None = None,
                      timeout_s: float = 60.0, reconnect_pause_s: float = 0.02) -> list[Record]:  # fmt: skip
    """`clients` closed-loop clients, each on its own keep-alive connection: `next_request()` returns
    (method, path, body, kind) or None (this client stops); also stops when `stop` is set. After a connection
    error a client waits `reconnect_pause_s` before its next request (no busy loop against a closed port)."""
    records: list[Record] = []

    async def one() -> None:
        client = HttpClient(port, timeout_s)
        try:
            while stop is None or not stop.is_set():
                job = next_request()
                if job is None:
                    return
                method, path, body, kind = job
                record = await client.request(method, path, body, kind)
                records.append(record)
                if record.error:
                    await asyncio.sleep(reconnect_pause_s)
        finally:
            await client.close()

    await asyncio.gather(*(one() for _ in range(clients)))
    return records


def summarize_records(records: list[Record]) -> dict:
    """Status counts and latency of accepted (200) requests, for records of one kind."""
    statuses: dict[int, int] = {}
    for r in records:
        if r.status is not None:
            statuses[r.status] = statuses.get(r.status, 0) + 1
    errors: dict[str, int] = {}
    for r in records:
        if r.status is None:
            errors[r.error or "unknown"] = errors.get(r.error or "unknown", 0) + 1
    refused_codes: dict[str, int] = {}
    for r in records:
        if r.status is not None and r.status != 200:
            key = f"{r.status} {r.error_code or ''}".strip()
            refused_codes[key] = refused_codes.get(key, 0) + 1
    retry_after = sorted({r.retry_after for r in records if r.retry_after is not None})
    ms = [t for r in records if r.status == 200 and (t := r.latency_ms) is not None]
    refused_ms = [t for r in records if r.status in (503, 504) and (t := r.latency_ms) is not None]
    return {
        "requests": len(records),
        "status": status_counts(statuses, sum(errors.values())),
        "socket_error_kinds": errors,
        "non_200_by_error_code": refused_codes,
        "retry_after_values": retry_after[:10],
        "accepted_latency": latency_summary(ms),
        "refused_latency_503_504": latency_summary(refused_ms),
    }


# ---------------------------------------------------------------------------------------------- SIGTERM


def classify_sigterm(records: list[Record], sigterm_at: float) -> dict:
    """Sort the requests of a SIGTERM-during-load run around the signal time.

    in flight at SIGTERM: sent (fully written) before the signal, not answered before it;
    accepted: sent before the signal and got an HTTP response (any status); lost: sent before the signal
    on an open connection and ended by a connection error or no response at all; after: requests started
    after the signal (connection refused or 503 draining are the expected answers).
    """
    before = [r for r in records if r.sent is not None and r.sent < sigterm_at]
    in_flight = [r for r in before if r.done is None or r.done >= sigterm_at]
    lost = [r for r in before if r.status is None]
    after = [r for r in records if r not in before]
    statuses_in_flight: dict[str, int] = {}
    for r in in_flight:
        key = str(r.status) if r.status is not None else f"error:{r.error}"
        statuses_in_flight[key] = statuses_in_flight.get(key, 0) + 1
    after_kinds: dict[str, int] = {}
    for r in after:
        if r.status is not None:
            key = f"{r.status} {r.error_code or ''}".strip()
        else:
            key = f"error:{r.error}" + (" (never sent)" if r.sent is None else "")
        after_kinds[key] = after_kinds.get(key, 0) + 1
    answered = [r.done for r in records if r.status == 200 and r.done is not None]
    return {
        "requests_total": len(records),
        "sent_before_sigterm": len(before),
        "in_flight_at_sigterm": len(in_flight),
        "in_flight_outcomes": statuses_in_flight,
        "in_flight_200": sum(1 for r in in_flight if r.status == 200),
        "accepted_before_sigterm": sum(1 for r in before if r.status is not None),
        "lost": len(lost),
        "lost_detail": [
            {
                "error": r.error,
                "sent_ms_before_sigterm": None if r.sent is None else round((sigterm_at - r.sent) * 1000, 2),
                "fresh_connection": r.fresh_connection,
            }
            for r in lost[:20]
        ],  # fmt: skip
        "after_sigterm": len(after),
        "after_sigterm_outcomes": after_kinds,
        "after_sigterm_200": sum(1 for r in after if r.status == 200),
        "last_200_after_sigterm_s": round(max(answered) - sigterm_at, 3)
        if answered and max(answered) > sigterm_at
        else None,
    }


# ---------------------------------------------------------------------------------------------- inputs

WORDS = """the of and to in that it was for on are with as his they be at one have this from by had not but what
all were when we there can an your which their said if will each about how up out them then she many some so
these would other into has more her two like him see time could no make than first been its who now people my
made over did down only way find use may water long little very after words called just where most know get
through back much before go good new write our used me man too any day same right look think also around another
came come work three word must because does part even place well such here take why things help put years
different away again off went old number great tell men say small every found still between name should home
big give air line set own under read last never us left end along while might next sound below saw something
thought both few those always looked show large often together asked house world going want school important
until form food keep children feet land side without boy once animals life enough took sometimes four head above
kind began almost live page got earth need far hand high year mother light parts country father let night
following picture being study second eyes soon times story boys since white days ever paper hard near sentence
better best across during today others however sure means knew try told young miles sun ways thing whole hear
example heard several change answer room sea against top turned learn point city play toward five using himself
usually money seen car morning given body family later turn move face door cut done group true half red fish
plants living black eat short river field ago stood questions book carefully teacher garden quickly letter""".split()


def long_sentence(rng: random.Random, target_chars: int = 900, max_chars: int = 990) -> str:
    """An English-looking sentence of about `target_chars` characters (never over `max_chars`): common words,
    a comma now and then, a capital and a full stop."""
    words: list[str] = []
    length = 0
    while length < target_chars - 12:
        word = rng.choice(WORDS)
        if words and rng.random() < 0.08:
            words[-1] += ","
        words.append(word)
        length += len(word) + 1
    text = " ".join(words).rstrip(",") + "."
    text = text[0].upper() + text[1:]
    return text[: max_chars - 1].rstrip(" ,") + "." if len(text) > max_chars else text


def long_list_body(rng: random.Random, sentences: int = 64, target_chars: int = 900) -> bytes:
    return json.dumps({"text": [long_sentence(rng, target_chars) for _ in range(sentences)]}).encode()


# ---------------------------------------------------------------------------------------------- /metrics

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eEinfa]+)")


def prometheus_samples(text: str, names: tuple[str, ...]) -> dict[str, float]:
    """{"name{labels}": value} for the sample lines whose metric name is one of `names`."""
    out = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and m.group(1) in names:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def http_get(port: int, path: str, timeout_s: float = 10.0) -> tuple[int, bytes]:
    """A blocking GET (status, body) on 127.0.0.1, for /metrics and /ready probes outside the load."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
