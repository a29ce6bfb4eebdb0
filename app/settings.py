"""Serving settings, read from environment variables (the container and Lambda images set them)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from runtime import MAX_BATCH_TOKENS

# Same relative layout in the repo and in the images: <root>/app and <root>/artifacts/bundle.
DEFAULT_BUNDLE_DIR = Path(__file__).resolve().parent.parent / "artifacts" / "bundle"


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} must be an integer (default {default})") from None
    if value < 0:
        raise ValueError(f"environment variable {name}={raw!r} must not be negative")
    return value


def _port(name: str, default: int, off: bool = False) -> int:
    """A TCP port; with `off`, 0 means none."""
    value = _int(name, default)
    if not (0 < value < 65536 or (off and value == 0)):
        raise ValueError(f"environment variable {name}={value} must be a TCP port, 1 to 65535{' (0: off)' * off}")
    return value


def _flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    if raw not in ("0", "1"):
        raise ValueError(f"environment variable {name}={raw!r} must be 1 (on) or 0 (off)")
    return raw == "1"


@dataclass(frozen=True)
class Settings:
    """Not pydantic-settings: a bad value must stop the app at start with one line naming the variable and its
    allowed values (`_int`), and a few settings are clamped rather than refused; pydantic's validation report
    would do neither without as much code as this."""

    bundle_dir: Path = DEFAULT_BUNDLE_DIR
    max_sentences: int = 64  # per request; a list is classified in one ONNX Runtime call
    max_chars: int = 1000  # per sentence (CoLA's longest is under 250)
    max_body_bytes: int = 256 * 1024
    max_batch: int = 64  # micro-batching: most sentences merged into one model call
    max_batch_tokens: int = (
        MAX_BATCH_TOKENS  # padded tokens per ONNX Runtime call; rows are grouped by length (predictor.infer)
    )
    max_queued_tokens: int = 16384  # admitted work not yet started; beyond it: 503 queue_full (bounds memory)
    queue_budget_ms: int = 500  # estimated time to answer above which a request is refused: 503 queue_budget
    deadline_ms: int = 5000  # per request: 504 when passed; work not started by then is dropped
    drain_seconds: int = 20  # after SIGTERM: grace period for in-flight requests (/ready says 503 meanwhile)
    ort_threads: int = 1  # intra-op threads of one model call (0 = ONNX Runtime's default, one per core)
    model_calls: int = 0  # model calls running at once; 0 = as many as fill the cores (see concurrent_calls)
    log_text: bool = False  # raw user text in prediction logs only when explicitly enabled
    # What one TCP client may hold (app/connections.py; `python -m app` only: on Lambda API Gateway holds them)
    header_timeout_ms: int = 10_000  # from connect (or a kept-alive request's first byte) to the end of headers
    body_timeout_ms: int = 20_000  # from the end of headers to the end of the body: else 408
    max_header_bytes: int = 32 * 1024  # request line + headers; else 431
    max_headers: int = 100
    max_connections: int = 2048  # open at once; more: 503 and closed
    host: str = "127.0.0.1"  # where `python -m app` listens (the image: 0.0.0.0)
    port: int = 8000
    # The production surface is /predict, /health, /ready and the page. Docs and metrics are on for a developer's
    # `python -m app`; the images (and Lambda, by default) turn them off: Prometheus reads metrics_port instead.
    expose_docs: bool = True  # /docs, /redoc, /openapi.json
    expose_metrics: bool = True  # /metrics on the API's own port
    metrics_port: int = 0  # > 0: /metrics also on this port of `host` (a private listener for Prometheus)
    on_lambda: bool = False  # emit CloudWatch Embedded Metric Format records

    @property
    def concurrent_calls(self) -> int:
        """Model calls at once: COLA_MODEL_CALLS, or by default one per `ort_threads` cores this process may use
        (a CPU quota, e.g. a container's --cpus, is not visible here: set COLA_MODEL_CALLS to it)."""
        if self.model_calls:
            return self.model_calls
        affinity = getattr(os, "sched_getaffinity", None)  # Linux; elsewhere all cores
        cores = len(affinity(0)) if affinity else (os.cpu_count() or 1)
        return max(1, cores // self.ort_threads) if self.ort_threads else 1

    @classmethod
    def from_env(cls) -> Settings:
        on_lambda = bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))
        return cls(
            bundle_dir=Path(os.environ.get("COLA_BUNDLE_DIR", DEFAULT_BUNDLE_DIR)),
            max_sentences=max(1, _int("COLA_MAX_SENTENCES", cls.max_sentences)),
            max_chars=max(1, _int("COLA_MAX_CHARS", cls.max_chars)),
            max_body_bytes=_int("COLA_MAX_BODY_BYTES", cls.max_body_bytes),
            max_batch=max(1, _int("COLA_MAX_BATCH", cls.max_batch)),
            max_batch_tokens=max(1, _int("COLA_MAX_BATCH_TOKENS", cls.max_batch_tokens)),
            max_queued_tokens=max(1, _int("COLA_MAX_QUEUED_TOKENS", cls.max_queued_tokens)),
            queue_budget_ms=_int("COLA_QUEUE_BUDGET_MS", cls.queue_budget_ms),
            deadline_ms=max(1, _int("COLA_DEADLINE_MS", cls.deadline_ms)),
            drain_seconds=_int("COLA_DRAIN_SECONDS", cls.drain_seconds),
            ort_threads=_int("COLA_ORT_THREADS", cls.ort_threads),
            model_calls=_int("COLA_MODEL_CALLS", cls.model_calls),
            log_text=os.environ.get("COLA_LOG_TEXT", "0") == "1",
            header_timeout_ms=max(1, _int("COLA_HEADER_TIMEOUT_MS", cls.header_timeout_ms)),
            body_timeout_ms=max(1, _int("COLA_BODY_TIMEOUT_MS", cls.body_timeout_ms)),
            max_header_bytes=max(1024, _int("COLA_MAX_HEADER_BYTES", cls.max_header_bytes)),
            max_headers=max(10, _int("COLA_MAX_HEADERS", cls.max_headers)),
            max_connections=max(1, _int("COLA_MAX_CONNECTIONS", cls.max_connections)),
            host=os.environ.get("COLA_HOST", cls.host),
            port=_port("COLA_PORT", cls.port),
            expose_docs=_flag("COLA_EXPOSE_DOCS", not on_lambda),
            expose_metrics=_flag("COLA_EXPOSE_METRICS", not on_lambda),  # on Lambda: CloudWatch EMF instead
            metrics_port=_port("COLA_METRICS_PORT", cls.metrics_port, off=True),
            on_lambda=on_lambda,
        )
