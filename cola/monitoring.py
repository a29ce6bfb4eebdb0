"""The drift monitor: prediction logs (a JSON-lines file or a CloudWatch Logs group) against the reference, the
training data and the served model's held-out outputs (python -m stages.monitor runs it; docs/monitoring.md).

Reference: input lengths and unknown-token rates from the training split's statistics (data/reference/stats.json,
written by prepare); confidence, predicted label ratio and capital-letter share from the served bundle run over the
held-out validation split (the same ONNX variant that produced the live confidences, on data it never trained
on, and not the test split that tests replay). The statistics are cola.drift's, the HTML is cola.drift_report's;
this module reads the records and builds both sides' features; stages/monitor.py compares them and writes the
reports. MonitorError: the inputs cannot be used, with the fix.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from cola import drift
from contract.features import upper_ratio
from contract.logs import MONITOR_FIELDS, PREDICTION_EVENT, TEXT_FIELD


class MonitorError(RuntimeError):
    """The logs or the reference cannot be used; the message says what and how to fix it."""


# ---- live side ----------------------------------------------------------------------------------------------


def parse_records(lines, source: str) -> list[dict]:
    """Prediction records from log lines; other lines (request logs, EMF records, plain text) are skipped.

    A line may carry a prefix before its JSON (Lambda's logging format): parsing starts at the first '{'.
    """
    records = []
    for number, line in enumerate(lines, 1):
        start = line.find("{")
        if start < 0:
            continue
        try:
            record = json.loads(line[start:])
        except ValueError:
            continue
        if not isinstance(record, dict) or record.get("event") != PREDICTION_EVENT:
            continue
        missing = [f for f in MONITOR_FIELDS if f not in record]
        if missing:
            raise MonitorError(
                f"{source}, line {number}: prediction record lacks {missing}; "
                f"logs must come from the app's JSON prediction logger (app/)"
            )
        records.append(record)
    return records


def read_log_file(path: Path) -> list[dict]:
    if not path.is_file():
        raise MonitorError(
            f"prediction log {path} does not exist: run the app with its JSON logs redirected "
            f"there, or pass --logs PATH / --cloudwatch LOG_GROUP"
        )
    with open(path, encoding="utf-8", errors="replace") as f:
        return parse_records(f, str(path))


def read_cloudwatch(log_group: str, hours: float, client=None) -> list[dict]:
    """Prediction records of the last `hours` from a CloudWatch Logs group (boto3, default credentials)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    client = client or boto3.client("logs")
    start = int((time.time() - hours * 3600) * 1000)
    messages: list[str] = []
    try:
        for page in client.get_paginator("filter_log_events").paginate(logGroupName=log_group, startTime=start):
            messages.extend(event["message"] for event in page["events"])
    except (BotoCoreError, ClientError) as exc:
        raise MonitorError(
            f"CloudWatch Logs group {log_group!r} could not be read ({exc}): check the group name, "
            f"AWS_REGION and credentials"
        ) from exc
    return parse_records(messages, f"CloudWatch {log_group}")


def live_features(records: list[dict]) -> dict[str, np.ndarray]:
    def column(name):
        return np.array([r[name] for r in records], dtype=float)

    chars, tokens = column("chars"), column("tokens")
    features = {
        "char_length": chars,
        "token_length": tokens,
        "token_density": tokens / np.maximum(chars, 1),
        "confidence": column("confidence"),
        "unk_rate": column("unk_rate"),
        "label": np.array([r["label"] == "acceptable" for r in records], dtype=int),
    }
    # The capital-letter share needs the app's `upper_ratio` field, or the text (logged only when enabled).
    if all("upper_ratio" in r for r in records):
        features["upper_ratio"] = column("upper_ratio")
    elif all(TEXT_FIELD in r for r in records):
        features["upper_ratio"] = np.array([upper_ratio(r[TEXT_FIELD]) for r in records])
    return features


def read_records(
    config: DictConfig, logs: Path | None = None, cloudwatch: str | None = None, hours: float | None = None
) -> tuple[list[dict], str]:
    """(prediction records, where they came from): the last `hours` of the CloudWatch Logs group `cloudwatch`
    (default window monitor.cloudwatch.hours), else the JSON-lines file `logs` (default monitor.logs_file)."""
    if cloudwatch:
        hours = hours or config.cloudwatch.hours
        return read_cloudwatch(cloudwatch, hours), f"CloudWatch {cloudwatch} (last {hours} h)"
    path = logs or Path(config.logs_file)
    return read_log_file(path), str(path)


# ---- reference side -----------------------------------------------------------------------------------------


def reference_features(stats_path: Path, held_out: Path, bundle_dir: Path) -> tuple[dict, dict]:
    """Reference feature arrays, and facts about the reference for the report."""
    from contract.bundle import BundleError
    from runtime.predictor import BundlePredictor

    try:
        stats = json.loads(stats_path.read_text())
        chars = np.array(stats["char_length"]["values"], dtype=float)
        tokens = np.array(stats["token_length"]["values"], dtype=float)
        unk = np.array(stats["unk_rate"]["values"], dtype=float)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MonitorError(
            f"reference statistics {stats_path} are missing or malformed ({exc!r}): run `dvc repro prepare`"
        ) from exc
    try:
        texts = pd.read_parquet(held_out)["sentence"].astype(str).tolist()
    except (OSError, ValueError, KeyError) as exc:
        raise MonitorError(f"held-out split {held_out} cannot be read ({exc!r}): run `dvc repro prepare`") from exc
    try:
        predictor = BundlePredictor(bundle_dir)
    except BundleError as exc:
        raise MonitorError(f"the served bundle is needed for the reference confidences: {exc}") from exc
    probs = np.concatenate([predictor.predict_proba(texts[i : i + 64]) for i in range(0, len(texts), 64)])
    winners = predictor.decide(probs)  # the served decision rule, so reference and live labels compare
    features = {
        "char_length": chars,
        "token_length": tokens,
        "token_density": tokens / np.maximum(chars, 1),
        "unk_rate": unk,
        "confidence": probs[np.arange(len(probs)), winners],
        "label": (winners == predictor.positive).astype(int),
        "upper_ratio": np.array([upper_ratio(t) for t in texts]),
    }
    facts = {
        "training_rows": int(stats.get("n_rows", len(chars))),
        "held_out_rows": len(texts),
        "training_acceptable": float(stats.get("label_balance", {}).get("acceptable", float("nan"))),
        "model_version": predictor.version,
    }
    return features, facts


# ---- report ---------------------------------------------------------------------------------------------------


def label_ratio_over_time(records: list[dict], buckets: int) -> list[dict]:
    """Acceptable share of predictions in equal time slices of the log."""
    times = np.array([_epoch(r["ts"]) for r in records])
    labels = np.array([r["label"] == "acceptable" for r in records])
    edges = np.linspace(times.min(), times.max() + 1e-6, buckets + 1)
    slot = np.clip(np.searchsorted(edges, times, side="right") - 1, 0, buckets - 1)
    return [
        {
            "start": datetime.fromtimestamp(edges[b], UTC).isoformat(timespec="seconds"),
            "acceptable_share": float(labels[slot == b].mean()),
            "n": int((slot == b).sum()),
        }
        for b in range(buckets)
        if (slot == b).any()
    ]


def _epoch(ts) -> float:
    if isinstance(ts, int | float):
        return float(ts)
    try:
        return datetime.fromisoformat(str(ts).replace("Z", "+00:00")).timestamp()
    except ValueError as exc:
        raise MonitorError(f"prediction record has an unreadable timestamp {ts!r}: expected ISO 8601") from exc


def summary(checks: list[drift.Check], n_records: int, source: str, out_dir: str) -> str:
    """What the monitor prints: one line per check, then the count of alerts and where the report is."""
    lines = [
        f"{'ALERT' if c.alert else 'ok   '} {c.feature:15s} {c.statistic:24s} {c.value:9.4f}  (threshold {c.threshold})"
        for c in checks
    ]
    alerts = sum(c.alert for c in checks)
    lines.append(f"{n_records} predictions from {source}: {alerts} alert(s); report: {out_dir}/report.html")
    return "\n".join(lines)
