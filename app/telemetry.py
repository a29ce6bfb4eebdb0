"""What the app tells the outside world: JSON log lines, Prometheus metrics, CloudWatch EMF records.

The field names and metric names are a contract with the monitoring code (docs/serving.md lists them).
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import threading
import time

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

LOGGER = logging.getLogger("cola.serving")
EMF_NAMESPACE = "ColaClassifier"
# The app's own 5xx answers on Lambda, by function version: deploy/template.yaml's canary alarm reads exactly these.
EMF_SERVER_ERRORS = "ServerErrors"
EMF_FUNCTION_VERSION = "FunctionVersion"


_SECOND: tuple[int, str] = (-1, "")  # (a second, its "YYYY-mm-ddTHH:MM:SS." in UTC): strftime once per second


def _iso(ts: float) -> str:
    global _SECOND
    second, prefix = _SECOND  # one read: another thread may replace it meanwhile
    if int(ts) != second:
        second, prefix = int(ts), time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(int(ts)))
        _SECOND = (second, prefix)
    return f"{prefix}{int(ts * 1000) % 1000:03d}Z"


# Characters JSON allows raw in a string that log tools (and Python's str.splitlines) take as line ends or terminal
# controls: C1 controls (NEL U+0085, CSI U+009B, ...) and U+2028/U+2029. Escaped, so one record stays one line
# and a client cannot forge lines or terminal sequences through a logged field. (C0 controls: json escapes them.)
LINE_BREAKERS = {c: f"\\u{c:04x}" for c in [*range(0x80, 0xA0), 0x2028, 0x2029]}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: {"ts", "level", "event", ...}; also used for uvicorn's own messages.
    Hand-written rather than python-json-logger or structlog: the line *is* the contract the monitor reads
    (contract/logs.py), and a few lines keep it exact. orjson: a line is on the hot path of every request."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None) or {
            "event": "log",
            "logger": record.name,
            "message": record.getMessage(),
        }
        line = {"ts": _iso(record.created), "level": record.levelname.lower(), **fields}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        try:
            text = orjson.dumps(line, default=str).decode()
        except orjson.JSONEncodeError:  # a lone surrogate, an int over 64 bits: json, all non-ASCII escaped
            text = json.dumps(line, separators=(",", ":"), default=str)
        return text if text.isascii() else text.translate(LINE_BREAKERS)


# Every attribute of a LogRecord, for EventRecord: a formatter may read any of them (through __dict__).
_RECORD_DEFAULTS = logging.makeLogRecord({"name": LOGGER.name, "args": ()}).__dict__ | {"exc_info": None}


class EventRecord(logging.LogRecord):
    """The record of one log_event line, built by copying a template and setting what differs, instead of
    LogRecord's own __init__ (caller lookup, thread and process names), which costs more than the JSON line."""

    def __init__(self, level: int, fields: dict):  # no super().__init__: that is the cost this class avoids
        self.__dict__.update(_RECORD_DEFAULTS)
        self.levelno, self.levelname, self.created = level, logging.getLevelName(level), time.time()
        self.msg, self.fields = fields["event"], fields
        self.thread, self.threadName = threading.get_ident(), threading.current_thread().name


LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": JsonFormatter}},
    "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}},
    "loggers": {
        "cola": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
        "uvicorn": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
        "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},  # our request lines replace it
    },
}


def setup_logging() -> None:
    """Send the app's JSON lines to stdout unless a handler is already set (uvicorn's log_config sets one)."""
    if not LOGGER.handlers and not logging.getLogger("cola").handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(JsonFormatter())
        LOGGER.addHandler(handler)
        LOGGER.setLevel(logging.INFO)
        LOGGER.propagate = False


def log_event(event: str, level: int = logging.INFO, exc_info: bool = False, **fields) -> None:
    if exc_info:  # an error with its traceback: the standard record (rare, and it captures sys.exc_info())
        LOGGER.log(level, event, extra={"fields": {"event": event, **fields}}, exc_info=True)
    elif LOGGER.isEnabledFor(level):
        LOGGER.handle(EventRecord(level, {"event": event, **fields}))


