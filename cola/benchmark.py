"""The benchmark's timing pieces: latency, throughput and memory of every way to serve the model, plus cold start
(the benchmark stage, stages/benchmark.py, calls them in order and writes the reports).

Variants (params benchmark.variants):
    pytorch          transformers model, eager mode under torch.inference_mode()
    ort_fp32         the plain ONNX export            ┐
    ort_optimized    fused by the ORT optimizer       ├ artifacts/onnx/, inputs padded per batch
    ort_int8         int8 dynamic, per-channel        │
    ort_int8_static  int8 static (QDQ, calibrated)    ┘
    ort_fp32_pad128  ort_fp32 with every input padded to benchmark.pad_to (the original project's way)
    bundle           runtime.predictor.BundlePredictor on raw text: tokenisation included, as served
    bundle_bucketed  bundle on the test sentences sorted by token length (length bucketing, as a batch
                     scoring job would do it): less padding per batch
Latency is per batch call on pre-tokenised test sentences (except `bundle`). Each (variant, batch size)
runs in a fresh process so its peak RSS is its own, once per round (benchmark.rounds, every case in each
round); every figure is the median over rounds. Cold start = process start → first prediction (the probes are
cola/cold_start.py, each run in a fresh interpreter). One thread count (benchmark.threads) for torch and ONNX
Runtime alike, cold starts included.

Peak (cola.int8_peak): ONNX Runtime's int8 matmul ops that the served graph runs, timed alone at the model's
shapes on benchmark.threads threads; the sentences/s they imply at the test split's mean token count is an upper
bound, and the served path's sentences/s is reported as a fraction of it, at the smallest and largest batch size.

Timing only: quality (accuracy, MCC) and model size per variant have one home, reports/export/variants.json
(export_onnx scores every variant on the whole test split). Timings depend on the machine, so the benchmark
records its fingerprint and puts same-run ratios first. What each output file holds: stages/benchmark.py.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from importlib import metadata
from multiprocessing import get_context
from pathlib import Path
from typing import cast

import numpy as np
from tqdm import tqdm

from cola import cold_start as probes
from cola import onnx_export as ox
from cola.int8_peak import int8_peak
from cola.paths import ROOT

ONNX_VARIANTS = {
    "ort_fp32": "fp32",
    "ort_optimized": "optimized",
    "ort_int8": "int8",
    "ort_int8_static": "int8_static",
    "ort_fp32_pad128": "fp32",
}
BUNDLE_VARIANTS = ("bundle", "bundle_bucketed")
VARIANTS = ("pytorch", *ONNX_VARIANTS, *BUNDLE_VARIANTS)
SAMPLE = "The cat sat on the mat."

# The contract with scripts/pr_report.py, which imports these names and reads them in both revisions' files.
# The output folder: cola.paths.BENCHMARK_REPORT_DIR in the pipeline (stages/benchmark.py writes the files).
METRICS_JSON, VARIANTS_JSON, RUN_JSON = "metrics.json", "variants.json", "run.json"  # in out_dir
HEADLINE = "headline"  # metrics.json: {"bs<n>": {SERVED_P50: ms, <SPEEDUP_VS value>: ratio}, SERVED_COLD_START: s}
SERVED = "bundle"  # the real served path (runtime.predictor.BundlePredictor on raw text) ...
SPEEDUP_VS = {"pytorch": "speedup_vs_pytorch", "ort_fp32_pad128": "speedup_vs_pad128"}  # ... timed against these
SERVED_P50 = "served_p50_ms"
SERVED_COLD_START = "served_cold_start_s"
MACHINE = "machine"  # run.json: the fingerprint; two runs' timings compare only if these are equal

# /proc/cpuinfo flags that change which kernels ONNX Runtime and torch use (x86, then Arm).
CPU_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "asimddp",
    "i8mm",
    "sve",
)

COLD_START = tuple(probes.PROBES)  # what cold_start can time: bundle, torch_transformers


def make_runner(
    variant: str, model_dir: Path, onnx_dir: Path, bundle_dir: Path, threads: int, pad_to: int, max_length: int
):
    """(prepare, predict): prepare(sentences) -> model input, built before the clock starts;
    predict(input) -> labels."""
    if variant in BUNDLE_VARIANTS:
        from runtime.predictor import BundlePredictor

        predictor = BundlePredictor(bundle_dir, threads=threads)
        return list, lambda texts: predictor.predict_proba(texts).argmax(1)

    tokenizer = ox.bundle_tokenizer(model_dir, max_length)
    if variant == "ort_fp32_pad128":
        padding = cast(dict, tokenizer.padding)  # enabled by bundle_tokenizer
        tokenizer.enable_padding(length=pad_to, pad_id=padding["pad_id"], pad_token=padding["pad_token"])
    if variant in ONNX_VARIANTS:
        session = ox.make_session(onnx_dir / ox.VARIANT_FILES[ONNX_VARIANTS[variant]], threads=threads)
        return (lambda texts: ox.encode(tokenizer, texts)), lambda inputs: ox.ort_logits(session, inputs).argmax(1)
    return torch_runner(model_dir, tokenizer, threads)  # "pytorch": the stage accepts only names from VARIANTS


def torch_runner(model_dir: Path, tokenizer, threads: int):
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging

    logging.disable_progress_bar()  # keep the benchmark's own progress bar readable
    torch.set_num_threads(threads)
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()

    def prepare(texts):
        return {k: torch.from_numpy(v) for k, v in ox.encode(tokenizer, texts).items()}

    def predict(inputs):
        with torch.inference_mode():
            return model(**inputs).logits.argmax(1).numpy()

    return prepare, predict


def peak_rss_mb() -> float:
    """This process's peak resident memory. Not getrusage: its ru_maxrss survives exec, so a spawned
    child would report at least the RSS of the parent it was forked from."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024


