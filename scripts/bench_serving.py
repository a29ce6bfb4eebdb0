"""Load benchmark of the serving app (not a test): the goals table of the serving issue.

For the torch-free app (`python -m app`) and, on the same bundle's ONNX model and the same load, the
original project's approach (transformers tokenizer padding every input to 128 tokens, inference run
inside an `async` handler, so it blocks the event loop), it measures:
  - process start -> /ready answering (s), and resident memory when ready and after the load (MB);
  - one sentence over HTTP at concurrency 1: p50 / p99 latency (ms);
  - concurrency 32 for --duration seconds: requests/s, p50 / p99 (ms), errors.
Load comes from `wrk` (apt-get install wrk) on 127.0.0.1, GET /predict?text=... (both apps answer it).

    python scripts/bench_serving.py --bundle artifacts/bundle --out reports/serving/bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SENTENCE = "The more books I read, the more I understand."
WRK_REPORT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK_JSON {"requests":%d,"duration_s":%.3f,"socket_errors":%d,"non_2xx":%d,'
    .. '"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f}\\n', summary.requests, summary.duration / 1e6,
    e.connect + e.read + e.write + e.timeout, e.status, latency:percentile(50) / 1000,
    latency:percentile(90) / 1000, latency:percentile(99) / 1000))
end
"""


def original_app(bundle: Path):
    """The original project's serving approach, on the bundle's ONNX model (torch is not needed for it)."""
    import numpy as np
    import onnxruntime as ort
    from fastapi import FastAPI
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(bundle / "tokenizer.json"),
        unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
    )  # fmt: skip
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    labels = json.loads((bundle / "config.json").read_text())["labels"]
    app = FastAPI()

    @app.get("/predict")
    async def predict(text: str):  # blocking work inside async: one request at a time, loop stalled
        encoded = tokenizer(
            [text], padding="max_length", max_length=128, truncation=True, return_token_type_ids=True, return_tensors="np"
        )
        logits = session.run(None, {n: encoded[n].astype(np.int64) for n in names})[0]
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        return [{"label": labels[int(p.argmax())], "score": float(p.max())} for p in probs]

    @app.get("/ready")
    async def ready():
        return {"status": "ready"}

    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start(kind: str, bundle: Path, port: int, threads: int) -> tuple[subprocess.Popen, float]:
    if kind == "app":
        cmd = [sys.executable, "-m", "app", "--port", str(port)]
    else:
        cmd = [sys.executable, __file__, "--serve-original", "--bundle", str(bundle), "--port", str(port)]
    env = {**os.environ, "COLA_BUNDLE_DIR": str(bundle), "COLA_ORT_THREADS": str(threads)}
    begin = time.perf_counter()
    process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while True:
        if process.poll() is not None:
            raise SystemExit(f"{kind} server exited: {process.stderr.read()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1):
                return process, time.perf_counter() - begin
        except OSError:
            time.sleep(0.005)


def wrk(url: str, connections: int, seconds: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_REPORT)
    threads = min(connections, 2)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", script.name, url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    os.unlink(script.name)
    result = json.loads(next(line for line in out.splitlines() if line.startswith("WRK_JSON ")).split(" ", 1)[1])
    result["req_per_s"] = round(result["requests"] / result["duration_s"], 1)
    if not result["requests"] or result["non_2xx"]:
        raise SystemExit(f"{url}: the server failed under load: {result}")
    return result


def bench(kind: str, bundle: Path, args) -> dict:
    port = free_port()
    process, ready_s = start(kind, bundle, port, args.threads)
    try:
        ready_rss = rss_mb(process.pid)
        url = f"http://127.0.0.1:{port}/predict?text={urllib.parse.quote(SENTENCE)}"
        wrk(url, 1, 3)  # warm-up
        single = wrk(url, 1, args.single_seconds)
        loaded = wrk(url, args.concurrency, args.duration)
        return {
            "start_to_ready_s": round(ready_s, 3),
            "rss_ready_mb": round(ready_rss, 1),
            "rss_peak_mb": round(rss_mb(process.pid, "VmHWM"), 1),
            "concurrency_1": single,
            f"concurrency_{args.concurrency}": loaded,
        }
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "artifacts" / "bundle")
    parser.add_argument("--duration", type=int, default=30, help="seconds of the concurrency run")
    parser.add_argument("--single-seconds", type=int, default=10, help="seconds of the concurrency-1 run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="COLA_ORT_THREADS for the app")
    parser.add_argument("--skip-original", action="store_true")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    parser.add_argument("--serve-original", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_original:
        import uvicorn

        uvicorn.run(original_app(args.bundle), host="127.0.0.1", port=args.port, log_level="warning")
        return
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk")
    if not (args.bundle / "manifest.json").is_file():
        raise SystemExit(f"no bundle at {args.bundle}: run `dvc repro export_onnx` or pass --bundle")
    results = {"bundle": str(args.bundle), "cpus": os.cpu_count(), "sentence": SENTENCE, "app": bench("app", args.bundle, args)}
    if not args.skip_original:
        results["original"] = bench("original", args.bundle, args)
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
