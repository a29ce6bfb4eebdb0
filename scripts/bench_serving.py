"""Load benchmark of the serving app (not a test): every figure of the serving issue, measured in one run.

Sections (each on a fresh server process, all on 127.0.0.1; load from `wrk` or an asyncio client):
  c32        this app (`python -m app`) and the original project's approach: the fp32 ONNX export of the same
             model (artifacts/onnx/model.fp32.onnx; the original served fp32), transformers tokenizer padding every
             input to 128 tokens, inference inside an `async` handler, so it blocks the event loop: start -> /ready,
             RSS, one sentence at concurrency 1 (p50/p99), concurrency 32 for --duration s (req/s, p50/p99, errors)
             and the req/s ratio;
  variants   concurrency 32 again, other ways to use the cores (the app's default is one single-threaded model call
             per core, COLA_MODEL_CALLS): one call at a time with 1 thread (the previous default) and with
             COLA_ORT_THREADS=2, and `uvicorn --factory app.main:from_env --workers 2` with one 1-thread call per
             worker (RSS of the parent and both workers);
  overload_a 512 connections on GET /predict for --overload-seconds (wrk + a Lua script that times every
             request by its X-Request-ID): req/s, 200/503/504/other 5xx/socket errors, p50/p99 of the accepted
             (200) requests only, peak RSS (VmRSS sampled every 100 ms, children included);
  overload_b the "long-list mix": 64 clients POST 64 sentences of ~900 characters each, 128 requests in all
             (asyncio client); status counts, accepted p50/p99/max, the service time of one such batch alone,
             peak RSS; then the same with short GETs running beside it (overload_b_mix, --no-mix skips it);
  sigterm    32 clients send GETs without pause; SIGTERM mid-run; the load goes on for --after-sigterm s:
             requests in flight at SIGTERM and how they ended, lost requests, what later requests got, /ready
             after the signal, exit code and drain time;
  goals      pass/fail of each goal of the issue, with its figures.
The JSON (--out) has everything plus the machine fingerprint and the app's commit; a table is printed.

    python -m scripts.bench_serving --bundle artifacts/bundle --out reports/serving/bench.json
    python -m scripts.bench_serving --quick --duration 5 --out /tmp/bench-smoke.json     # smoke run, ~2 min
    python -m scripts.bench_serving --sections overload_b,sigterm --env COLA_QUEUE_BUDGET_MS=300

Settings for the app under test: the environment (COLA_* variables) plus --env KEY=VALUE; the queue budget of
the goal checks is COLA_QUEUE_BUDGET_MS from there (default 500).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from scripts import loadgen

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

SENTENCE = "The more books I read, the more I understand."
SECTIONS = ("limit", "c32", "variants", "overload_a", "overload_b", "sigterm")
DEFAULT_QUEUE_BUDGET_MS = 500
RSS_GOAL_MB = 250
THROUGHPUT_GOAL = 0.8  # HTTP req/s over model-only sentences/s, same cores, same batch size
C1_OVERHEAD_GOAL_MS = 0.3  # one sentence at c=1: HTTP p50 - model-only p50
WRK_REPORT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK_JSON {"requests":%d,"duration_s":%.3f,"socket_errors":%d,"non_2xx":%d,'
    .. '"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f}\\n', summary.requests, summary.duration / 1e6,
    e.connect + e.read + e.write + e.timeout, e.status, latency:percentile(50) / 1000,
    latency:percentile(90) / 1000, latency:percentile(99) / 1000))
end
"""


POST_LUA = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
"""


ORIGINAL_MODEL = ROOT / "artifacts" / "onnx" / "model.fp32.onnx"  # written by the export_onnx stage


def original_app(bundle: Path, model: Path = ORIGINAL_MODEL):
    """The original project's serving approach: fp32, pad to 128, blocking handler (torch is not needed for it)."""
    import numpy as np
    import onnxruntime as ort
    from fastapi import FastAPI
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(bundle / "tokenizer.json"),
        unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
    )  # fmt: skip
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    labels = json.loads((bundle / "config.json").read_text())["labels"]
    app = FastAPI()

    @app.get("/predict")
    async def predict(text: str):  # blocking work inside async: one request at a time, loop stalled
        encoded = tokenizer(
            [text],
            padding="max_length",
            max_length=128,
            truncation=True,
            return_token_type_ids=True,
            return_tensors="np",
        )
        logits = session.run(None, {n: encoded[n].astype(np.int64) for n in names})[0]
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        return [{"label": labels[int(p.argmax())], "score": float(p.max())} for p in probs]

    @app.get("/ready")
    async def ready():
        return {"status": "ready"}

    return app


# ---------------------------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    value = loadgen.proc_status_mb(pid, field)
    return float("nan") if value is None else value