def measure_case(variant: str, batch_size: int, sentences: list[str], cfg: dict, paths: dict, max_length: int) -> dict:
    """Runs in its own process. Times batch calls over the test sentences (in order, cycling) after a
    warm-up, for at least min_seconds and until min_iterations or max_seconds is reached."""
    prepare, predict = make_runner(
        variant, threads=cfg["threads"], pad_to=cfg["pad_to"], max_length=max_length, **paths
    )
    if variant.endswith("_bucketed"):
        tokenizer = ox.bundle_tokenizer(paths["model_dir"], max_length)
        lengths = [sum(e.attention_mask) for e in tokenizer.encode_batch(sentences)]  # ids are padded
        sentences = [sentences[i] for i in np.argsort(lengths, kind="stable")]
    chunks = list(ox.batches(sentences, batch_size))
    inputs = [prepare(chunk) for chunk in chunks]
    for i in range(cfg["warmup"]):
        predict(inputs[i % len(inputs)])
    times: list[float] = []
    counted, started = 0, time.perf_counter()
    while True:
        i = len(times) % len(inputs)
        t0 = time.perf_counter()
        predict(inputs[i])
        times.append(time.perf_counter() - t0)
        counted += len(chunks[i])
        elapsed = time.perf_counter() - started
        if elapsed >= cfg["min_seconds"] and (len(times) >= cfg["min_iterations"] or elapsed >= cfg["max_seconds"]):
            break
    ms = np.array(times) * 1000
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "sentences_per_s": counted / (ms.sum() / 1000),
        "iterations": len(times),
        "peak_rss_mb": peak_rss_mb(),
    }


def measure_peak(
    sentences: list[str], paths: dict, max_length: int, batch_sizes: list[int], seconds: float, threads: int
) -> dict:
    """Runs in its own process: cola.int8_peak for the served bundle's model at the trained model's shapes and
    the mean token count (special tokens included, truncated at max_length) of the benchmark's sentences."""
    import json

    from contract.bundle import CONFIG

    shape = json.loads((paths["model_dir"] / "config.json").read_text())
    bundle_config = json.loads((paths["bundle_dir"] / CONFIG).read_text())
    tokenizer = ox.bundle_tokenizer(paths["model_dir"], max_length)
    mean_tokens = float(np.mean([sum(e.attention_mask) for e in tokenizer.encode_batch(sentences)]))  # ids are padded
    return int8_peak(
        paths["bundle_dir"] / bundle_config.get("model_file", "model.onnx"),
        shape["hidden_size"],
        shape["intermediate_size"],
        shape["num_hidden_layers"],
        mean_tokens,
        batch_sizes,
        seconds,
        threads,
    )


