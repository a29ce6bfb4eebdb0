"""ONNX export, optimisation, int8 quantisation, parity checks and the serving bundle.

The shared core of the `export_onnx` stage, the `benchmark` stage and the tests' `tiny_bundle` fixture.
torch and transformers are imported inside the functions that need them, so the ONNX Runtime half of
this module (sessions, tokenizer, metrics) stays usable in torch-free benchmark processes.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from tokenizers import Tokenizer

from contract.bundle import CONFIG, softmax, write_manifest
from runtime.predictor import GRAPH_LEVELS

INPUT_NAMES = ["input_ids", "attention_mask", "token_type_ids"]
VARIANTS = ("fp32", "optimized", "int8", "int8_static")
VARIANT_FILES = {
    "fp32": "model.fp32.onnx",
    "optimized": "model.optimized.onnx",
    "int8": "model.int8.onnx",
    "int8_static": "model.int8_static.onnx",
}


class ExportError(RuntimeError):
    """The export cannot go on; the message says what is wrong and how to fix it."""


class ParityError(ExportError):
    """The exported ONNX model does not reproduce the PyTorch model."""


# --- export, optimise, quantise (need torch / onnxruntime.transformers) --------------------------------


def load_torch_model(model_dir: str | Path):
    """The trained classifier with eager attention: the legacy exporter then writes the plain
    MatMul/Softmax pattern that the ORT optimizer fuses into its Attention op (SDPA does not fuse)."""
    from cola.model import load_classifier

    return load_classifier(str(model_dir), attn_implementation="eager").eval()


def export_fp32(model, path: str | Path, opset: int) -> Path:
    """Legacy TorchScript exporter (dynamo=False): one self-contained file, dynamic batch and sequence axes."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A padded second row, so no "mask is all ones" shortcut can be traced into the graph as a constant.
    dummy = {
        "input_ids": torch.full((2, 8), 1000, dtype=torch.long),
        "attention_mask": torch.tensor([[1] * 8, [1] * 5 + [0] * 3]),
        "token_type_ids": torch.zeros((2, 8), dtype=torch.long),
    }
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES} | {"logits": {0: "batch"}}
    with torch.inference_mode(), warnings.catch_warnings():
        # Benign: the tracer freezes a padding-length check that is 0 for every (ids, mask) pair of equal
        # length, and an index op whose indices are never negative here. The parity gate checks the result.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        torch.onnx.export(
            model,
            (),
            str(path),
            kwargs=dummy,
            input_names=INPUT_NAMES,
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx.checker.check_model(str(path), full_check=True)
    return path


def optimize(fp32_path: str | Path, path: str | Path, num_heads: int, hidden_size: int, opt_level: int = 1) -> Path:
    """Fuse attention, LayerNorm, GELU and embeddings with onnxruntime.transformers.optimizer (model_type bert)."""
    from onnxruntime.transformers import optimizer

    model = optimizer.optimize_model(
        str(fp32_path), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=opt_level
    )
    model.save_model_to_file(str(path))
    return Path(path)


