"""benchmark: latency, throughput, memory and accuracy of every way to serve the model, plus cold start.

Variants (params benchmark.variants):
    pytorch          transformers model, eager mode under torch.inference_mode()
    ort_fp32         the plain ONNX export            ┐
    ort_optimized    fused by the ORT optimizer       ├ artifacts/onnx/, inputs padded per batch
    ort_int8         optimised + int8 per-channel     ┘
    ort_fp32_pad128  ort_fp32 with every input padded to benchmark.pad_to (the original project's way)
    bundle           app.predictor.BundlePredictor on raw text: tokenisation included, as served
    bundle_bucketed  bundle on the test sentences sorted by token length (length bucketing, as a batch
                     scoring job would do it): less padding per batch
Latency is per batch call on pre-tokenised test sentences (except `bundle`). Each (variant, batch size)
runs in a fresh process so its peak RSS is its own. Cold start = process start → first prediction.

Outputs: reports/benchmark/metrics.json and reports/benchmark/plots/{latency,throughput}.json.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cola import onnx_export as ox
from cola.config import ROOT, load_params, write_json

MODEL_DIR = ROOT / "models" / "model"
TEST_DATA = ROOT / "data" / "prepared" / "test.parquet"
ONNX_DIR = ROOT / "artifacts" / "onnx"
BUNDLE_DIR = ROOT / "artifacts" / "bundle"
OUT_DIR = ROOT / "reports" / "benchmark"
ONNX_VARIANTS = {"ort_fp32": "fp32", "ort_optimized": "optimized", "ort_int8": "int8", "ort_fp32_pad128": "fp32"}
BUNDLE_VARIANTS = ("bundle", "bundle_bucketed")
VARIANTS = ("pytorch", *ONNX_VARIANTS, *BUNDLE_VARIANTS)
SAMPLE = "The cat sat on the mat."

COLD_START = {
    "bundle": "import sys\nfrom app.predictor import BundlePredictor\n"
    "BundlePredictor(sys.argv[1]).predict_proba([sys.argv[3]])\n",
    "torch_transformers": "import sys, torch\n"
    "from transformers import AutoModelForSequenceClassification, AutoTokenizer\n"
    "tokenizer = AutoTokenizer.from_pretrained(sys.argv[2])\n"
    "model = AutoModelForSequenceClassification.from_pretrained(sys.argv[2]).eval()\n"
    "with torch.inference_mode():\n    model(**tokenizer([sys.argv[3]], return_tensors='pt'))\n",
}


def make_runner(variant: str, model_dir: Path, onnx_dir: Path, bundle_dir: Path, threads: int, pad_to: int, max_length: int):
    """(prepare, predict): prepare(sentences) -> model input, built before the clock starts;
    predict(input) -> labels."""
    if variant in BUNDLE_VARIANTS:
        from app.predictor import BundlePredictor

        predictor = BundlePredictor(bundle_dir, threads=threads)
        return list, lambda texts: predictor.predict_proba(texts).argmax(1)

    tokenizer = ox.bundle_tokenizer(model_dir, max_length)
    if variant == "ort_fp32_pad128":
        tokenizer.enable_padding(length=pad_to, pad_id=tokenizer.padding["pad_id"], pad_token=tokenizer.padding["pad_token"])
    if variant in ONNX_VARIANTS:
        session = ox.make_session(onnx_dir / ox.VARIANT_FILES[ONNX_VARIANTS[variant]], threads=threads)
        return (lambda texts: ox.encode(tokenizer, texts)), lambda inputs: ox.ort_logits(session, inputs).argmax(1)
    return torch_runner(model_dir, tokenizer, threads)  # "pytorch": run() accepts only names from VARIANTS


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


def measure_case(variant: str, batch_size: int, sentences: list[str], cfg: dict, paths: dict, max_length: int,
                 full_pass: bool) -> dict:
    """Runs in its own process. Times batch calls over the test sentences (in order, cycling) after a
    warm-up, for at least min_seconds and until min_iterations or max_seconds is reached. With full_pass,
    also returns a prediction for every sentence (the timed calls' outputs, completed untimed if needed)."""
    prepare, predict = make_runner(variant, threads=cfg["threads"], pad_to=cfg["pad_to"], max_length=max_length, **paths)
    order = np.arange(len(sentences))
    if variant.endswith("_bucketed"):
        tokenizer = ox.bundle_tokenizer(paths["model_dir"], max_length)
        lengths = [sum(e.attention_mask) for e in tokenizer.encode_batch(sentences)]  # ids are padded
        order = np.argsort(lengths, kind="stable")
        sentences = [sentences[i] for i in order]
    chunks = list(ox.batches(sentences, batch_size))
    inputs = [prepare(chunk) for chunk in chunks]
    for i in range(cfg["warmup"]):
        predict(inputs[i % len(inputs)])
    times, outputs, counted, started = [], {}, 0, time.perf_counter()
    while True:
        i = len(times) % len(inputs)
        t0 = time.perf_counter()
        outputs[i] = predict(inputs[i])
        times.append(time.perf_counter() - t0)
        counted += len(chunks[i])
        elapsed = time.perf_counter() - started
        if elapsed >= cfg["min_seconds"] and (len(times) >= cfg["min_iterations"] or elapsed >= cfg["max_seconds"]):
            break
    ms = np.array(times) * 1000
    result = {
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "sentences_per_s": counted / (ms.sum() / 1000),
        "iterations": len(times),
        "peak_rss_mb": peak_rss_mb(),
    }
    if full_pass:
        preds = np.empty(len(sentences), dtype=int)
        preds[order] = np.concatenate([outputs[i] if i in outputs else predict(x) for i, x in enumerate(inputs)])
        result["preds"] = preds.tolist()  # in test-split order
    return result


def cold_start(kind: str, paths: dict, threads: int, repeats: int) -> float:
    """Median seconds from launching `python -c <snippet>` to its first prediction, after one run that warms
    the page cache. The child prints the wall clock after predicting; the parent notes it before launching."""
    snippet = COLD_START[kind] + "import time\nprint(time.time())\n"
    env = os.environ | {"PYTHONPATH": str(ROOT), "COLA_ORT_THREADS": str(threads)}
    args = [sys.executable, "-c", snippet, str(paths["bundle_dir"]), str(paths["model_dir"]), SAMPLE]
    samples = []
    for _ in range(repeats + 1):
        started = time.time()
        done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        samples.append(float(done.stdout.strip().splitlines()[-1]) - started)
    return statistics.median(samples[1:])


def wide_rows(results: dict, key: str, batch_sizes: list[int]) -> list[dict]:
    """One row per batch size, one column per variant: DVC draws a line per column."""
    return [{"batch_size": bs} | {v: round(r[f"bs{bs}"][key], 3) for v, r in results.items()} for bs in batch_sizes]


def run(model_dir: Path = MODEL_DIR, test_data: Path = TEST_DATA, onnx_dir: Path = ONNX_DIR,
        bundle_dir: Path = BUNDLE_DIR, out_dir: Path = OUT_DIR, params: dict | None = None) -> dict:
    import pandas as pd

    from cola.metrics import classification_metrics

    params = params or load_params()
    cfg, max_length = dict(params.benchmark), params.model.max_length
    unknown = [v for v in cfg["variants"] if v not in VARIANTS]
    if unknown:
        raise ValueError(f"benchmark.variants in params.yaml has unknown {unknown}: choose from {list(VARIANTS)}")
    test = pd.read_parquet(test_data)
    if cfg["max_sentences"]:
        test = test.head(cfg["max_sentences"])
    sentences, labels = test["sentence"].tolist(), test["label"].to_numpy()
    paths = {"model_dir": model_dir, "onnx_dir": onnx_dir, "bundle_dir": bundle_dir}
    batch_sizes = sorted(cfg["batch_sizes"])

    results: dict[str, dict] = {}
    cases = [(v, bs) for v in cfg["variants"] for bs in batch_sizes]
    progress = tqdm(total=len(cases) + 2, desc="benchmark", unit="case")
    for variant, bs in cases:
        progress.set_postfix_str(f"{variant} batch {bs}")
        # A fresh process per case: its peak RSS is this variant's alone, and torch never loads next to ORT.
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            case = pool.submit(measure_case, variant, bs, sentences, cfg, paths, max_length,
                               full_pass=bs == batch_sizes[-1]).result()
        entry = results.setdefault(variant, {})
        if "preds" in case:
            entry.update(classification_metrics(labels, np.eye(2)[case.pop("preds")]))
        entry["peak_rss_mb"] = max(entry.get("peak_rss_mb", 0), case["peak_rss_mb"])
        entry[f"bs{bs}"] = case
        progress.update()
    for variant, entry in results.items():
        model_file = bundle_dir / "model.onnx" if variant in BUNDLE_VARIANTS else (
            onnx_dir / ox.VARIANT_FILES[ONNX_VARIANTS[variant]] if variant in ONNX_VARIANTS else model_dir / "model.safetensors")
        entry["size_mb"] = model_file.stat().st_size / 2**20
        entry.pop("roc_auc", None)  # from hard labels it says nothing

    cold = {}
    for kind in COLD_START:
        progress.set_postfix_str(f"cold start {kind}")
        cold[kind] = cold_start(kind, paths, cfg["threads"], cfg["cold_start_repeats"])
        progress.update()
    progress.close()

    metrics = {
        "settings": {"threads": cfg["threads"], "n_sentences": len(sentences), "cpu_count": os.cpu_count()},
        "variants": results,
        "cold_start_s": cold,
        "goals": goals(results, cold, params.export.served_variant, batch_sizes),
    }
    write_json(out_dir / "metrics.json", metrics)
    write_json(out_dir / "plots" / "latency.json", wide_rows(results, "p50_ms", batch_sizes))
    write_json(out_dir / "plots" / "throughput.json", wide_rows(results, "sentences_per_s", batch_sizes))
    print(table(results, batch_sizes, cold))
    return metrics


def goals(results: dict, cold: dict, served: str, batch_sizes: list[int]) -> dict:
    """The issue's goal figures for the served ONNX variant (where the variants needed were measured)."""
    served_key, small, large = f"ort_{served}", f"bs{batch_sizes[0]}", f"bs{batch_sizes[-1]}"
    out = {"cold_start_bundle_s": cold["bundle"]}
    if served_key in results:
        out[f"served_{small}_p50_ms"] = results[served_key][small]["p50_ms"]
        out[f"served_{large}_sentences_per_s"] = results[served_key][large]["sentences_per_s"]
        if "pytorch" in results:
            out[f"served_{small}_speedup_vs_pytorch"] = results["pytorch"][small]["p50_ms"] / results[served_key][small]["p50_ms"]
        if "ort_fp32" in results and "mcc" in results[served_key]:
            out["served_mcc_drop_vs_fp32"] = results["ort_fp32"]["mcc"] - results[served_key]["mcc"]
    return out


def table(results: dict, batch_sizes: list[int], cold: dict) -> str:
    lines = [f"{'variant':16s} {'batch':>5s} {'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s} {'sent/s':>8s} "
             f"{'RSS MB':>7s} {'size MB':>7s} {'acc':>6s} {'mcc':>6s}"]
    for variant, r in results.items():
        for bs in batch_sizes:
            c = r[f"bs{bs}"]
            lines.append(f"{variant:16s} {bs:5d} {c['p50_ms']:8.2f} {c['p95_ms']:8.2f} {c['p99_ms']:8.2f} "
                         f"{c['sentences_per_s']:8.0f} {c['peak_rss_mb']:7.0f} {r['size_mb']:7.1f} "
                         f"{r.get('accuracy', float('nan')):6.3f} {r.get('mcc', float('nan')):6.3f}")
    lines += [f"cold start {kind}: {seconds:.2f} s" for kind, seconds in cold.items()]
    return "\n".join(lines)


def main() -> None:
    try:
        run()
    except (FileNotFoundError, ValueError, ox.ExportError) as exc:
        sys.exit(f"benchmark failed: {exc}")


if __name__ == "__main__":
    main()
