"""ONNX export on a tiny random BERT: parity with PyTorch, dynamic axes, fusion, quantisation, the gate."""

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest

from cola import model_card
from cola import onnx_export as ox
from cola.config import compose_params, load_params
from contract.bundle import MODEL_CARD, MODEL_CARD_MD, BundleError, softmax, verify_manifest, write_manifest
from runtime.predictor import BundlePredictor
from tests.conftest_bundle import FIXTURE_COLA, TINY_MAX_LENGTH, card_sources, cola_rows


def count(path, op):
    return sum(node.op_type == op for node in onnx.load(str(path)).graph.node)


def test_fp32_export_matches_pytorch_and_quantised_variants_stay_close(tiny_model_dir, tiny_variants):
    sentences, labels = cola_rows(24)
    report, logits = ox.compare_variants(
        tiny_model_dir, tiny_variants, sentences, labels, TINY_MAX_LENGTH, batch_size=8
    )

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

    # From the fp32 graph (the default): Q, K, V, attention output and two feed-forward MatMuls per layer,
    # plus the pooler and the classifier.
    assert count(tiny_variants["int8"], "MatMulInteger") == 6 * layers + 2
    assert tiny_variants["int8"].stat().st_size < tiny_variants["fp32"].stat().st_size / 2
    # From the optimised graph, the fused attention becomes QAttention.
    from_optimized = ox.quantize_int8(tiny_variants["optimized"], tmp_path / "int8.onnx")
    assert ox.fused_ops(from_optimized)["QAttention"] == layers


