"""Every path of the pipeline, in one place: stages and core modules import them from here.

dvc.yaml lists the stages' deps and outs literally (DVC needs them there); tests/unit/test_paths.py checks that
each path a stage module imports from here is a dep or an out of that stage in dvc.yaml and that each data, model,
artifact and report path in dvc.yaml is one of these, so the two cannot drift apart. The drift monitor's paths
are params (conf/monitor/default.yaml, overridable per run); the same test checks that their defaults are these.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The project's own files
PARAMS_FILE = ROOT / "params.yaml"  # composed from CONF_DIR (`make params`, or `dvc exp run`)
PIPELINE_FILE = ROOT / "dvc.yaml"
CONF_DIR = ROOT / "conf"

# Data: the raw import (python -m stages.get_data), then prepare's outputs
RAW_DIR = ROOT / "data" / "raw"
RAW_DVC_FILE = ROOT / "data" / "raw.dvc"  # DVC's record of RAW_DIR (hash, and the source in `meta`)
PREPARED_DIR = ROOT / "data" / "prepared"
TRAIN_DATA = PREPARED_DIR / "train.parquet"
VALIDATION_DATA = PREPARED_DIR / "validation.parquet"
TEST_DATA = PREPARED_DIR / "test.parquet"
PREPARED_SUMMARY = PREPARED_DIR / "summary.json"
REFERENCE_DIR = ROOT / "data" / "reference"
REFERENCE_STATS = REFERENCE_DIR / "stats.json"  # the training data's statistics, the monitoring reference

# The behavioural test set (cola/behaviour.py): minimal pairs written for this project, committed to git
MINIMAL_PAIRS = ROOT / "data" / "minimal_pairs.tsv"

# Model and serving artifacts
MODEL_DIR = ROOT / "models" / "model"
ONNX_DIR = ROOT / "artifacts" / "onnx"
BUNDLE_DIR = ROOT / "artifacts" / "bundle"

# Reports, one folder per stage (committed to git)
REPORTS_DIR = ROOT / "reports"
TRAIN_REPORT_DIR = REPORTS_DIR / "train"
TRAIN_PARAMS = TRAIN_REPORT_DIR / "params.yaml"  # DVCLive's record of the training parameters
TRAIN_METRICS = TRAIN_REPORT_DIR / "metrics.json"
EVALUATE_REPORT_DIR = REPORTS_DIR / "evaluate"
EVALUATE_METRICS = EVALUATE_REPORT_DIR / "metrics.json"
EXPORT_REPORT_DIR = REPORTS_DIR / "export"
EXPORT_METRICS = EXPORT_REPORT_DIR / "metrics.json"
BENCHMARK_REPORT_DIR = REPORTS_DIR / "benchmark"

# The drift monitor (python -m stages.monitor, not a pipeline stage): defaults of its params
MONITOR_REPORT_DIR = REPORTS_DIR / "monitor"
PREDICTION_LOG = ROOT / "logs" / "predictions.jsonl"  # the app's JSON log lines, kept by whoever runs it