def peak_metrics(peak: dict, results: dict) -> tuple[dict, dict]:
    """(metrics.json `peak`, run.json `peak`): the figures, then how they were obtained (ops, rows, shapes)."""
    figures = {k: peak[k] for k in ("mean_tokens", "int8_macs_per_sentence", "fp32_attention_macs_per_sentence")}
    detail = {"served_ops": peak["served_ops"]}
    for key, case in peak.items():
        if not key.startswith("bs"):
            continue
        figures[key] = {"int8_gops": case["int8_gops"], "peak_sentences_per_s": case["peak_sentences_per_s"]}
        if SERVED in results:
            served = results[SERVED][key]["sentences_per_s"]
            figures[key] |= {
                "served_sentences_per_s": served,
                "served_fraction_of_peak": served / case["peak_sentences_per_s"],
            }
        detail[key] = {k: case[k] for k in ("m_rows", "peak_op", "ops")}
    return figures, detail


def cold_start(kind: str, paths: dict, threads: int, repeats: int) -> float:
    """Median seconds from launching `python -m cola.cold_start <kind>` to its first prediction, after one run
    that warms the page cache. The child prints the wall clock after predicting; the parent notes it before
    launching."""
    env = os.environ | {"PYTHONPATH": str(ROOT), "COLA_ORT_THREADS": str(threads)}
    args = [sys.executable, "-m", probes.__name__, kind, str(paths["bundle_dir"]), str(paths["model_dir"]), SAMPLE]
    samples = []
    for _ in range(repeats + 1):
        started = time.time()
        done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        samples.append(float(done.stdout.strip().splitlines()[-1]) - started)
    return statistics.median(samples[1:])


def parse_cpuinfo(text: str) -> tuple[str | None, list[str]]:
    """(CPU model name, the CPU_FLAGS it has) from /proc/cpuinfo: x86 says `model name`/`flags`, Arm
    `Features` (and often no model name)."""
    model: str | None = None
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "model name" and model is None:
            model = value
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model, [flag for flag in CPU_FLAGS if flag in flags]


def machine_fingerprint() -> dict:
    """What timings depend on besides the code: CPU, its vector extensions, cores, runtime versions."""
    cpuinfo = Path("/proc/cpuinfo")
    model, flags = parse_cpuinfo(cpuinfo.read_text()) if cpuinfo.exists() else (None, [])

    def version(package: str) -> str | None:
        try:
            return metadata.version(package)  # no import: torch would cost seconds here
        except metadata.PackageNotFoundError:
            return None

    return {
        "cpu": model or platform.processor() or platform.machine(),
        "cpu_flags": flags,
        "logical_cores": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": version("onnxruntime"),
        "torch": version("torch"),
    }


def headline(results: dict, cold: dict, batch_sizes: list[int]) -> dict:
    """The reviewer's figures: the served path's p50 at the smallest and largest batch size and how many
    times faster it is than each SPEEDUP_VS variant at the same batch size, in this same run (ratios are less
    machine-dependent than absolute times), plus its cold start."""
    out = {}
    if SERVED in results:
        for bs in sorted({batch_sizes[0], batch_sizes[-1]}):
            p50 = {variant: r[f"bs{bs}"]["p50_ms"] for variant, r in results.items()}
            out[f"bs{bs}"] = {SERVED_P50: p50[SERVED]} | {
                key: p50[other] / p50[SERVED] for other, key in SPEEDUP_VS.items() if other in p50
            }
    if SERVED in cold:
        out[SERVED_COLD_START] = cold[SERVED]
    return out


