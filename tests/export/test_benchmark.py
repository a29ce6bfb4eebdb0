"""The benchmark stage end to end on smoke settings (conf/benchmark/smoke.yaml) and the tiny model."""

import json

import pandas as pd
import pytest

from cola.config import compose_params, load_params
from tests.conftest_bundle import cola_rows


@pytest.mark.slow
def test_benchmark_smoke_run_writes_metrics_and_plots(tiny_model_dir, tiny_variants, tiny_bundle, tmp_path):
    from stages.benchmark import run

    compose_params(tmp_path / "params.yaml", ["benchmark=smoke"])
    params = load_params(tmp_path / "params.yaml")
    sentences, labels = cola_rows(40)
    pd.DataFrame({"sentence": sentences, "label": labels}).to_parquet(tmp_path / "test.parquet")
    onnx_dir = tiny_variants["fp32"].parent

    metrics = run(tiny_model_dir, tmp_path / "test.parquet", onnx_dir, tiny_bundle, tmp_path / "out", params)

    variants = params.benchmark.variants
    assert list(metrics["variants"]) == variants
    assert metrics["settings"]["n_sentences"] == params.benchmark.max_sentences == 16
    for name, result in metrics["variants"].items():
        for bs in (1, 4):
            case = result[f"bs{bs}"]
            assert 0 < case["p50_ms"] <= case["p95_ms"] <= case["p99_ms"], name
            assert case["iterations"] >= params.benchmark.min_iterations
        assert 0 <= result["accuracy"] <= 1 and -1 <= result["mcc"] <= 1
    # Same model and inputs: every fp32 variant predicts what PyTorch predicts.
    assert metrics["variants"]["ort_fp32"]["accuracy"] == metrics["variants"]["pytorch"]["accuracy"]
    # Each case ran in its own process: the torch one carries torch, the ONNX ones do not.
    assert metrics["variants"]["pytorch"]["peak_rss_mb"] > metrics["variants"]["ort_int8"]["peak_rss_mb"] + 100
    assert set(metrics["cold_start_s"]) == {"bundle", "torch_transformers"}
    assert all(seconds > 0 for seconds in metrics["cold_start_s"].values())
    assert {"served_bs1_p50_ms", "served_bs4_sentences_per_s", "served_mcc_drop_vs_fp32"} <= set(metrics["goals"])

    for plot in ("latency", "throughput"):
        rows = json.loads((tmp_path / "out" / "plots" / f"{plot}.json").read_text())
        assert [row["batch_size"] for row in rows] == [1, 4]
        assert all(set(row) == {"batch_size", *variants} for row in rows)
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["variants"].keys() == set(variants)


def test_unknown_variant_is_refused_before_anything_runs(tmp_path):
    from stages.benchmark import run

    compose_params(tmp_path / "params.yaml", ["benchmark=smoke", "benchmark.variants=[pytorch,onnx_fp16]"])
    with pytest.raises(ValueError, match=r"unknown \['onnx_fp16'\]: choose from \['pytorch', 'ort_fp32'"):
        run(out_dir=tmp_path / "out", params=load_params(tmp_path / "params.yaml"))
    assert not (tmp_path / "out").exists()
