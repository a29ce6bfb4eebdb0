"""Drift monitor: compare prediction logs with the training data and the served model's held-out outputs.

    python -m stages.monitor                                  # logs from params.yaml monitor.logs_file
    python -m stages.monitor --logs path/to/predictions.jsonl
    python -m stages.monitor --cloudwatch /aws/lambda/cola-api --hours 6

Reference: input lengths and unknown-token rates from data/reference/stats.json (the training split, written
by prepare); confidence, predicted label ratio and capital-letter share from the served bundle run over the
held-out validation split (the same ONNX variant that produced the live confidences, on data it never trained
on, and not the test split that tests replay). How: cola/monitoring.py.

Writes reports/monitor/{metrics.json, alerts.json, report.html}. Exit code 0: no drift; 1: drift past a
threshold; 2: the inputs could not be used (the message says what and how to fix it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cola import monitoring
from cola.config import PARAMS_FILE, load_params, run_main

OVERRIDABLE = ("reference_stats", "held_out", "bundle_dir", "out_dir")  # monitor.* paths, also options


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--logs", type=Path, help="JSON-lines prediction log (default: monitor.logs_file)")
    source.add_argument("--cloudwatch", metavar="LOG_GROUP", help="read a CloudWatch Logs group instead")
    parser.add_argument("--hours", type=float, help="CloudWatch window (default: monitor.cloudwatch.hours)")
    parser.add_argument("--params", type=Path, default=None, help="params file (default: params.yaml)")
    for name in OVERRIDABLE:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, help=f"override monitor.{name}")
    args = parser.parse_args(argv)

    config = load_params(args.params or PARAMS_FILE, sections=("monitor",)).monitor  # a file may hold only it
    config.update({k: v for k in OVERRIDABLE if (v := getattr(args, k)) is not None})
    try:
        records, where = monitoring.read_records(config, args.logs, args.cloudwatch, args.hours)
        _, checks = monitoring.monitor(config, records, where)
    except monitoring.MonitorError as exc:
        print(f"monitor: {exc}", file=sys.stderr)
        return 2
    print(monitoring.summary(checks, len(records), where, config.out_dir))
    return 1 if any(c.alert for c in checks) else 0


if __name__ == "__main__":
    run_main("monitor", lambda: sys.exit(main()))
