"""benchmark: latency, throughput and memory of every way to serve the model, plus cold start.

Reads: models/model, artifacts/onnx (every ONNX variant), artifacts/bundle (the served path),
data/prepared/test.parquet (the sentences), params benchmark and model.max_length. The variants and how they are
timed (fresh process per case, rounds, the int8 peak, cold starts): cola/benchmark.py. This module runs them
in order and writes the reports.

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

from pathlib import Path

import pandas as pd
from omegaconf import DictConfig
from tqdm import tqdm

from cola import benchmark as bench
from cola import onnx_export as ox
from cola.config import load_params, run_main, to_plain, write_json
from cola.paths import BENCHMARK_REPORT_DIR, BUNDLE_DIR, MODEL_DIR, ONNX_DIR, TEST_DATA


def benchmark_sentences(test_data: Path, max_sentences: int | None) -> list[str]:
    """The test split's sentences, the first benchmark.max_sentences of them when that is set."""
    test = pd.read_parquet(test_data)
    if max_sentences:
        test = test.head(max_sentences)
    return test["sentence"].tolist()


def write_reports(out_dir: Path, metrics: dict, run_info: dict, results: dict, batch_sizes: list[int]) -> None:
    """metrics.json (the DVC metric), variants.json, run.json and the plot data (see the module docstring)."""
    write_json(out_dir / bench.METRICS_JSON, {key: metrics[key] for key in (bench.HEADLINE, "peak") if key in metrics})
    write_json(out_dir / bench.VARIANTS_JSON, {key: metrics[key] for key in ("variants", "cold_start_s")})
    write_json(out_dir / bench.RUN_JSON, run_info)
    write_json(out_dir / "plots" / "latency.json", bench.wide_rows(results, "p50_ms", batch_sizes))
    write_json(out_dir / "plots" / "throughput.json", bench.wide_rows(results, "sentences_per_s", batch_sizes))


def run(
    model_dir: Path = MODEL_DIR,
    test_data: Path = TEST_DATA,
    onnx_dir: Path = ONNX_DIR,
    bundle_dir: Path = BUNDLE_DIR,
    out_dir: Path = BENCHMARK_REPORT_DIR,
    params: DictConfig | None = None,
) -> dict:
    """Time every case of params.benchmark, write the reports in out_dir, print the table; returns the metrics
    (headline, variants, cold_start_s and, for an int8 model, peak)."""
    params = params if params is not None else load_params()
    cfg, max_length = to_plain(params.benchmark), params.model.max_length
    unknown = [v for v in cfg["variants"] if v not in bench.VARIANTS]
    if unknown:
        raise ValueError(f"benchmark.variants in params.yaml has unknown {unknown}: choose from {list(bench.VARIANTS)}")
    sentences = benchmark_sentences(test_data, cfg["max_sentences"])
    paths = {"model_dir": model_dir, "onnx_dir": onnx_dir, "bundle_dir": bundle_dir}
    batch_sizes = sorted(cfg["batch_sizes"])

    n_cases = len(cfg["variants"]) * len(batch_sizes)
    progress = tqdm(total=n_cases * cfg["rounds"] + 1 + len(bench.COLD_START), desc="benchmark", unit="case")
    results, iterations = bench.time_cases(sentences, cfg, paths, max_length, batch_sizes, progress)
    progress.set_postfix_str("int8 peak")
    peak_sizes = sorted({batch_sizes[0], batch_sizes[-1]})  # the headline's batch sizes
    peak = bench.time_peak(sentences, paths, max_length, peak_sizes, cfg["peak_seconds"], cfg["threads"])
    progress.update()
    cold = bench.time_cold_starts(paths, cfg["threads"], cfg["cold_start_repeats"], progress)
    progress.close()

    metrics = {bench.HEADLINE: bench.headline(results, cold, batch_sizes), "variants": results, "cold_start_s": cold}
    run_info = {
        bench.MACHINE: bench.machine_fingerprint(),
        "settings": {
            "threads": cfg["threads"],
            "n_sentences": len(sentences),
            "batch_sizes": batch_sizes,
            "rounds": cfg["rounds"],
        },
        "iterations": iterations,
    }
    if peak is not None:
        metrics["peak"], run_info["peak"] = bench.peak_metrics(peak, results)
    write_reports(out_dir, metrics, run_info, results, batch_sizes)
    print(bench.table(results, batch_sizes, cold, metrics.get("peak")))
    return metrics


if __name__ == "__main__":
    run_main("benchmark", run, FileNotFoundError, ValueError, ox.ExportError)
