"""The physical limit of the served int8 model on this CPU: ONNX Runtime's own int8 matmul, timed alone.

`int8_peak` finds which int8 matmul ops the served graph runs once ONNX Runtime has optimised it
(MatMulIntegerToFloat for the static variant; DynamicQuantizeMatMul + MatMulIntegerToFloat for the dynamic one),
builds a one-node graph of each at the model's weight shapes (hidden x hidden for Q, K, V and the attention
output; hidden x ffn and ffn x hidden for the feed-forward block) with M = batch x mean tokens per sentence rows,
and times it on the benchmark's thread count (1 by default). The sum over a layer's six matmuls x layers is the
time a sentence needs at the kernel's own speed, with no padding, no tokenisation, no attention, LayerNorm or
GELU: an upper bound on sentences/s, against which the served path's throughput is reported as a fraction.

torch-free: onnx, onnxruntime and numpy only.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

# The ops ORT's CPU provider fuses quantised MatMuls into; both run the same MLAS u8s8 GEMM underneath.
INT8_MATMUL_OPS = ("MatMulIntegerToFloat", "DynamicQuantizeMatMul")


def served_int8_ops(model_path: str | Path) -> dict[str, int]:
    """Count of each INT8_MATMUL_OPS op in the graph as ONNX Runtime runs it (level "all", as served)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    with tempfile.TemporaryDirectory() as tmp:
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        ops = Counter(node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node)
    found = {op: ops[op] for op in INT8_MATMUL_OPS if ops[op]}
    if not found:
        raise ValueError(
            f"{model_path} runs none of {INT8_MATMUL_OPS} after ONNX Runtime's optimisation: "
            f"it is not an int8 model, so it has no int8 peak to compare with"
        )
    return found


def matmul_model(op: str, k: int, n: int) -> onnx.ModelProto:
    """One `op` node, activations [M, k] (M dynamic) times a constant int8 [k, n] weight with per-channel
    scales and a bias, as in the served graph."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.integers(-127, 128, (k, n), dtype=np.int8), "B")
    b_scale = numpy_helper.from_array(np.full(n, 0.01, np.float32), "b_scale")
    bias = numpy_helper.from_array(np.zeros(n, np.float32), "bias")
    if op == "MatMulIntegerToFloat":  # uint8 activations quantised beforehand (static scale or a shared quantiser)
        a_type = TensorProto.UINT8
        initializers = [
            weight,
            numpy_helper.from_array(np.array(0.05, np.float32), "a_scale"),
            b_scale,
            numpy_helper.from_array(np.array(128, np.uint8), "a_zero_point"),
            bias,
        ]
        inputs = ["A", "B", "a_scale", "b_scale", "a_zero_point", "", "bias"]
    elif op == "DynamicQuantizeMatMul":  # fp32 activations, quantised inside the op on every call
        a_type = TensorProto.FLOAT
        initializers = [weight, b_scale, bias]
        inputs = ["A", "B", "b_scale", "", "bias"]
    else:
        raise ValueError(f"no microbenchmark for {op!r}: choose from {INT8_MATMUL_OPS}")
    node = helper.make_node(op, inputs, ["Y"], domain="com.microsoft")
    graph = helper.make_graph(
        [node],
        op,
        [helper.make_tensor_value_info("A", a_type, ["M", k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["M", n])],
        initializers,
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )


def time_matmul(op: str, m: int, k: int, n: int, seconds: float, threads: int = 1) -> float:
    """Median seconds per call of `op` on [m, k] activations, after a warm-up."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(
        matmul_model(op, k, n).SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    rng = np.random.default_rng(1)
    a = (
        rng.integers(0, 256, (m, k), dtype=np.uint8)
        if op == "MatMulIntegerToFloat"
        else rng.standard_normal((m, k), dtype=np.float32)
    )
    for _ in range(10):
        session.run(None, {"A": a})
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < 20 or time.perf_counter() - started < seconds:
        t0 = time.perf_counter()
        session.run(None, {"A": a})
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def int8_peak(
    model_path: str | Path,
    hidden: int,
    ffn: int,
    layers: int,
    mean_tokens: float,
    batch_sizes: list[int],
    seconds: float,
    threads: int = 1,
) -> dict:
    """Per batch size: the int8 GOPS of each served op at the model's shapes and the sentences/s that the
    fastest of them implies (the peak), for sentences of `mean_tokens` tokens. `int8_macs_per_sentence`
    counts the weight matmuls of the encoder (4 hidden x hidden + 2 hidden x ffn per token and layer);
    `fp32_attention_macs_per_sentence` the attention scores and their weighted sum, which stay fp32."""
    shapes = [(hidden, hidden)] * 4 + [(hidden, ffn), (ffn, hidden)]  # Q, K, V, attention output, FFN in, out
    macs_per_token = layers * sum(k * n for k, n in shapes)
    ops = served_int8_ops(model_path)
    out: dict = {
        "served_ops": ops,
        "mean_tokens": mean_tokens,
        "int8_macs_per_sentence": macs_per_token * mean_tokens,
        "fp32_attention_macs_per_sentence": layers * 2 * mean_tokens**2 * hidden,
    }
    for bs in batch_sizes:
        m = max(1, round(bs * mean_tokens))
        per_op: dict[str, dict] = {}
        for op in ops:
            unique = {shape: time_matmul(op, m, *shape, seconds, threads) for shape in set(shapes)}
            layer_s = sum(unique[shape] for shape in shapes)
            per_op[op] = {
                "gops": 2 * m * sum(k * n for k, n in shapes) / layer_s / 1e9,
                "gops_by_shape": {f"{k}x{n}": 2 * m * k * n / s / 1e9 for (k, n), s in unique.items()},
                "sentences_per_s": bs / (layers * layer_s),
            }
        best = max(per_op, key=lambda op: per_op[op]["sentences_per_s"])
        out[f"bs{bs}"] = {
            "m_rows": m,
            "peak_op": best,
            "peak_sentences_per_s": per_op[best]["sentences_per_s"],
            "int8_gops": per_op[best]["gops"],
            "ops": per_op,
        }
    return out
