"""benchmark: latency, throughput and memory of every way to serve the model, plus cold start.

Reads: models/model, artifacts/onnx (every ONNX variant), artifacts/bundle (the served path),
data/prepared/test.parquet (the sentences), params benchmark and model.max_length. The variants and how they are
timed (fresh process per case, rounds, the int8 peak, cold starts): cola/benchmark.py.

Timing only: quality (accuracy, MCC) and model size per variant have one home, reports/export/variants.json.
Timings depend on the machine, so the benchmark records its fingerprint and puts same-run ratios first.

Outputs, in reports/benchmark/:
    metrics.json   the DVC metric, kept to the figures a person compares (`dvc metrics diff`, `dvc exp show`):
                   headline (served vs PyTorch and vs pad-to-128, at the smallest and largest batch size),
                   peak (int8 GOPS, peak-implied and served sentences/s, the served fraction of the peak)
    variants.json  every case: variants (latency percentiles, throughput, peak RSS per batch size), cold_start_s
    run.json       what the figures depend on but are not: machine fingerprint, settings, iteration counts,
                   the peak's per-op and per-shape detail
                   (not a DVC metric, so `dvc metrics diff` shows no "changes" that are not)
    plots/{latency,throughput}.json
"""

from __future__ import annotations

from cola import benchmark
from cola import onnx_export as ox
from cola.config import load_params, run_main
from cola.paths import BENCHMARK_REPORT_DIR, BUNDLE_DIR, MODEL_DIR, ONNX_DIR, TEST_DATA


def main() -> None:
    benchmark.run(MODEL_DIR, TEST_DATA, ONNX_DIR, BUNDLE_DIR, BENCHMARK_REPORT_DIR, load_params())


if __name__ == "__main__":
    run_main("benchmark", main, FileNotFoundError, ValueError, ox.ExportError)
