"""cola.int8_peak: the one-node int8 matmul graphs compute what the served graph's ops compute, and the
peak is only defined for a model that runs int8 matmuls."""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from cola import int8_peak


def initializer(model, name):
    return numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name))


@pytest.mark.parametrize("op", int8_peak.INT8_MATMUL_OPS)
def test_microbenchmark_graph_computes_the_int8_matmul(op):
    model = int8_peak.matmul_model(op, 48, 80)
    weight = initializer(model, "B").astype(np.int64)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    if op == "MatMulIntegerToFloat":
        a = rng.integers(0, 256, (7, 48), dtype=np.uint8)
        expected = (a.astype(np.int64) - 128) @ weight * 0.05 * 0.01
    else:  # quantises the fp32 activations itself: close to the fp32 product, not equal
        a = rng.standard_normal((7, 48), dtype=np.float32)
        expected = a @ (weight * 0.01)
    result = session.run(None, {"A": a})[0]
    assert result.shape == (7, 80)
    np.testing.assert_allclose(
        result, expected, atol=1e-3 if op == "MatMulIntegerToFloat" else 0.05 * np.abs(expected).max()
    )


def test_served_ops_are_found_and_an_fp32_model_has_no_int8_peak(tiny_variants):
    assert set(int8_peak.served_int8_ops(tiny_variants["int8"])) <= set(int8_peak.INT8_MATMUL_OPS)
    with pytest.raises(ValueError, match="not an int8 model"):
        int8_peak.served_int8_ops(tiny_variants["fp32"])


def test_peak_counts_the_encoder_macs_and_reports_each_batch_size(tiny_variants):
    peak = int8_peak.int8_peak(
        tiny_variants["int8"], hidden=32, ffn=64, layers=2, mean_tokens=10.0, batch_sizes=[1, 4], seconds=0.0
    )
    assert peak["int8_macs_per_sentence"] == 2 * (4 * 32 * 32 + 2 * 32 * 64) * 10
    assert peak["fp32_attention_macs_per_sentence"] == 2 * 2 * 10**2 * 32
    assert [peak["bs1"]["m_rows"], peak["bs4"]["m_rows"]] == [10, 40]
    for bs in ("bs1", "bs4"):
        best = peak[bs]["ops"][peak[bs]["peak_op"]]
        assert peak[bs]["peak_sentences_per_s"] == max(o["sentences_per_s"] for o in peak[bs]["ops"].values())
        assert peak[bs]["int8_gops"] == best["gops"] > 0