def fused_ops(path: str | Path) -> dict[str, int]:
    """Count of the fused contrib ops in a graph: proof that the optimizer did its job."""
    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        if node.domain == "com.microsoft":
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def quantize_int8(src_path: str | Path, path: str | Path, per_channel: bool = True) -> Path:
    """Dynamic int8 quantisation of the weight MatMuls (activations are quantised at run time), signed
    int8 weights: the U8S8 kernels are the fast path on AVX-512 VNNI; uint8 weights ran ~1.6x slower here.

    per_channel keeps MCC within ~0.01 of fp32. reduce_range (7-bit weights) is left off: it only avoids
    overflow on CPUs without VNNI and cost MCC here. DefaultTensorType: an optimised graph has contrib ops
    whose output types the quantizer cannot infer.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src_path),
        str(path),
        per_channel=per_channel,
        reduce_range=False,
        weight_type=QuantType.QInt8,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    return Path(path)


class CalibrationReader:
    """Feeds quantize_static batches of real sentences, tokenised like serving (padding to the longest of
    each batch), so activation ranges are those of real inputs without 128-token padding. An
    onnxruntime.quantization.CalibrationDataReader by duck typing (get_next, rewind): importing that base
    class pulls in the quantizer, which the torch-free half of this module must not need."""

    def __init__(self, tokenizer: Tokenizer, sentences: Sequence[str], batch_size: int, input_names: Sequence[str]):
        self._batches = [
            {name: array for name, array in encode(tokenizer, chunk).items() if name in input_names}
            for chunk in batches(list(sentences), batch_size)
        ]
        self._next = iter(self._batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._next, None)

    def rewind(self) -> None:
        self._next = iter(self._batches)


def quantize_static_int8(
    src_path: str | Path, path: str | Path, reader: CalibrationReader, per_channel: bool = True
) -> Path:
    """Static int8 (QDQ) of the weight MatMuls: activation scales fixed at export from calibration batches,
    so a sentence's prediction does not depend on what it is batched with (dynamic int8's does).
    uint8 activations x int8 weights: the U8S8 VNNI path (see quantize_int8). Only MatMuls with a constant
    weight are quantised: the attention-score MatMuls (activation x activation) and the embeddings stay fp32
    (quantising them cost MCC, see docs/export.md), as do the pooler and classifier (Gemm, one row per sentence).
    MinMax calibration: ORT's histogram methods (percentile, entropy) stack the calibration outputs into one array
    and fail on dynamically padded batches."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    graph = onnx.load(str(src_path), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    # The QDQ quantizer ignores MatMulConstBOnly, so the activation x activation MatMuls are named here.
    attention = [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] not in weights]
    quantize_static(
        str(src_path),
        str(path),
        reader,
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul"],
        nodes_to_exclude=attention,
        per_channel=per_channel,
        reduce_range=False,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        # fp32 MatMul outputs: ORT fuses DQ -> MatMul into MatMulIntegerToFloat (bias added in fp32)
        # instead of QLinearMatMul + DequantizeLinear + Add, and the outputs keep full precision.
        extra_options={"OpTypesToExcludeOutputQuantization": ["MatMul"]},
    )
    return Path(path)


def export_variants(
    model_dir: str | Path,
    out_dir: str | Path,
    opset: int,
    per_channel: bool = True,
    quantize_from: str = "fp32",
    calibration: CalibrationReader | None = None,
) -> dict[str, Path]:
    """fp32 export → optimised fp32; int8 quantised from the `quantize_from` graph; int8_static (QDQ) from
    the fp32 graph, only when `calibration` batches are given. Returns variant → path.

    From "fp32", ONNX Runtime fuses the quantised graph itself at load time (DynamicQuantizeMatMul);
    from "optimized", the QKV projections become one QAttention op, which ran slower on this CPU."""
    if quantize_from not in ("fp32", "optimized"):
        raise ExportError(f"export.quantize_from={quantize_from!r} in params.yaml: choose fp32 or optimized")
    out_dir = Path(out_dir)
    model = load_torch_model(model_dir)
    paths = {name: out_dir / file for name, file in VARIANT_FILES.items()}
    if calibration is None:
        del paths["int8_static"]
    export_fp32(model, paths["fp32"], opset)
    optimize(paths["fp32"], paths["optimized"], model.config.num_attention_heads, model.config.hidden_size)
    quantize_int8(paths[quantize_from], paths["int8"], per_channel=per_channel)
    if calibration is not None:
        quantize_static_int8(paths["fp32"], paths["int8_static"], calibration, per_channel)
    return paths


def preoptimize(src_path: str | Path, path: str | Path, level: str) -> Path:
    """Let ONNX Runtime optimise the graph once, offline, and save the result, so a serving process can load
    it with optimisation off (faster start). `level` must be portable: ORT warns that "all" may write
    layout transforms (NCHWc) specific to this CPU; "extended" and below write only CPU-EP fusions. Then
    fold the bias Adds that ORT leaves after the MatMulIntegerToFloat ops of a QDQ graph (see fold_int8_bias)."""
    if level not in ("basic", "extended"):
        raise ExportError(
            f"export.preoptimize={level!r} in params.yaml: choose basic or extended (portable levels), "
            f"or null to ship the variant as exported"
        )
    options = ort.SessionOptions()
    options.graph_optimization_level = GRAPH_LEVELS[level]
    options.optimized_model_filepath = str(path)
    ort.InferenceSession(str(src_path), options, providers=["CPUExecutionProvider"])
    model = onnx.load(str(path))
    if fold_int8_bias(model):
        onnx.save(model, str(path))
    return Path(path)