def test_static_int8_quantises_only_weight_matmuls_and_does_not_depend_on_the_batch(
    tiny_model_dir, tiny_variants, tiny_static
):
    layers = 2
    # Q, K, V, attention output and the two feed-forward MatMuls per layer get an int8 weight (DequantizeLinear);
    # the two attention-score MatMuls per layer stay fp32, as do the pooler and classifier (Gemm).
    graph = onnx.load(str(tiny_static)).graph
    weights = {t.name for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    matmuls = [n for n in graph.node if n.op_type == "MatMul"]
    quantised = [n for n in matmuls if n.input[1] in producers and producers[n.input[1]].op_type == "DequantizeLinear"]
    assert len(quantised) == 6 * layers and len(matmuls) - len(quantised) == 2 * layers
    assert not any(n.input[1] in weights for n in matmuls)  # every weight is stored int8

    sentences, labels = cola_rows(24)
    one = ox.variant_logits(tiny_model_dir, tiny_static, sentences, TINY_MAX_LENGTH, batch_size=1)
    batched = ox.variant_logits(tiny_model_dir, tiny_static, sentences, TINY_MAX_LENGTH, batch_size=8)
    np.testing.assert_allclose(one, batched, atol=1e-5)  # fixed activation scales: batch-independent
    fp32 = ox.variant_logits(tiny_model_dir, tiny_variants["fp32"], sentences, TINY_MAX_LENGTH, batch_size=8)
    assert np.abs(one - fp32).max() < 0.05


def test_preoptimised_bundle_loads_without_reoptimising_and_serves_the_same(
    tiny_model_dir, tiny_static, tiny_bundle, tmp_path
):
    sentences, _ = cola_rows(24)
    bundle = tmp_path / "bundle"
    ox.write_bundle(
        bundle,
        tiny_static,
        ox.bundle_tokenizer(tiny_model_dir, TINY_MAX_LENGTH),
        ox.model_labels(tiny_model_dir),
        TINY_MAX_LENGTH,
        "int8_static",
        {},
        {},
        preoptimize_level="extended",
    )
    model_card.write(bundle, json.loads((tiny_bundle / MODEL_CARD).read_text()), {}, {})  # a bundle has a card
    config = json.loads((bundle / "config.json").read_text())
    assert config["graph_optimization_level"] == "disable"
    assert config["optimized_by_onnxruntime"] == ort.__version__
    # ORT's QDQ fusion plus the folded biases: no Add is left after a MatMulIntegerToFloat (the feed-forward
    # input's bias goes into ORT's BiasGelu instead).
    graph = onnx.load(str(bundle / "model.onnx")).graph
    fused = [n for n in graph.node if n.op_type == "MatMulIntegerToFloat"]
    assert sum(len(n.input) == 7 and n.input[6] != "" for n in fused) == 5 * 2  # Q, K, V, both output denses x 2
    biases = {t.name for t in graph.initializer if len(t.dims) == 1}
    outputs = {n.output[0] for n in fused}
    assert not [n for n in graph.node if n.op_type == "Add" and set(n.input) & outputs and set(n.input) & biases]

    expected = softmax(ox.variant_logits(tiny_model_dir, tiny_static, sentences, TINY_MAX_LENGTH, batch_size=1))
    served = np.concatenate([BundlePredictor(bundle).predict_proba([s]) for s in sentences])
    np.testing.assert_allclose(served, expected, atol=1e-5)

    # A bundle optimised by another onnxruntime is optimised again at load (and still serves the same);
    # an unknown level is refused with the file named.
    for level, version in (("disable", "0.0.1"), ("fast", ort.__version__)):
        copy = tmp_path / f"copy_{level}"
        shutil.copytree(bundle, copy)
        (copy / "config.json").write_text(
            json.dumps(config | {"graph_optimization_level": level, "optimized_by_onnxruntime": version})
        )
        write_manifest(copy, {}, {})
        if level == "fast":
            with pytest.raises(BundleError, match=r"config.json: graph_optimization_level 'fast'"):
                BundlePredictor(copy)
        else:
            np.testing.assert_allclose(BundlePredictor(copy).predict_proba(sentences[:1]), served[:1], atol=1e-5)


def test_preoptimise_refuses_a_non_portable_level(tiny_variants, tmp_path):
    with pytest.raises(ox.ExportError, match="export.preoptimize='all'"):
        ox.preoptimize(tiny_variants["int8"], tmp_path / "model.onnx", "all")


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


def test_parity_gate_boundaries_on_a_real_report(tiny_model_dir, tiny_variants):
    """The gate passes at a tolerance equal to the measured |Δlogit| and fails just below it (int8 differs from
    PyTorch by ~1e-4 on the tiny model, so its report is a real one with a non-zero difference)."""
    sentences, labels = cola_rows(24)
    report, _ = ox.compare_variants(tiny_model_dir, tiny_variants, sentences, labels, TINY_MAX_LENGTH, batch_size=8)
    measured = report["int8"]["max_abs_logit_diff"]
    assert measured > 0 and report["int8"]["agreement"] == 1.0

    ox.check_parity(report, tolerance=measured, variant="int8")  # equal: passes
    with pytest.raises(ox.ParityError, match=r"tolerance"):
        ox.check_parity(report, tolerance=float(np.nextafter(measured, 0)), variant="int8")


def test_parity_gate_fails_on_one_flipped_label_however_loose_the_tolerance(tiny_model_dir, tiny_variants, tmp_path):
    """Agreement is a gate of its own: a model that flips labels fails even when its logits are within tolerance."""
    sentences, labels = cola_rows(24)
    report, _ = ox.compare_variants(tiny_model_dir, tiny_variants, sentences, labels, TINY_MAX_LENGTH, batch_size=8)
    fp32 = report["fp32"]
    fp32["agreement"] = 1 - 1 / len(sentences)  # one sentence of 24 labelled differently
    with pytest.raises(ox.ParityError, match=r"label agreement = 95\.8333% \(required 100%\)"):
        ox.check_parity(report, tolerance=1e9)


def test_mcc_gate_passes_at_the_limit_and_fails_just_past_it():
    # The gate's arithmetic on a report of the shape compare_variants returns (the export stage test below checks
    # that the stage calls it with the served variant; a real tiny model scores MCC 0 for every variant).
    def report(served_mcc: float) -> dict[str, dict]:
        return {"pytorch": {"mcc": 0.30}, "fp32": {"mcc": 0.30}, "int8_static": {"mcc": served_mcc}}

    drop = 0.30 - 0.28
    ox.check_served_mcc(report(0.28), "int8_static", max_drop=drop)  # a drop equal to the limit passes
    with pytest.raises(ox.ExportError, match=r"int8_static scores test MCC 0\.2800, 0\.0200 below fp32"):
        ox.check_served_mcc(report(0.28), "int8_static", max_drop=float(np.nextafter(drop, 0)))
    with pytest.raises(ox.ExportError, match=r"export\.max_mcc_drop=0\.01"):
        ox.check_served_mcc(report(0.28), "int8_static", max_drop=0.01)  # a loss is a positive drop
    ox.check_served_mcc(report(0.35), "int8_static", max_drop=0.0)  # a gain passes a zero limit
    checked = report(0.28)
    ox.check_served_mcc(checked, "fp32", max_drop=0.0)  # the gate judges the variant it is told is served
    assert (
        checked["int8_static"]["mcc_drop_vs_fp32"] == pytest.approx(0.02)
        and "mcc_drop_vs_fp32" not in checked["pytorch"]
    )


def run_export_stage(model_dir, tmp_path, max_mcc_drop: float) -> dict:
    """The export stage on `model_dir`, with the first 40 fixture rows as the test split, the fixture's training
    sentences for calibration and everything written under tmp_path (onnx/, bundle/, metrics.json, variants.json).
    `max_mcc_drop` is set after the params are checked, so a test can give a limit the schema refuses (< 0)."""
    from cola.data import read_tsv
    from stages.export_onnx import run

    sentences, labels = cola_rows(40)
    pd.DataFrame({"sentence": sentences, "label": labels}).to_parquet(tmp_path / "test.parquet")
    read_tsv(FIXTURE_COLA / "train.tsv").to_parquet(tmp_path / "train.parquet")
    compose_params(tmp_path / "params.yaml")
    params = load_params(tmp_path / "params.yaml")
    params.export.max_mcc_drop = max_mcc_drop
    return run(model_dir, tmp_path / "test.parquet", tmp_path / "onnx", tmp_path / "bundle", tmp_path / "metrics.json",
               params, tmp_path / "train.parquet", card_sources(tmp_path / "card_sources"))  # fmt: skip


@pytest.mark.slow
def test_export_stage_writes_variants_bundle_and_metrics(tiny_model_dir, tmp_path):
    metrics = run_export_stage(tiny_model_dir, tmp_path, max_mcc_drop=1.0)  # a random model's MCC is noise

    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == sorted(ox.VARIANT_FILES.values())
    manifest = verify_manifest(tmp_path / "bundle")
    assert manifest["params"]["export"]["served_variant"] == "int8_static"
    assert manifest["metrics"]["test"]["n"] == 40
    config = json.loads((tmp_path / "bundle" / "config.json").read_text())
    assert config["labels"] == ["unacceptable", "acceptable"] and config["variant"] == "int8_static"
    assert config["graph_optimization_level"] == "disable"  # export.preoptimize: extended
    assert json.loads((tmp_path / "metrics.json").read_text()) == json.loads(
        json.dumps({"parity": metrics["parity"], "served": metrics["served"]})
    )  # the DVC metric: what a person compares
    assert json.loads((tmp_path / "variants.json").read_text()) == json.loads(json.dumps(metrics["variants"]))
    assert metrics["parity"]["fp32_label_agreement"] == 1.0
    assert metrics["variants"]["int8"]["size_mb"] < metrics["variants"]["fp32"]["size_mb"]

    # the model card: in the bundle (both forms, both in the manifest), its copy in the reports, its figures
    # the export's own
    card = json.loads((tmp_path / "bundle" / MODEL_CARD).read_text())
    assert {MODEL_CARD, MODEL_CARD_MD} <= set(manifest["files"])
    assert json.loads((tmp_path / "model_card.json").read_text()) == card
    assert card["data"]["raw_md5"] == "0123456789abcdef0123456789abcdef.dir" and card["evaluation"]["n"] == 40
    assert card["evaluation"]["metrics"]["mcc"]["value"] == pytest.approx(metrics["served"]["mcc"], abs=1e-4)
    low, high = (card["evaluation"]["metrics"]["accuracy"][k] for k in ("low", "high"))
    assert low <= metrics["served"]["accuracy"] <= high and low < high
    assert card["served"]["variant"] == "int8_static" and card["decision_threshold"]["value"] == config.get(
        "decision_threshold", 0.5
    )
    assert set(card["behaviour"]) == {"minimal_pairs", "shuffled_lower", "period_same_label",
                                      "period_median_change", "whitespace_change"}  # fmt: skip
    assert card["base_model"]["licence"] == "Apache-2.0" and len(card["limits"]) == 4
    markdown = (tmp_path / "bundle" / MODEL_CARD_MD).read_text()
    assert "| mcc | " in markdown and card["data"]["raw_md5"] in markdown


def test_export_stage_names_a_missing_card_input_before_any_work(tiny_model_dir, tmp_path):
    sources = card_sources(tmp_path / "card_sources")
    sources.prepared_summary.unlink()
    from stages.export_onnx import run

    compose_params(tmp_path / "params.yaml")
    params = load_params(tmp_path / "params.yaml")
    with pytest.raises(model_card.ModelCardError, match=r"summary.json, written by `dvc repro prepare`"):
        run(tiny_model_dir, tmp_path / "absent.parquet", tmp_path / "onnx", tmp_path / "bundle",
            tmp_path / "metrics.json", params, card_sources=sources)  # fmt: skip
    assert not (tmp_path / "onnx").exists()


@pytest.mark.parametrize("damage", ["delete", "edit"])
def test_a_bundle_whose_card_is_missing_or_altered_fails_verification(tiny_bundle, tmp_path, damage):
    bundle = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    verify_manifest(bundle)
    card = bundle / MODEL_CARD
    if damage == "delete":
        card.unlink()
        expected = r"model_card.json is listed in the manifest but missing"
    else:
        card.write_text(card.read_text().replace('"mcc"', '"MCC"'))
        expected = r"model_card.json fails its sha256 check"
    with pytest.raises(BundleError, match=expected):
        verify_manifest(bundle)


@pytest.mark.slow
def test_export_stage_refuses_a_served_variant_that_loses_too_much_mcc(tiny_model_dir, tmp_path):
    with pytest.raises(
        ox.ExportError, match=r"the served variant int8_static scores test MCC .* export.max_mcc_drop=-1.0"
    ):
        # a random tiny model scores MCC 0 with every variant: only a negative limit makes the gate fire, and the
        # message must name the served variant (the stage passes it, not fp32)
        run_export_stage(tiny_model_dir, tmp_path, max_mcc_drop=-1.0)
    assert not (tmp_path / "bundle").exists()  # the gate fires before a bundle is written


def test_a_mean_pooling_model_with_a_tuned_threshold_exports_and_serves_its_rule(tiny_model_dir, tmp_path):
    """The export stage on the other head: fp32 parity holds for mean pooling, and the bundle serves the
    threshold the train stage stored in the model's config.json (metrics are scored under that rule)."""
    import torch

    from cola.metrics import decide
    from cola.model import load_classifier, load_tokenizer

    torch.manual_seed(2)
    model = load_classifier(str(tiny_model_dir), pooling="mean").eval()
    model.config.decision_threshold = 0.47
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    load_tokenizer(str(tiny_model_dir)).save_pretrained(model_dir)
    metrics = run_export_stage(model_dir, tmp_path, max_mcc_drop=1.0)

    assert metrics["parity"]["fp32_label_agreement"] == 1.0
    assert metrics["variants"]["fp32"]["threshold"] == 0.47
    predictor = BundlePredictor(tmp_path / "bundle")
    assert predictor.threshold == 0.47
    probs = predictor.predict_proba(cola_rows(40)[0])
    assert predictor.decide(probs).tolist() == decide(probs, 0.47).tolist()