class Server:
    """A server process on 127.0.0.1:port: `app` (python -m app), `granian` (the app under granian), `workers`
    (uvicorn --workers N) or `original`.
    stdout (the app's JSON log lines) is discarded; stderr goes to a file (a pipe could fill up)."""

    def __init__(self, kind: str, bundle: Path, env: dict[str, str], workers: int = 2, keep_log: bool = False):
        self.kind, self.port = kind, free_port()
        if kind == "app":
            cmd = [sys.executable, "-m", "app", "--port", str(self.port)]
        elif kind == "granian":  # the same app under granian (Rust HTTP server) instead of uvicorn
            cmd = [sys.executable, "-m", "granian", "--interface", "asgi", "--factory", "--host", "127.0.0.1",
                   "--port", str(self.port), "--workers", "1", "--loop", "uvloop", "--no-ws", "--log-level",
                   "warning", "app.main:from_env"]  # fmt: skip
        elif kind == "workers":
            cmd = [sys.executable, "-m", "uvicorn", "--factory", "app.main:from_env", "--workers", str(workers),
                   "--host", "127.0.0.1", "--port", str(self.port), "--no-access-log",
                   "--log-level", "warning"]  # fmt: skip
        else:
            cmd = [sys.executable, "-m", "scripts.bench_serving", "--serve-original",
                   "--bundle", str(bundle), "--port", str(self.port)]  # fmt: skip
        self.env = {k: v for k, v in os.environ.items() if k != "AWS_LAMBDA_FUNCTION_NAME"}
        self.env.update({"COLA_BUNDLE_DIR": str(bundle), **env})
        # the server writes to files opened for it (O_APPEND); we read them through our own handles
        self.tmp = tempfile.TemporaryDirectory(prefix=f"bench-{kind}-")
        self.stderr_path, self.stdout_path = Path(self.tmp.name) / "stderr", Path(self.tmp.name) / "stdout"
        stderr = open(self.stderr_path, "a")
        stdout = open(self.stdout_path, "a") if keep_log else subprocess.DEVNULL  # the app's JSON log lines
        self.keep_log, self.log_mark = keep_log, 0
        begin = time.perf_counter()
        try:
            self.process = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=stdout, stderr=stderr, text=True)
        finally:
            stderr.close()
            if not isinstance(stdout, int):  # subprocess.DEVNULL
                stdout.close()
        self.pid = self.process.pid
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"{kind} server exited with {self.process.returncode}: {self.stderr_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ready", timeout=1):
                    break
            except OSError:
                time.sleep(0.005)
        self.ready_s = time.perf_counter() - begin
        self.rss_ready_mb = sum(rss_mb(p) for p in loadgen.process_tree(self.pid))

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stderr_tail(self, chars: int = 2000) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def mark_log(self) -> None:
        """server_latency() counts only requests logged after this call."""
        self.log_mark = self.stdout_path.stat().st_size if self.keep_log else 0

    def server_latency(self, path: str = "/predict") -> dict:
        """Latency per status as the app logged it (its `request` log lines: from the request entering the app
        to the response), to set beside the client's view (which adds the kernel's and the event loop's waits)."""
        if not self.keep_log:
            return {}
        with open(self.stdout_path, errors="replace") as log:
            log.seek(self.log_mark)
            lines = log.read().splitlines()
        by_status: dict[str, list[float]] = {}
        for line in lines:
            if '"event": "request"' not in line and '"event":"request"' not in line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "request" and event.get("path") == path:
                key = f"{event.get('method')} {event.get('status')}"
                by_status.setdefault(key, []).append(float(event.get("latency_ms", 0)))
        return {status: loadgen.latency_summary(ms) for status, ms in sorted(by_status.items())}

    def metrics(self) -> dict:
        """cola_rejected_total per reason and the inference histogram's sum/count, read from /metrics."""
        try:
            status, body = loadgen.http_get(self.port, "/metrics")
        except OSError as exc:
            return {"error": str(exc)}
        names = ("cola_rejected_total", "cola_inference_latency_seconds_sum", "cola_inference_latency_seconds_count",
                 "cola_inference_batch_size_sum", "cola_inference_batch_size_count")  # fmt: skip
        samples = loadgen.prometheus_samples(body.decode(), names) if status == 200 else {}
        out: dict[str, object] = {"rejected_total": {k.split('reason="')[1].split('"')[0]: v for k, v in samples.items()
                                  if k.startswith("cola_rejected_total") and 'reason="' in k}}  # fmt: skip
        n = samples.get("cola_inference_latency_seconds_count")
        if n:
            out["model_calls"] = int(n)
            out["mean_model_call_ms"] = round(samples["cola_inference_latency_seconds_sum"] / n * 1000, 1)
            sentences = int(samples.get("cola_inference_batch_size_sum", 0))
            out["batch_sentences"], out["mean_batch_sentences"] = sentences, round(sentences / n, 1)
        return out

    def stop(self, timeout: float = 30) -> int | None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.tmp.cleanup()
        return self.process.returncode

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def wrk(url: str, connections: int, seconds: int, body: bytes | None = None) -> dict:
    """wrk's own summary (latency of all responses): for the 200-only loads of c32, variants and limit.
    With `body`: POST it as application/json (else GET). `cpu_s`: wrk's own CPU time (user + system)."""
    post = "" if body is None else POST_LUA.format(body=json.dumps(body.decode()))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(post + WRK_REPORT)
    threads = min(connections, 2)
    before = os.times()
    try:
        out = subprocess.run(
            ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", script.name, url],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    finally:
        os.unlink(script.name)
    after = os.times()
    result = json.loads(next(line for line in out.splitlines() if line.startswith("WRK_JSON ")).split(" ", 1)[1])
    result["req_per_s"] = round(result["requests"] / result["duration_s"], 1)
    cpu_s = after.children_user + after.children_system - before.children_user - before.children_system
    result["cpu_s"] = round(cpu_s, 2)
    if not result["requests"]:
        raise SystemExit(f"{url}: the server answered nothing under load: {result}")
    return result


def get_url(server: Server, sentence: str = SENTENCE) -> str:
    return server.url(f"/predict?text={urllib.parse.quote(sentence)}")


def run_async(coroutine):
    try:
        import uvloop  # the client's own CPU cost matters on 2 cores

        return uvloop.run(coroutine)
    except ImportError:
        return asyncio.run(coroutine)


def solo_service_ms(server: Server, body: bytes, repeats: int = 3) -> dict:
    """Latency of one request alone on an idle server (after one warm-up): the service time of one batch."""

    async def go():
        client = loadgen.HttpClient(server.port, timeout_s=600)
        try:
            records = [await client.request("POST", "/predict", body) for _ in range(repeats + 1)]
        finally:
            await client.close()
        return records[1:]

    records = run_async(go())
    bad = [r for r in records if r.status != 200]
    p50 = loadgen.percentile([t for r in records if r.status == 200 and (t := r.latency_ms) is not None], 50)
    return {"p50_ms": None if p50 is None else round(p50, 1), "runs": len(records),
            "not_200": [r.status or r.error for r in bad]}  # fmt: skip


# ---------------------------------------------------------------------------------------------- sections


def section_c32(args, env: dict) -> dict:
    out: dict[str, Any] = {}  # per server kind a dict, and their req/s ratio
    for kind in ("app", "original"):
        if kind == "original" and args.skip_original:
            continue
        with Server(kind, args.bundle, {**env, "COLA_ORT_THREADS": str(args.threads)}) as server:
            url = get_url(server)
            wrk(url, 1, 2 if args.quick else 3)  # warm-up
            with loadgen.RssSampler(server.pid) as rss:
                single = wrk(url, 1, args.single_seconds)
                loaded = wrk(url, args.concurrency, args.duration)
            out[kind] = {
                "start_to_ready_s": round(server.ready_s, 3),
                "rss_ready_mb": round(server.rss_ready_mb, 1),
                "rss_peak_mb": round(rss_mb(server.pid, "VmHWM"), 1),
                "rss_sampled": rss.summary(),
                "concurrency_1": single,
                f"concurrency_{args.concurrency}": loaded,
            }
    key = f"concurrency_{args.concurrency}"
    if "original" in out:
        out["ratio_req_per_s"] = round(out["app"][key]["req_per_s"] / max(out["original"][key]["req_per_s"], 1e-9), 1)
    return out


def thread_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of every thread of `pid` and its child processes, by thread id (a process's
    main thread has the process's id)."""
    out = {}
    for process in loadgen.process_tree(pid):
        for task in Path(f"/proc/{process}/task").glob("*"):
            try:
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # the thread ended
                continue
            out[int(task.name)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime: proc(5) 14, 15
    return out


def model_only(bundle: Path, calls: int, batch: int, seconds: float) -> dict:
    """The model's own limit on these cores, in this process: BundlePredictor.run (tokenize + ONNX Runtime, one
    thread each), one sentence alone (p50/p99), and `calls` threads each classifying `batch` sentences per call
    without pause (sentences/s): what the server's model calls could do with nothing around them."""
    import threading

    from runtime.predictor import BundlePredictor

    predictor = BundlePredictor(bundle, threads=1)
    for _ in range(50):
        predictor.run([SENTENCE])
    single: list[float] = []
    end = time.perf_counter() + seconds / 3
    while (start := time.perf_counter()) < end:
        predictor.run([SENTENCE])
        single.append((time.perf_counter() - start) * 1000)
    texts, counts, stop = [SENTENCE] * batch, [0] * calls, threading.Event()

    def work(i: int) -> None:
        while not stop.is_set():
            predictor.run(texts)
            counts[i] += batch

    threads = [threading.Thread(target=work, args=(i,)) for i in range(calls)]
    begin = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - begin
    summary = loadgen.latency_summary(single)
    return {"c1_p50_ms": summary["p50_ms"], "c1_p99_ms": summary["p99_ms"], "calls": calls, "batch": batch,
            "sentences_per_s": round(sum(counts) / elapsed, 1)}  # fmt: skip


def http_limit(kind: str, args, env: dict, body: bytes) -> dict:
    """One server: POST one sentence at concurrency 1, then at --concurrency with the CPU time of every server
    thread and of wrk, and the model calls' mean batch size (from /metrics) for the model-only run."""
    with Server(kind, args.bundle, {**env, "COLA_ORT_THREADS": str(args.threads)}) as server:
        url = server.url("/predict")
        wrk(url, 1, 2 if args.quick else 3, body)  # warm-up
        single = wrk(url, 1, args.single_seconds, body)
        before, metrics_before = thread_cpu_s(server.pid), server.metrics()
        with loadgen.RssSampler(server.pid) as rss:
            loaded = wrk(url, args.concurrency, args.duration, body)
        after, metrics_after = thread_cpu_s(server.pid), server.metrics()
    calls = metrics_after.get("model_calls", 0) - metrics_before.get("model_calls", 0)
    sentences = metrics_after.get("batch_sentences", 0) - metrics_before.get("batch_sentences", 0)
    cpu = {tid: after[tid] - before.get(tid, 0.0) for tid in after}
    # python -m app: the process's main thread runs the event loop, the others the model calls. granian runs
    # the app in a worker process beside its Rust threads: only the server's total is known there.
    loop_s = cpu.pop(server.pid) if kind == "app" else None
    per_request_ms = 1000 / max(loaded["requests"], 1)
    return {"concurrency_1": single, f"concurrency_{args.concurrency}": loaded,
            "mean_batch": round(sentences / calls, 1) if calls else None,
            "cpu_ms_per_request": {"event_loop": None if loop_s is None else round(loop_s * per_request_ms, 3),
                                   "other_threads": round(sum(cpu.values()) * per_request_ms, 3),
                                   "wrk": round(loaded["cpu_s"] * per_request_ms, 3)},
            "rss_peak_mb": rss.summary()["rss_peak_mb"]}  # fmt: skip


def section_limit(args, env: dict) -> dict:
    """The app against the model's own limit, in one run on the same cores: HTTP req/s at --concurrency over
    model-only sentences/s at the batch size the app's model calls formed, and c=1 p50 over the model's."""
    body = json.dumps({"text": SENTENCE}).encode()
    servers = [kind for kind in args.servers.split(",") if kind]
    out: dict[str, Any] = {kind: http_limit(kind, args, env, body) for kind in servers}
    calls = (os.cpu_count() or 1) // max(args.threads, 1)  # the app's default COLA_MODEL_CALLS
    key = f"concurrency_{args.concurrency}"
    for kind in servers:
        http = out[kind]
        batch = max(1, round(http["mean_batch"] or 1))
        model = model_only(args.bundle, calls, batch, 6 if args.quick else 15)
        http["model_only"] = model
        http["throughput_ratio"] = round(http[key]["req_per_s"] / model["sentences_per_s"], 3)
        http["c1_overhead_ms"] = round(http["concurrency_1"]["p50_ms"] - model["c1_p50_ms"], 3)
    return out


def section_variants(args, env: dict) -> dict:
    out = {}
    variants = (("calls1_threads1", "app", 1), ("calls1_threads2", "app", 2), ("workers2", "workers", 1))
    for name, kind, threads in variants:
        variant_env = {**env, "COLA_ORT_THREADS": str(threads), "COLA_MODEL_CALLS": "1"}
        with Server(kind, args.bundle, variant_env, workers=2) as server:
            url = get_url(server)
            wrk(url, args.concurrency, 2 if args.quick else 3)  # warm-up (both workers)
            with loadgen.RssSampler(server.pid) as rss:
                loaded = wrk(url, args.concurrency, args.duration)
            out[name] = {"concurrency": args.concurrency, "req_per_s": loaded["req_per_s"], "p50_ms": loaded["p50_ms"],
                         "p99_ms": loaded["p99_ms"], "socket_errors": loaded["socket_errors"],
                         "non_2xx": loaded["non_2xx"], "processes": rss.summary()["processes"],
                         "rss_peak_mb": rss.summary()["rss_peak_mb"],
                         "start_to_ready_s": round(server.ready_s, 3)}  # fmt: skip
    return out


def section_overload_a(args, env: dict) -> dict:
    with Server("app", args.bundle, {**env, "COLA_ORT_THREADS": str(args.threads)}, keep_log=True) as server:
        url = get_url(server)
        wrk(url, 1, 2)  # warm-up
        batch = min(int(server.env.get("COLA_MAX_BATCH", 64)), int(server.env.get("COLA_MAX_SENTENCES", 64)))
        service = solo_service_ms(server, json.dumps({"text": [SENTENCE] * batch}).encode())
        server.mark_log()
        with loadgen.RssSampler(server.pid) as rss:
            result = loadgen.wrk_by_status(url, args.overload_connections, args.overload_seconds)
        result.update({"rss": rss.summary(), "one_batch_service": {"sentences": batch, **service},
                       "server_metrics": server.metrics(),
                       "server_side_latency_by_status": server.server_latency()})  # fmt: skip
    return result


async def long_list_load(port: int, args, with_gets: int) -> list[loadgen.Record]:
    rng = random.Random(args.seed)
    bodies = [loadgen.long_list_body(rng, args.long_sentences) for _ in range(8)]  # 8 distinct bodies, reused
    remaining = {"n": args.long_requests}

    def next_long():
        if remaining["n"] <= 0:
            return None
        remaining["n"] -= 1
        return "POST", "/predict", bodies[remaining["n"] % len(bodies)], "long_post"

    stop = asyncio.Event()
    get_path = "/predict?text=" + urllib.parse.quote(SENTENCE)
    gets = asyncio.ensure_future(
        loadgen.run_clients(port, with_gets, lambda: ("GET", get_path, None, "short_get"), stop, args.request_timeout)
    ) if with_gets else None  # fmt: skip
    longs = await loadgen.run_clients(port, args.long_clients, next_long, None, args.request_timeout)
    stop.set()
    return longs + (await gets if gets else [])


def section_overload_b(args, env: dict, with_gets: int = 0) -> dict:
    with Server("app", args.bundle, {**env, "COLA_ORT_THREADS": str(args.threads)}, keep_log=True) as server:
        body = loadgen.long_list_body(random.Random(args.seed), args.long_sentences)
        service = solo_service_ms(server, body)
        server.mark_log()
        begin = time.monotonic()
        with loadgen.RssSampler(server.pid) as rss:
            records = run_async(long_list_load(server.port, args, with_gets))
        wall = time.monotonic() - begin
        result = {
            "clients": args.long_clients, "requests": args.long_requests, "sentences_per_request": args.long_sentences,
            "chars_per_sentence": round(sum(len(t) for t in json.loads(body)["text"]) / args.long_sentences),
            "body_bytes": len(body), "wall_s": round(wall, 2),
            "one_batch_service": {"sentences": args.long_sentences, **service},
            "long_post": loadgen.summarize_records([r for r in records if r.kind == "long_post"]),
            "rss": rss.summary(), "server_metrics": server.metrics(),
            "server_side_latency_by_status": server.server_latency(),  # both kinds of request together
        }  # fmt: skip
        if with_gets:
            result["short_get"] = {
                "clients": with_gets,
                **loadgen.summarize_records([r for r in records if r.kind == "short_get"]),
            }
    return result


async def sigterm_load(server: Server, args) -> dict:
    stop = asyncio.Event()
    path = "/predict?text=" + urllib.parse.quote(SENTENCE)
    long_body = loadgen.long_list_body(random.Random(args.seed), args.long_sentences)
    n_long = min(args.sigterm_long_clients, args.sigterm_clients)
    clients = asyncio.gather(
        loadgen.run_clients(server.port, args.sigterm_clients - n_long,
                            lambda: ("GET", path, None, "short_get"), stop, 60),
        loadgen.run_clients(server.port, n_long, lambda: ("POST", "/predict", long_body, "long_post"), stop, 60),
    )  # fmt: skip
    await asyncio.sleep(args.sigterm_after)
    sigterm_at = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    ready_probes: list[dict[str, int | str]] = []
    exited_at = None
    while time.monotonic() < sigterm_at + args.after_sigterm:
        if len(ready_probes) < 5:  # /ready on a new connection right after the signal
            t = time.monotonic()
            try:
                status, body = await asyncio.to_thread(loadgen.http_get, server.port, "/ready", 2)
                ready_probes.append({"after_ms": round((t - sigterm_at) * 1000), "status": status})
            except OSError as exc:
                ready_probes.append({"after_ms": round((t - sigterm_at) * 1000), "error": loadgen.error_code(exc)})
        if exited_at is None and server.process.poll() is not None:
            exited_at = time.monotonic()
        await asyncio.sleep(0.05)
    stop.set()
    short, long = await clients
    limit = sigterm_at + args.drain_wait
    while exited_at is None and time.monotonic() < limit:
        if server.process.poll() is not None:
            exited_at = time.monotonic()
        else:
            await asyncio.sleep(0.02)
    records = short + long
    return {
        "records": records, "sigterm_at": sigterm_at, "exited_at": exited_at, "ready_probes": ready_probes,
        "load_started_s_before_sigterm": args.sigterm_after,
    }  # fmt: skip


def section_sigterm(args, env: dict) -> dict:
    server = Server("app", args.bundle, {**env, "COLA_ORT_THREADS": str(args.threads)})
    try:
        wrk(get_url(server), 1, 1)  # warm-up
        run = run_async(sigterm_load(server, args))
    finally:
        if server.process.poll() is None:  # did not exit in time: report it, then make sure it is gone
            server.process.kill()
            server.process.wait()
            killed = True
        else:
            killed = False
    result = loadgen.classify_sigterm(run["records"], run["sigterm_at"])
    result.update({
        "clients": args.sigterm_clients, "long_post_clients": min(args.sigterm_long_clients, args.sigterm_clients),
        "load_before_sigterm_s": args.sigterm_after, "load_after_sigterm_s": args.after_sigterm,
        "drain_seconds_setting": server.env.get("COLA_DRAIN_SECONDS", "app default"),
        "exit_code": None if killed else server.process.returncode,
        "killed_after_s": args.drain_wait if killed else None,
        "drain_time_s": round(run["exited_at"] - run["sigterm_at"], 3) if run["exited_at"] else None,
        "ready_after_sigterm": run["ready_probes"],
        "server_stderr_tail": server.stderr_tail(600),
    })  # fmt: skip
    server.tmp.cleanup()
    return result


# ---------------------------------------------------------------------------------------------- goals


def c32_key(c32: dict) -> str:
    """The results key of the many-connections run in a c32 or limit result, e.g. "concurrency_32"."""
    runs = c32.get("app", c32)
    return next(k for k in runs if k.startswith("concurrency_") and k != "concurrency_1")


def check(goal: str, passed: bool | None, value: str) -> dict:
    return {"goal": goal, "pass": passed, "value": value}


def limit_checks(limit: dict) -> list[dict]:
    checks = []
    for kind, r in limit.items():
        key = c32_key(r)
        loaded, model, one = r[key], r["model_only"], r["concurrency_1"]
        checks.append(check(f"limit {kind}: HTTP {key} req/s >= 80% of model-only sentences/s",
                            r["throughput_ratio"] >= THROUGHPUT_GOAL,
                            f"{loaded['req_per_s']} vs {model['sentences_per_s']} ({model['calls']} calls x batch "
                            f"{model['batch']}) = {r['throughput_ratio']:.0%}"))  # fmt: skip
        checks.append(check(f"limit {kind}: c=1 HTTP p50 <= model-only p50 + {C1_OVERHEAD_GOAL_MS} ms",
                            r["c1_overhead_ms"] <= C1_OVERHEAD_GOAL_MS,
                            f"{one['p50_ms']:.2f} vs {model['c1_p50_ms']:.2f} ms: "
                            f"+{r['c1_overhead_ms']:.2f} ms"))  # fmt: skip
        checks.append(check(f"limit {kind}: {key} p99 <= 3x p50", loaded["p99_ms"] <= 3 * loaded["p50_ms"],
                            f"p50 {loaded['p50_ms']:.1f} ms, p99 {loaded['p99_ms']:.1f} ms"))  # fmt: skip
        checks.append(check(f"limit {kind}: all 2xx, RSS <= {RSS_GOAL_MB} MB",
                            loaded["non_2xx"] + loaded["socket_errors"] == 0 and r["rss_peak_mb"] <= RSS_GOAL_MB,
                            f"non-2xx {loaded['non_2xx']}, socket errors {loaded['socket_errors']}, "
                            f"RSS peak {r['rss_peak_mb']} MB"))  # fmt: skip
    return checks


def goal_checks(results: dict, budget_ms: float) -> list[dict]:
    checks = limit_checks(results.get("limit") or {})
    c32 = results.get("c32")
    if c32:
        key = c32_key(c32)
        app = c32["app"][key]
        if "original" in c32:
            orig = c32["original"][key]
            ratio = app["req_per_s"] / max(orig["req_per_s"], 1e-9)
            checks.append(check(f"{key}: app req/s >= 15x original", ratio >= 15,
                                f"{app['req_per_s']} vs {orig['req_per_s']} req/s = {ratio:.1f}x"))  # fmt: skip
        checks.append(check(f"{key}: app p99 <= 3x p50", app["p99_ms"] <= 3 * app["p50_ms"],
                            f"p50 {app['p50_ms']:.1f} ms, p99 {app['p99_ms']:.1f} ms "
                            f"= {app['p99_ms'] / app['p50_ms']:.1f}x"))  # fmt: skip
        checks.append(check(f"{key}: app all 2xx, no socket errors", app["non_2xx"] == 0 and app["socket_errors"] == 0,
                            f"non-2xx {app['non_2xx']}, socket errors {app['socket_errors']}"))  # fmt: skip
    for name in ("overload_a", "overload_b", "overload_b_mix"):
        res = results.get(name)
        if not res:
            continue
        parts = (
            [("", res)] if name == "overload_a" else [(f" {k}", res[k]) for k in ("long_post", "short_get") if k in res]
        )
        for label, part in parts:
            st = part["status"]
            checks.append(check(f"{name}{label}: no 5xx other than 503/504", st["other_5xx"] == 0,
                                f"200 {st['200']}, 503 {st['503']}, 504 {st['504']}, other 5xx {st['other_5xx']}, "
                                f"other {st['other']}, socket errors {st['socket_errors']}"))  # fmt: skip
            p99 = part["accepted_latency"]["p99_ms"]
            service = res["one_batch_service"]["p50_ms"] if label != " short_get" else 0
            if p99 is None:
                checks.append(check(f"{name}{label}: accepted p99 <= queue budget", None, "no request was accepted"))
                continue
            checks.append(check(f"{name}{label}: accepted p99 <= queue budget {budget_ms:g} ms (strict)",
                                p99 <= budget_ms,
                                f"p99 {p99:.0f} ms (max {part['accepted_latency']['max_ms']:.0f} ms)"))  # fmt: skip
            if service:
                bound = budget_ms + service
                checks.append(check(f"{name}{label}: accepted p99 <= budget + one batch's service time", p99 <= bound,
                                    f"p99 {p99:.0f} ms vs {budget_ms:g} + {service:.0f} = {bound:.0f} ms"))  # fmt: skip
        peak = res["rss"]["rss_peak_mb"]
        checks.append(check(f"{name}: peak RSS <= {RSS_GOAL_MB} MB", peak is not None and peak <= RSS_GOAL_MB,
                            f"{res['rss']['rss_start_mb']} -> peak {peak} MB"))  # fmt: skip
    sig = results.get("sigterm")
    if sig:
        checks.append(check("sigterm: 0 accepted requests lost", sig["lost"] == 0,
                            f"in flight {sig['in_flight_at_sigterm']} ({sig['in_flight_200']} got 200), "
                            f"lost {sig['lost']}"))  # fmt: skip
        checks.append(check("sigterm: exit code 0 within the grace period", sig["exit_code"] == 0,
                            f"exit code {sig['exit_code']}, drain {sig['drain_time_s']} s"))  # fmt: skip
    return checks


# ---------------------------------------------------------------------------------------------- report


def app_revision() -> dict:
    def git(*cmd):
        try:
            return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    served = ("app", "contract", "runtime")  # the code the server runs
    return {"head": git("rev-parse", "HEAD"), "app_last_commit": git("log", "-1", "--format=%h %s", "--", *served),
            "app_uncommitted_changes": bool(git("status", "--porcelain", "--", *served))}  # fmt: skip


def fmt(value, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        value = f"{value:.1f}" if abs(value) < 1000 else f"{value:.0f}"
    return f"{value}{unit}"


def report_header(results: dict) -> list[str]:
    m, revision = results["machine"], results["app_revision"]
    return [f"machine: {m['cpu']}, {m['logical_cores']} cores, flags {' '.join(m['cpu_flags'])}; "
            f"app {revision['app_last_commit']}"
            f"{' + uncommitted app/ changes' if revision['app_uncommitted_changes'] else ''}"]  # fmt: skip


def report_c32(c32: dict) -> list[str]:
    key = c32_key(c32)
    out = [f"\n[c32] {'':22}{'ready s':>8}{'RSS MB':>8}{'c1 p50':>8}{'c1 p99':>8}"
           f"{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'errors':>8}"]  # fmt: skip
    for kind in ("app", "original"):
        if kind in c32:
            r, one, many = c32[kind], c32[kind]["concurrency_1"], c32[kind][key]
            out.append(f"      {kind:22}{fmt(r['start_to_ready_s']):>8}{fmt(r['rss_peak_mb']):>8}"
                       f"{fmt(one['p50_ms']):>8}{fmt(one['p99_ms']):>8}{fmt(many['req_per_s']):>8}"
                       f"{fmt(many['p50_ms']):>8}{fmt(many['p99_ms']):>8}"
                       f"{many['socket_errors'] + many['non_2xx']:>8}")  # fmt: skip
    if "ratio_req_per_s" in c32:
        out.append(f"      app / original req/s: {c32['ratio_req_per_s']}x")
    return out


def report_limit(limit: dict) -> list[str]:
    out = [f"\n[limit] POST one sentence{'':4}{'c1 p50':>8}{'model':>8}{'req/s':>8}{'model/s':>9}{'ratio':>7}"
           f"{'p50 ms':>8}{'p99 ms':>8}{'batch':>7}{'loop ms':>9}{'other ms':>9}{'wrk ms':>8}"
           f"{'RSS MB':>8}"]  # fmt: skip
    for kind, r in limit.items():
        loaded, model, cpu = r[c32_key(r)], r["model_only"], r["cpu_ms_per_request"]
        loop_ms = "-" if cpu["event_loop"] is None else f"{cpu['event_loop']:.3f}"
        out.append(f"      {kind:22}{fmt(r['concurrency_1']['p50_ms']):>8}{model['c1_p50_ms']:>8.2f}"
                   f"{fmt(loaded['req_per_s']):>8}{fmt(model['sentences_per_s']):>9}{r['throughput_ratio']:>7.0%}"
                   f"{fmt(loaded['p50_ms']):>8}{fmt(loaded['p99_ms']):>8}{fmt(r['mean_batch']):>7}"
                   f"{loop_ms:>9}{cpu['other_threads']:>9.3f}{cpu['wrk']:>8.3f}"
                   f"{fmt(r['rss_peak_mb']):>8}")  # fmt: skip
    out.append("      model = model-only p50 of one sentence; model/s = model-only sentences/s at the app's mean batch "
               "with one call per core; loop/other/wrk ms = CPU per request of the event loop (main thread), "
               "the server's other threads (model calls; granian: all its threads) and the load generator")  # fmt: skip
    return out


def report_variants(variants: dict) -> list[str]:
    out = [f"\n[variants] c={next(iter(variants.values()))['concurrency']}{'':9}"
           f"{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'errors':>8}{'RSS MB':>8}"]  # fmt: skip
    for name, r in variants.items():
        out.append(f"      {name:22}{fmt(r['req_per_s']):>8}{fmt(r['p50_ms']):>8}{fmt(r['p99_ms']):>8}"
                   f"{r['socket_errors'] + r['non_2xx']:>8}{fmt(r['rss_peak_mb']):>8}")  # fmt: skip
    return out


def report_overload(results: dict) -> list[str]:
    rows = []  # (label, the load's results, its section's results, method)
    if "overload_a" in results:
        rows.append(("overload_a GET", results["overload_a"], results["overload_a"], "GET"))
    for name in ("overload_b", "overload_b_mix"):
        if name in results:
            rows.append((f"{name} POST", results[name]["long_post"], results[name], "POST"))
            if "short_get" in results[name]:
                rows.append((f"{name} GET", results[name]["short_get"], results[name], "GET"))
    if not rows:
        return []
    out = [f"\n[overload] {'':16}{'req/s':>7}{'200':>7}{'503':>7}{'504':>7}{'5xx':>5}{'other':>6}{'sock':>6}"
           f"{'acc p50':>9}{'acc p99':>9}{'acc max':>9}{'srv p99':>9}{'RSS MB':>14}{'1 batch':>9}"]  # fmt: skip
    for label, part, whole, method in rows:
        st, lat = part["status"], part["accepted_latency"]
        rss = f"{fmt(whole['rss']['rss_start_mb'])}->{fmt(whole['rss']['rss_peak_mb'])}"
        server_p99 = whole.get("server_side_latency_by_status", {}).get(f"{method} 200", {}).get("p99_ms")
        batch = whole["one_batch_service"]["p50_ms"] if method == "POST" or label.startswith("overload_a") else None
        out.append(f"      {label:20}{fmt(part.get('req_per_s')):>7}{st['200']:>7}{st['503']:>7}{st['504']:>7}"
                   f"{st['other_5xx']:>5}{st['other']:>6}{st['socket_errors']:>6}{fmt(lat['p50_ms']):>9}"
                   f"{fmt(lat['p99_ms']):>9}{fmt(lat['max_ms']):>9}{fmt(server_p99):>9}"
                   f"{rss:>14}{fmt(batch):>9}")  # fmt: skip
    out.append("      acc = accepted (200) requests as the client saw them; srv p99 = the same requests as the app "
               "logged them; 1 batch = one request of that kind alone on the idle server (ms)")  # fmt: skip
    return out


def report_sigterm(sig: dict) -> list[str]:
    return [f"\n[sigterm] {sig['clients']} clients; sent before SIGTERM {sig['sent_before_sigterm']}, in flight at "
            f"SIGTERM {sig['in_flight_at_sigterm']} -> {sig['in_flight_outcomes']}; lost {sig['lost']}",
            f"      after SIGTERM: {sig['after_sigterm']} requests -> {sig['after_sigterm_outcomes']}",
            f"      /ready after SIGTERM: {sig['ready_after_sigterm'][:3]}; exit code {sig['exit_code']}, "
            f"drain {sig['drain_time_s']} s (COLA_DRAIN_SECONDS {sig['drain_seconds_setting']})"]  # fmt: skip


def report_goals(goals: list[dict]) -> list[str]:
    marks = {True: "PASS", False: "FAIL", None: "n/a "}
    return ["\n[goals]", *(f"  {marks[c['pass']]}  {c['goal']}: {c['value']}" for c in goals)]


def print_report(results: dict) -> None:
    out = report_header(results)
    if results.get("limit"):
        out += report_limit(results["limit"])
    if results.get("c32"):
        out += report_c32(results["c32"])
    if results.get("variants"):
        out += report_variants(results["variants"])
    out += report_overload(results)
    if results.get("sigterm"):
        out += report_sigterm(results["sigterm"])
    if results.get("goals"):
        out += report_goals(results["goals"])
    print("\n".join(out))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "artifacts" / "bundle")
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}"
    )
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: short phases, 32 long-list requests from 16 clients, no mix")  # fmt: skip
    parser.add_argument("--duration", type=int, default=30, help="seconds of each concurrency-32 run")
    parser.add_argument("--single-seconds", type=int, default=10, help="seconds of the concurrency-1 run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="COLA_ORT_THREADS for the app (not the variants)")
    parser.add_argument("--skip-original", action="store_true")
    parser.add_argument("--servers", default="app,granian",
                        help="limit: the HTTP servers compared (app = python -m app, uvicorn; granian)")  # fmt: skip
    parser.add_argument("--overload-connections", type=int, default=512)
    parser.add_argument("--overload-seconds", type=int, default=20)
    parser.add_argument("--long-clients", type=int, default=64)
    parser.add_argument("--long-requests", type=int, default=128)
    parser.add_argument("--long-sentences", type=int, default=64, help="sentences per long-list request")
    parser.add_argument(
        "--mix-gets", type=int, default=8, help="short-GET clients beside the long lists (overload_b_mix)"
    )
    parser.add_argument("--no-mix", action="store_true", help="skip overload_b_mix")
    parser.add_argument("--request-timeout", type=float, default=600, help="client timeout of one request (s)")
    parser.add_argument("--sigterm-clients", type=int, default=32)
    parser.add_argument("--sigterm-long-clients", type=int, default=0, help="of those, clients that POST long lists")
    parser.add_argument("--sigterm-after", type=float, default=5, help="seconds of load before SIGTERM")
    parser.add_argument("--after-sigterm", type=float, default=5, help="seconds of load after SIGTERM")
    parser.add_argument("--drain-wait", type=float, default=60, help="kill the server if it has not exited by then (s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="extra environment of the app under test"
    )
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    parser.add_argument("--serve-original", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.single_seconds = min(args.single_seconds, 2)
        args.overload_seconds = min(args.overload_seconds, 5)
        args.long_clients, args.long_requests = min(args.long_clients, 16), min(args.long_requests, 32)
        args.sigterm_after, args.after_sigterm = min(args.sigterm_after, 2), min(args.after_sigterm, 3)
        args.no_mix = True
    if unknown := set(selected_sections(args)) - set(SECTIONS):
        parser.error(f"unknown sections {sorted(unknown)}; choose from {','.join(SECTIONS)}")
    return args


def selected_sections(args: argparse.Namespace) -> list[str]:
    return [s.strip() for s in args.sections.split(",") if s.strip()]


def run_sections(args: argparse.Namespace, env: dict, results: dict) -> None:
    """Each section on its own fresh server(s), its results under its name, its wall time in section_seconds."""
    for name in selected_sections(args):
        t0 = time.monotonic()
        print(f"... {name}", file=sys.stderr, flush=True)
        if name == "limit":
            results["limit"] = section_limit(args, env)
        elif name == "c32":
            results["c32"] = section_c32(args, env)
            results.update({k: results["c32"][k] for k in ("app", "original") if k in results["c32"]})  # the old keys
        elif name == "variants":
            results["variants"] = section_variants(args, env)
        elif name == "overload_a":
            results["overload_a"] = section_overload_a(args, env)
        elif name == "overload_b":
            results["overload_b"] = section_overload_b(args, env)
            if not args.no_mix and args.mix_gets:
                results["overload_b_mix"] = section_overload_b(args, env, with_gets=args.mix_gets)
        elif name == "sigterm":
            results["sigterm"] = section_sigterm(args, env)
        results.setdefault("section_seconds", {})[name] = round(time.monotonic() - t0, 1)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.serve_original:
        import uvicorn

        uvicorn.run(original_app(args.bundle), host="127.0.0.1", port=args.port, log_level="warning")
        return
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk")
    if not (args.bundle / "manifest.json").is_file():
        raise SystemExit(f"no bundle at {args.bundle}: run `dvc repro export_onnx` or pass --bundle")
    env = dict(item.split("=", 1) for item in args.env)
    budget_ms = float({**os.environ, **env}.get("COLA_QUEUE_BUDGET_MS", DEFAULT_QUEUE_BUDGET_MS))
    from cola.benchmark import machine_fingerprint

    results: dict = {
        "machine": machine_fingerprint(), "app_revision": app_revision(), "bundle": str(args.bundle),
        "cpus": os.cpu_count(), "sentence": SENTENCE, "queue_budget_ms": budget_ms,
        "app_env": {k: v for k, v in {**os.environ, **env}.items() if k.startswith("COLA_")},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                     if k not in ("serve_original", "port")},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }  # fmt: skip
    run_sections(args, env, results)
    results["goals"] = goal_checks(results, budget_ms)
    print_report(results)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