def fold_int8_bias(model: onnx.ModelProto) -> int:
    """Move each constant 1-D bias Add that follows a MatMulIntegerToFloat into the op's optional bias input.
    ORT's QDQ fusion leaves these Adds (30 in MiniLM, one extra pass over every activation) while its fusion
    of the dynamic int8 graph folds them; same result, fewer memory passes. Returns how many were folded."""
    graph = model.graph
    biases = {t.name for t in graph.initializer if len(t.dims) == 1}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    folded = []
    for node in graph.node:
        if node.op_type != "MatMulIntegerToFloat" or len(node.input) > 6 or node.output[0] in outputs:
            continue
        users = consumers.get(node.output[0], [])
        if len(users) != 1 or users[0].op_type != "Add":
            continue
        add = users[0]
        bias = [name for name in add.input if name != node.output[0]]
        if len(bias) != 1 or bias[0] not in biases:
            continue
        node.input.extend([""] * (6 - len(node.input)) + bias)  # inputs: A, B, scales, zero points, bias
        node.output[0] = add.output[0]
        folded.append(add)
    for add in folded:
        graph.node.remove(add)
    return len(folded)


# --- tokenizer -----------------------------------------------------------------------------------------


def bundle_tokenizer(model_dir: str | Path, max_length: int) -> Tokenizer:
    """The model's tokenizer.json with dynamic padding (to the longest in the batch) and truncation at
    max_length: the base package's file pads every input to a fixed 128 tokens."""
    tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    tokenizer.enable_truncation(max_length)
    pad_id = tokenizer.token_to_id("[PAD]")
    tokenizer.enable_padding(pad_id=pad_id if pad_id is not None else 0, pad_token="[PAD]")
    return tokenizer


def encode(tokenizer: Tokenizer, sentences: Sequence[str]) -> dict[str, np.ndarray]:
    """Model inputs for a batch, int64 as the exported graph expects."""
    encodings = tokenizer.encode_batch(list(sentences))
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }


