"""Drift monitor: compare prediction logs with the training data and the served model's held-out outputs.

    python -m stages.monitor                                  # logs from params.yaml monitor.logs_file
    python -m stages.monitor --logs path/to/predictions.jsonl
    python -m stages.monitor --cloudwatch /aws/lambda/cola-api --hours 6

Reference: input lengths and unknown-token rates from data/reference/stats.json (the training split, written
by prepare); confidence, predicted label ratio and capital-letter share from the served bundle run over the
held-out validation split (the same ONNX variant that produced the live confidences, on data it never trained
on, and not the test split that tests replay). The features: cola/monitoring.py; the statistics: cola/drift.py.

Writes reports/monitor/{metrics.json, alerts.json, report.html}. Exit code 0: no drift; 1: drift past a
threshold; 2: the inputs could not be used (the message says what and how to fix it).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from omegaconf import DictConfig

from cola import drift, monitoring
from cola.config import PARAMS_FILE, load_params, run_main, write_json
from cola.drift_report import render_report

OVERRIDABLE = ("reference_stats", "held_out", "bundle_dir", "out_dir")  # monitor.* paths, also options


def compare(config: DictConfig, records: list[dict], source: str) -> tuple[dict, list[drift.Check]]:
    """Compare `records` with the reference and write metrics.json, alerts.json and report.html."""
    if len(records) < config.min_predictions:
        raise monitoring.MonitorError(
            f"{source} holds {len(records)} prediction records, fewer than "
            f"monitor.min_predictions={config.min_predictions}: wait for more traffic or lower it"
        )
    stats, held_out, bundle_dir = Path(config.reference_stats), Path(config.held_out), Path(config.bundle_dir)
    reference, facts = monitoring.reference_features(stats, held_out, bundle_dir)
    live = monitoring.live_features(records)
    figures, checks = drift.compare(reference, live, config.thresholds, config.bins)
    live_versions = sorted({str(r.get("model_version")) for r in records})
    figures.update(n_predictions=len(records), alerts=sum(c.alert for c in checks))

    out = Path(config.out_dir)
    write_json(out / "metrics.json", figures)
    write_json(
        out / "alerts.json",
        {
            "source": source,
            "reference": facts,
            "live_model_versions": live_versions,
            "checks": drift.checks_as_dicts(checks),
            "skipped": sorted(set(drift.FEATURES) - {c.feature for c in checks}),
        },
    )
    histograms = {
        f: drift.histogram(reference[f], live[f])
        for f in ("char_length", "token_length", "confidence", "token_density")
        if f in figures
    }
    meta = {
        "source": source,
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        **facts,
        "live_model_versions": live_versions,
        "n_predictions": len(records),
    }
    over_time = monitoring.label_ratio_over_time(records, config.time_buckets)
    (out / "report.html").write_text(render_report(meta, figures, checks, histograms, over_time), encoding="utf-8")
    return figures, checks


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
        _, checks = compare(config, records, where)
    except monitoring.MonitorError as exc:
        print(f"monitor: {exc}", file=sys.stderr)
        return 2
    print(monitoring.summary(checks, len(records), where, config.out_dir))
    return 1 if any(c.alert for c in checks) else 0


if __name__ == "__main__":
    run_main("monitor", lambda: sys.exit(main()))
