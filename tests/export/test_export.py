"""ONNX export on a tiny random BERT: parity with PyTorch, dynamic axes, fusion, quantisation, the gate."""

import json

import numpy as np
import onnx
import pandas as pd
import pytest

from app.bundle import verify_manifest
from cola import onnx_export as ox
from tests.conftest_bundle import TINY_MAX_LENGTH, cola_rows


def test_fp32_export_matches_pytorch_and_quantised_variants_stay_close(tiny_model_dir, tiny_variants):
    sentences, labels = cola_rows(24)
    report, logits = ox.compare_variants(tiny_model_dir, tiny_variants, sentences, labels, TINY_MAX_LENGTH, batch_size=8)

    assert report["fp32"]["max_abs_logit_diff"] < 1e-5
    assert report["optimized"]["max_abs_logit_diff"] < 1e-4
    assert report["fp32"]["agreement"] == 1.0
    assert logits["int8"].shape == (24, 2)
    assert report["int8"]["max_abs_logit_diff"] < 0.05  # int8 is close, not equal
    ox.check_parity(report, tolerance=1e-4)  # does not raise


def test_export_has_dynamic_batch_and_sequence_axes(tiny_variants):
    graph = onnx.load(str(tiny_variants["fp32"])).graph
    assert [i.name for i in graph.input] == ox.INPUT_NAMES
    for tensor in graph.input:
        assert [d.dim_param for d in tensor.type.tensor_type.shape.dim] == ["batch", "sequence"]

    session = ox.make_session(tiny_variants["int8"])
    for shape in [(1, 3), (5, 40)]:
        inputs = {name: np.ones(shape, dtype=np.int64) for name in ox.INPUT_NAMES}
        assert ox.ort_logits(session, inputs).shape == (shape[0], 2)


def test_optimizer_fuses_attention_and_int8_quantises_the_weight_matmuls(tiny_variants, tmp_path):
    layers = 2
    assert ox.fused_ops(tiny_variants["fp32"]) == {}
    assert ox.fused_ops(tiny_variants["optimized"])["Attention"] == layers

    def count(path, op):
        return sum(node.op_type == op for node in onnx.load(str(path)).graph.node)

    # From the fp32 graph (the default): Q, K, V, attention output and two feed-forward MatMuls per layer,
    # plus the pooler and the classifier.
    assert count(tiny_variants["int8"], "MatMulInteger") == 6 * layers + 2
    assert tiny_variants["int8"].stat().st_size < tiny_variants["fp32"].stat().st_size / 2
    # From the optimised graph, the fused attention becomes QAttention.
    from_optimized = ox.quantize_int8(tiny_variants["optimized"], tmp_path / "int8.onnx")
    assert ox.fused_ops(from_optimized)["QAttention"] == layers


def test_parity_gate_fails_with_numbers_when_the_onnx_model_differs(tiny_model_dir, tiny_variants, tmp_path):
    model = onnx.load(str(tiny_variants["fp32"]))
    bias = next(t for t in model.graph.initializer if t.name == "classifier.bias")
    bias.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(bias) + np.float32([0.5, -0.5]), bias.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))

    sentences, labels = cola_rows(8)
    report, _ = ox.compare_variants(tiny_model_dir, {"fp32": broken}, sentences, labels, TINY_MAX_LENGTH)
    with pytest.raises(ox.ParityError, match=r"max \|Δlogit\| = 0\.5 \(tolerance 0\.0001\)"):
        ox.check_parity(report, tolerance=1e-4)


@pytest.mark.slow
def test_export_stage_writes_variants_bundle_and_metrics(tiny_model_dir, tmp_path):
    from stages.export_onnx import run

    sentences, labels = cola_rows(40)
    test_data = tmp_path / "test.parquet"
    pd.DataFrame({"sentence": sentences, "label": labels}).to_parquet(test_data)

    metrics = run(tiny_model_dir, test_data, tmp_path / "onnx", tmp_path / "bundle", tmp_path / "metrics.json")

    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == sorted(ox.VARIANT_FILES.values())
    manifest = verify_manifest(tmp_path / "bundle")
    assert manifest["params"]["export"]["served_variant"] == "int8"
    assert manifest["metrics"]["test"]["n"] == 40
    config = json.loads((tmp_path / "bundle" / "config.json").read_text())
    assert config["labels"] == ["unacceptable", "acceptable"] and config["variant"] == "int8"
    assert json.loads((tmp_path / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert metrics["parity"]["fp32_label_agreement"] == 1.0
    assert metrics["variants"]["int8"]["size_mb"] < metrics["variants"]["fp32"]["size_mb"]