def batches(items: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- inference and metrics -----------------------------------------------------------------------------


def make_session(path: str | Path, threads: int = 0, graph_level: str = "all") -> ort.InferenceSession:
    """A CPU session; threads=0 lets ORT use one thread per core."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = GRAPH_LEVELS[graph_level]
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_logits(session: ort.InferenceSession, inputs: dict[str, np.ndarray]) -> np.ndarray:
    names = [i.name for i in session.get_inputs()]  # a graph may drop an input its model ignores
    return session.run(["logits"], {name: inputs[name] for name in names})[0]


def compare_variants(
    model_dir: str | Path,
    variant_paths: dict[str, Path],
    sentences: Sequence[str],
    labels: Sequence[int] | np.ndarray,
    max_length: int,
    batch_size: int = 64,
    threshold: float = 0.5,
) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """Run PyTorch and every ONNX variant on the very batches the evaluate stage builds (training tokenizer,
    dynamic padding), so only the model differs. Returns per-variant test metrics under the decision rule
    (`threshold`, as the bundle will serve it) plus label agreement with PyTorch and max |Δlogit|, and every
    variant's logits ("pytorch" is the reference)."""
    import pandas as pd
    import torch

    from cola.metrics import classification_metrics, decide
    from cola.model import load_tokenizer, make_loader

    model = load_torch_model(model_dir)
    frame = pd.DataFrame({"sentence": list(sentences)})
    loader = make_loader(frame, load_tokenizer(str(model_dir)), max_length, batch_size)
    sessions = {name: make_session(path) for name, path in variant_paths.items()}
    chunks: dict[str, list] = {"pytorch": []} | {name: [] for name in sessions}
    with torch.inference_mode():
        for batch in loader:
            chunks["pytorch"].append(model(**batch).logits.float().numpy())
            inputs = {k: v.numpy().astype(np.int64) for k, v in batch.items()}
            for name, session in sessions.items():
                chunks[name].append(ort_logits(session, inputs))
    logits = {name: np.concatenate(parts) for name, parts in chunks.items()}
    reference, truth = logits["pytorch"], np.asarray(labels)
    report = {}
    for name, values in logits.items():
        report[name] = classification_metrics(truth, softmax(values), threshold)
        if name != "pytorch":
            same = decide(softmax(values), threshold) == decide(softmax(reference), threshold)
            report[name]["agreement"] = float(same.mean())
            report[name]["max_abs_logit_diff"] = float(np.abs(values - reference).max())
    return report, logits


def variant_logits(
    model_dir: str | Path, path: str | Path, sentences: Sequence[str], max_length: int, batch_size: int
) -> np.ndarray:
    """One ONNX variant's logits on the batches compare_variants builds (training tokenizer, dynamic padding)."""
    import pandas as pd

    from cola.model import load_tokenizer, make_loader

    loader = make_loader(
        pd.DataFrame({"sentence": list(sentences)}), load_tokenizer(str(model_dir)), max_length, batch_size
    )
    session = make_session(path)
    return np.concatenate(
        [ort_logits(session, {k: v.numpy().astype(np.int64) for k, v in batch.items()}) for batch in loader]
    )


def check_parity(report: dict[str, dict], tolerance: float, variant: str = "fp32") -> None:
    """The parity gate: the fp32 export must match PyTorch within `tolerance` and predict the same labels."""
    result = report[variant]
    if result["max_abs_logit_diff"] > tolerance or result["agreement"] < 1.0:
        raise ParityError(
            f"ONNX {variant} export does not match PyTorch on the test split: max |Δlogit| = "
            f"{result['max_abs_logit_diff']:.3g} (tolerance {tolerance:g}), label agreement = "
            f"{result['agreement']:.4%} (required 100%). Check the opset (export.opset) and that the model "
            f"was exported with attn_implementation='eager'; raise export.parity_tolerance only if the "
            f"difference is numerical noise."
        )


def check_served_mcc(report: dict[str, dict], served: str, max_drop: float) -> None:
    """The quality gate: the served variant's test MCC may be at most `max_drop` below fp32's (a drop equal to
    the limit passes). Writes each ONNX variant's `mcc_drop_vs_fp32` into `report` (the stage reports it)."""
    for name, result in report.items():
        if name != "pytorch":
            result["mcc_drop_vs_fp32"] = report["fp32"]["mcc"] - result["mcc"]
    drop = report[served]["mcc_drop_vs_fp32"]
    if drop > max_drop:
        raise ExportError(
            f"the served variant {served} scores test MCC {report[served]['mcc']:.4f}, {drop:.4f} below fp32 "
            f"({report['fp32']['mcc']:.4f}; allowed: export.max_mcc_drop={max_drop}). Serve another variant "
            f"(export.served_variant) or revisit its quantisation settings."
        )


# --- the bundle ----------------------------------------------------------------------------------------


def write_bundle(
    bundle_dir: str | Path,
    model_path: str | Path,
    tokenizer: Tokenizer,
    labels: Sequence[str],
    max_length: int,
    variant: str,
    params: dict,
    metrics: dict,
    preoptimize_level: str | None = None,
    decision_threshold: float = 0.5,
) -> dict:
    """Write the self-contained serving bundle described in contract/bundle.py and return its manifest.

    preoptimize_level ("basic"/"extended"): ship the graph ONNX Runtime optimised offline (see preoptimize),
    and tell the predictor (config.json `graph_optimization_level`) to load it without optimising again,
    provided its onnxruntime is the one that wrote it (`optimized_by_onnxruntime`)."""
    bundle_dir = Path(bundle_dir)
    if bundle_dir.exists():
        shutil.rmtree(bundle_dir)  # a stale file would otherwise end up in the manifest
    bundle_dir.mkdir(parents=True)
    optimization: dict = {"graph_optimization_level": "all"}  # as exported: ORT optimises at every load
    if preoptimize_level:
        preoptimize(model_path, bundle_dir / "model.onnx", preoptimize_level)
        optimization = {"graph_optimization_level": "disable", "optimized_by_onnxruntime": ort.__version__}
    else:
        shutil.copyfile(model_path, bundle_dir / "model.onnx")
    tokenizer.save(str(bundle_dir / "tokenizer.json"))
    input_names = [i.name for i in onnx.load(str(model_path), load_external_data=False).graph.input]
    config = {
        "labels": list(labels),
        "max_length": max_length,
        "variant": variant,
        "model_file": "model.onnx",
        "input_names": input_names,
        "decision_threshold": decision_threshold,
    } | optimization
    (bundle_dir / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return write_manifest(bundle_dir, params, metrics)


def model_labels(model_dir: str | Path) -> list[str]:
    """Label names in id order from the saved model's config.json (id2label)."""
    id2label = json.loads((Path(model_dir) / "config.json").read_text())["id2label"]
    return [id2label[str(i)] for i in range(len(id2label))]
