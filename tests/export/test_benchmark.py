"""The benchmark stage (stages/benchmark.py, with its timing pieces in cola/benchmark.py) end to end on smoke settings
(conf/benchmark/smoke.yaml) and the tiny model."""

import json
import os
import platform
import shutil

import pandas as pd
import pytest

from cola import onnx_export as ox
from cola.config import compose_params, load_params
from tests.conftest_bundle import cola_rows


@pytest.mark.slow
def test_benchmark_smoke_run_writes_timing_headline_run_info_and_plots(
    tiny_model_dir, tiny_variants, tiny_bundle, tmp_path
):
    from stages.benchmark import run

    compose_params(tmp_path / "params.yaml", ["benchmark=smoke"])
    params = load_params(tmp_path / "params.yaml")
    sentences, labels = cola_rows(40)
    pd.DataFrame({"sentence": sentences, "label": labels}).to_parquet(tmp_path / "test.parquet")
    # The tiny fixture has no calibration data, so no int8_static variant: add one (from the same sentences).
    onnx_dir = tmp_path / "onnx"
    shutil.copytree(tiny_variants["fp32"].parent, onnx_dir)
    reader = ox.CalibrationReader(ox.bundle_tokenizer(tiny_model_dir, 64), sentences, 8, ox.INPUT_NAMES)
    ox.quantize_static_int8(onnx_dir / ox.VARIANT_FILES["fp32"], onnx_dir / ox.VARIANT_FILES["int8_static"], reader)
    out = tmp_path / "out"

    metrics = run(tiny_model_dir, tmp_path / "test.parquet", onnx_dir, tiny_bundle, out, params)

    variants = params.benchmark.variants
    # the DVC metric keeps what a person compares; every case is in variants.json
    assert json.loads((out / "metrics.json").read_text()) == {k: metrics[k] for k in ("headline", "peak")}
    assert json.loads((out / "variants.json").read_text()) == {k: metrics[k] for k in ("variants", "cold_start_s")}
    assert set(metrics) == {"headline", "variants", "cold_start_s", "peak"}
    assert list(metrics["variants"]) == variants
    for name, result in metrics["variants"].items():
        assert set(result) == {"bs1", "bs4"}, name
        for case in result.values():
            # Timing only: quality lives in reports/export/variants.json, counts and settings in run.json.
            assert set(case) == {"p50_ms", "p95_ms", "p99_ms", "sentences_per_s", "peak_rss_mb"}, name
            assert 0 < case["p50_ms"] <= case["p95_ms"] <= case["p99_ms"], name
    # Each case ran in its own process: the torch one carries torch, the ONNX ones do not.
    assert (
        metrics["variants"]["pytorch"]["bs1"]["peak_rss_mb"]
        > metrics["variants"]["ort_int8"]["bs1"]["peak_rss_mb"] + 100
    )
    assert set(metrics["cold_start_s"]) == {"bundle", "torch_transformers"}
    assert all(seconds > 0 for seconds in metrics["cold_start_s"].values())

    # The headline: the served bundle against PyTorch and pad-to-128 at the smallest and largest batch size.
    v, head = metrics["variants"], metrics["headline"]
    assert set(head) == {"bs1", "bs4", "served_cold_start_s"}
    assert head["served_cold_start_s"] == metrics["cold_start_s"]["bundle"]
    for bs in ("bs1", "bs4"):
        served = v["bundle"][bs]["p50_ms"]
        assert head[bs] == {
            "served_p50_ms": served,
            "speedup_vs_pytorch": pytest.approx(v["pytorch"][bs]["p50_ms"] / served),
            "speedup_vs_pad128": pytest.approx(v["ort_fp32_pad128"][bs]["p50_ms"] / served),
        }

    # The int8 peak of the served (tiny: 2 layers, 32 wide, 64 ffn) model, and the served share of it.
    peak = metrics["peak"]
    assert peak["int8_macs_per_sentence"] == pytest.approx(2 * (4 * 32 * 32 + 2 * 32 * 64) * peak["mean_tokens"])
    for bs in ("bs1", "bs4"):
        assert peak[bs]["int8_gops"] > 0 and peak[bs]["peak_sentences_per_s"] > 0
        assert peak[bs]["served_sentences_per_s"] == v["bundle"][bs]["sentences_per_s"]
        assert peak[bs]["served_fraction_of_peak"] == pytest.approx(
            peak[bs]["served_sentences_per_s"] / peak[bs]["peak_sentences_per_s"]
        )

    run_info = json.loads((out / "run.json").read_text())
    assert set(run_info["peak"]["served_ops"]) <= {"MatMulIntegerToFloat", "DynamicQuantizeMatMul"}
    assert run_info["settings"] == {"threads": 1, "n_sentences": 16, "batch_sizes": [1, 4], "rounds": 1}
    assert run_info["iterations"].keys() == set(variants)
    # At least one timed call per case (how many depends on machine speed: min_iterations or the max_seconds cap).
    assert all(n >= 1 for cases in run_info["iterations"].values() for n in cases.values())
    machine = run_info["machine"]
    assert machine["cpu"] and machine["logical_cores"] == os.cpu_count()
    assert machine["python"] == platform.python_version()
    import onnxruntime
    import torch

    assert machine["onnxruntime"] == onnxruntime.__version__ and machine["torch"] == torch.__version__

    for plot in ("latency", "throughput"):
        rows = json.loads((out / "plots" / f"{plot}.json").read_text())
        assert [row["batch_size"] for row in rows] == [1, 4]
        assert all(set(row) == {"batch_size", *variants} for row in rows)


