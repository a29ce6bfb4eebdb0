"""The prediction log line: one JSON object per prediction, written by the app (app/service.py) and read back by
the drift monitor (cola/monitoring.py, run by `make monitor`) from a file or CloudWatch Logs. docs/serving.md
says what each field means."""

from __future__ import annotations

PREDICTION_EVENT = "prediction"  # the line's "event"; other events (request, rejected, ...) share the log stream
# Every prediction line has exactly these ("ts" and "level" come from app/telemetry.JsonFormatter).
PREDICTION_FIELDS = (
    "ts", "level", "event", "request_id", "model_version", "label", "confidence", "prob_acceptable",
    "latency_ms", "chars", "tokens", "unk_rate", "upper_ratio",
)  # fmt: skip
TEXT_FIELD = "text"  # the raw sentence, added only with COLA_LOG_TEXT=1 (raw user text stays out of logs by default)
# What the monitor cannot do without. upper_ratio may be missing (logs written before it existed): the monitor
# then computes it from the text, if that was logged.
MONITOR_FIELDS = ("ts", "label", "confidence", "chars", "tokens", "unk_rate")