def wide_rows(results: dict, key: str, batch_sizes: list[int]) -> list[dict]:
    """One row per batch size, one column per variant: DVC draws a line per column."""
    return [{"batch_size": bs} | {v: round(r[f"bs{bs}"][key], 3) for v, r in results.items()} for bs in batch_sizes]


def time_cases(
    sentences: list[str], cfg: dict, paths: dict, max_length: int, batch_sizes: list[int], progress: tqdm
) -> tuple[dict, dict]:
    """(results, iterations): every (variant, batch size) case of cfg timed once per round, each in a fresh process;
    results hold the median over rounds of each figure, iterations (run.json) the iteration counts summed."""
    cases = [(v, bs) for v in cfg["variants"] for bs in batch_sizes]
    runs: dict[tuple[str, int], list[dict]] = {}
    # Every case once per round, rounds one after the other: load that comes and goes on a shared machine
    # then hits every variant alike, and each figure is the median over rounds.
    for round_ in range(cfg["rounds"]):
        for variant, bs in cases:
            progress.set_postfix_str(f"round {round_ + 1}: {variant} batch {bs}")
            # A fresh process per case: its peak RSS is this variant's alone, and torch never loads next to ORT.
            with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
                runs.setdefault((variant, bs), []).append(
                    pool.submit(measure_case, variant, bs, sentences, cfg, paths, max_length).result()
                )
            progress.update()
    results: dict[str, dict] = {}
    iterations: dict[str, dict] = {}
    for (variant, bs), repeats in runs.items():
        # The iteration count follows from machine speed and settings: run.json, not a metric.
        iterations.setdefault(variant, {})[f"bs{bs}"] = sum(case.pop("iterations") for case in repeats)
        results.setdefault(variant, {})[f"bs{bs}"] = {
            key: statistics.median(case[key] for case in repeats) for key in repeats[0]
        }
    return results, iterations


def time_peak(
    sentences: list[str], paths: dict, max_length: int, peak_sizes: list[int], seconds: float, threads: int
) -> dict | None:
    """measure_peak in a fresh process; None (and a printed reason) when the served model is not int8."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        try:
            return pool.submit(measure_peak, sentences, paths, max_length, peak_sizes, seconds, threads).result()
        except ValueError as exc:  # the served model is not int8: there is no int8 peak to compare with
            print(f"benchmark: no int8 peak: {exc}")
            return None


def time_cold_starts(paths: dict, threads: int, repeats: int, progress: tqdm) -> dict[str, float]:
    """Seconds to the first prediction for each COLD_START kind (see cold_start)."""
    cold = {}
    for kind in COLD_START:
        progress.set_postfix_str(f"cold start {kind}")
        cold[kind] = cold_start(kind, paths, threads, repeats)
        progress.update()
    return cold


def table(results: dict, batch_sizes: list[int], cold: dict, peak: dict | None) -> str:
    lines = [
        f"{'variant':16s} {'batch':>5s} {'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s} {'sent/s':>8s} {'RSS MB':>7s}"
    ]
    for variant, r in results.items():
        for bs in batch_sizes:
            c = r[f"bs{bs}"]
            lines.append(
                f"{variant:16s} {bs:5d} {c['p50_ms']:8.2f} {c['p95_ms']:8.2f} {c['p99_ms']:8.2f} "
                f"{c['sentences_per_s']:8.0f} {c['peak_rss_mb']:7.0f}"
            )
    lines += [f"cold start {kind}: {seconds:.2f} s" for kind, seconds in cold.items()]
    peak = peak or {}
    for key, case in peak.items():
        if key.startswith("bs"):
            served = (
                f", served {case['served_fraction_of_peak']:.0%} of it" if "served_fraction_of_peak" in case else ""
            )
            lines.append(
                f"int8 peak {key}: {case['int8_gops']:.0f} GOPS -> {case['peak_sentences_per_s']:.0f} sentences/s "
                f"at {peak['mean_tokens']:.1f} tokens{served}"
            )
    return "\n".join(lines)