def test_headline_compares_only_the_variants_that_ran():
    from cola.benchmark import headline

    def timed(p50_by_batch: dict) -> dict:
        return {f"bs{bs}": {"p50_ms": ms} for bs, ms in p50_by_batch.items()}

    results = {"bundle": timed({1: 2.0, 8: 9.0, 32: 40.0}), "pytorch": timed({1: 10.0, 8: 30.0, 32: 100.0})}
    assert headline(results, {"bundle": 0.3, "torch_transformers": 4.0}, [1, 8, 32]) == {
        "bs1": {"served_p50_ms": 2.0, "speedup_vs_pytorch": 5.0},
        "bs32": {"served_p50_ms": 40.0, "speedup_vs_pytorch": 2.5},
        "served_cold_start_s": 0.3,
    }
    assert headline({"pytorch": timed({1: 10.0})}, {}, [1]) == {}  # no served variant, nothing to compare


def test_cpuinfo_fingerprint_keeps_model_and_relevant_vector_flags():
    from cola.benchmark import parse_cpuinfo

    x86 = (
        "processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni avx512_bf16\n"
        "processor\t: 1\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni avx512_bf16\n"
    )
    assert parse_cpuinfo(x86) == ("AMD EPYC 9R14", ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"])
    amx = "model name\t: Intel(R) Xeon(R) Platinum 8488C\nflags\t\t: avx2 avx512f amx_tile amx_int8 avx_vnni\n"
    assert parse_cpuinfo(amx)[1] == ["avx2", "avx512f", "avx_vnni", "amx_tile", "amx_int8"]
    arm = "processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd asimddp i8mm sve\nCPU part\t: 0xd40\n"
    assert parse_cpuinfo(arm) == (None, ["asimddp", "i8mm", "sve"])


def test_unknown_variant_is_refused_before_anything_runs(tmp_path):
    from stages.benchmark import run

    compose_params(tmp_path / "params.yaml", ["benchmark=smoke", "benchmark.variants=[pytorch,onnx_fp16]"])
    params, nothing = load_params(tmp_path / "params.yaml"), tmp_path / "absent"  # nothing is read before the check
    with pytest.raises(ValueError, match=r"unknown \['onnx_fp16'\]: choose from \['pytorch', 'ort_fp32'"):
        run(nothing, nothing / "test.parquet", nothing, nothing, tmp_path / "out", params)
    assert not (tmp_path / "out").exists()