REJECT_REASONS = ("queue_full", "queue_budget", "draining", "deadline", "client_gone")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
CONFIDENCE_BUCKETS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.975, 0.99, 1.0)
CHARS_BUCKETS = (10, 20, 40, 60, 80, 100, 150, 200, 300, 500, 1000)
TOKENS_BUCKETS = (4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256)
UNK_RATE_BUCKETS = (0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


class Metrics:
    """The Prometheus metrics of one app instance (own registry, so tests can build many apps)."""

    def __init__(self, version: str, variant: str):
        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)  # process_resident_memory_bytes, cpu seconds, open fds

        def histogram(name: str, doc: str, buckets: tuple[float, ...], labels: tuple[str, ...] = ()) -> Histogram:
            return Histogram(name, doc, labels, buckets=buckets, registry=r)

        self.requests = Counter("cola_requests_total", "HTTP requests", ["route", "method", "status"], registry=r)
        self.request_latency = histogram(
            "cola_request_latency_seconds", "HTTP request latency", LATENCY_BUCKETS, labels=("route",)
        )
        self.inference_latency = histogram(
            "cola_inference_latency_seconds", "One ONNX Runtime call incl. tokenization", LATENCY_BUCKETS
        )
        self.batch_size = histogram("cola_inference_batch_size", "Sentences per ONNX Runtime call", BATCH_BUCKETS)
        self.predictions = Counter("cola_predictions_total", "Predictions by label", ["label"], registry=r)
        self.confidence = histogram(
            "cola_prediction_confidence", "Probability of the predicted label", CONFIDENCE_BUCKETS
        )
        self.input_chars = histogram("cola_input_chars", "Characters per sentence", CHARS_BUCKETS)
        self.input_tokens = histogram(
            "cola_input_tokens", "Tokens per sentence incl. special tokens, before truncation", TOKENS_BUCKETS
        )
        self.unk_rate = histogram("cola_unk_rate", "Share of unknown tokens per sentence", UNK_RATE_BUCKETS)
        self.rejected = Counter(
            "cola_rejected_total",
            "Requests not computed: queue_full, queue_budget, draining (503), deadline (504), client_gone",
            ["reason"],
            registry=r,
        )
        for reason in REJECT_REASONS:  # present from the start, so rate() and alerts see a 0
            self.rejected.labels(reason=reason)
        self.queue_wait = histogram(
            "cola_queue_wait_seconds", "From admission to the start of the model call", LATENCY_BUCKETS
        )
        self.queued_tokens = Gauge("cola_queued_tokens", "Tokens of admitted work not yet started", registry=r)
        self.in_flight = Gauge(
            "cola_requests_in_flight", "Prediction requests admitted or waiting for admission", registry=r
        )
        self.draining = Gauge("cola_draining", "1 after SIGTERM, while in-flight requests finish", registry=r)
        info = Gauge("cola_model_info", "The served bundle", ["version", "variant"], registry=r)
        info.labels(version=version, variant=variant).set(1)
        # labels() looks a child up under a lock on every call; these run per request, so each child is kept
        self._predictions_of = functools.cache(lambda label: self.predictions.labels(label=label))
        self._requests_of = functools.cache(
            lambda route, method, status: self.requests.labels(route=route, method=method, status=status)
        )
        self._latency_of = functools.cache(lambda route: self.request_latency.labels(route=route))

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self._requests_of(route, method, str(status)).inc()
        self._latency_of(route).observe(seconds)

    def observe_prediction(self, label: str, confidence: float, chars: int, tokens: int, unk_rate: float) -> None:
        self._predictions_of(label).inc()
        self.confidence.observe(confidence)
        self.input_chars.observe(chars)
        self.input_tokens.observe(tokens)
        self.unk_rate.observe(unk_rate)


def emf_records(model_version: str, latency_ms: float, labels: list[str], confidences: list[float]) -> list[dict]:
    """CloudWatch Embedded Metric Format records for one request, so Lambda gets metrics without a scraper.
    aws-lambda-powertools' Metrics would write the same JSON; not used so the image stays torch- and
    dependency-light and the one container serves both uvicorn and Lambda with the same code path."""
    timestamp = int(time.time() * 1000)

    def record(dimensions: list[str], metrics: list[tuple[str, str]], values: dict) -> dict:
        return {
            "_aws": {
                "Timestamp": timestamp,
                "CloudWatchMetrics": [
                    {
                        "Namespace": EMF_NAMESPACE,
                        "Dimensions": [dimensions],
                        "Metrics": [{"Name": name, "Unit": unit} for name, unit in metrics],
                    }
                ],
            },
            "ModelVersion": model_version,
            **values,
        }

    records = [
        record(
            ["ModelVersion"],
            [("Latency", "Milliseconds"), ("Confidence", "None")],
            {"Latency": round(latency_ms, 3), "Confidence": [round(c, 4) for c in confidences]},
        )
    ]
    for label in sorted(set(labels)):
        records.append(
            record(
                ["ModelVersion", "Label"],
                [("Predictions", "Count")],
                {"Label": label, "Predictions": labels.count(label)},
            )
        )
    return records


def emf_status_record(status: int, function_version: str, model_version: str) -> dict:
    """One record per HTTP answer on Lambda: Requests 1, ServerErrors 1 if it was a 5xx, by FunctionVersion.
    Lambda's Errors metric counts a 5xx the app answers itself as a success; this lets CodeDeploy's alarm on the
    version being deployed see it (0s included, so the alarm has data while the version serves)."""
    return {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": EMF_NAMESPACE,
                    "Dimensions": [[EMF_FUNCTION_VERSION]],
                    "Metrics": [{"Name": "Requests", "Unit": "Count"}, {"Name": EMF_SERVER_ERRORS, "Unit": "Count"}],
                }
            ],
        },
        EMF_FUNCTION_VERSION: function_version,
        "ModelVersion": model_version,
        "Status": status,
        "Requests": 1,
        EMF_SERVER_ERRORS: int(status >= 500),
    }


def print_emf(records: list[dict]) -> None:
    # On Lambda, stdout lines go to CloudWatch Logs, which extracts metrics from EMF records.
    for rec in records:
        print(json.dumps(rec, separators=(",", ":")), flush=True)
