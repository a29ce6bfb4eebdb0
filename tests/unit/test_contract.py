"""The serving contract (contract/): training and serving count tokens identically (that it stays torch-free is an
import-linter contract, .importlinter).

The reference the drift monitor compares live traffic with (data/reference/stats.json, cola.data.reference_stats
on the training model's transformers tokenizer) and the live log lines (BundlePredictor on the bundle's
tokenizer.json) must agree on every input, or production raises drift alerts about the counters."""

from __future__ import annotations

import pandas as pd
import pytest

from contract.features import count_tokens, token_stats, upper_ratio
from contract.logs import MONITOR_FIELDS, PREDICTION_FIELDS, TEXT_FIELD
from tests.conftest_bundle import TINY_MAX_LENGTH, cola_rows

# Beyond the fixture's sentences: inputs over the bundle's max_length (64) and over the tokenizer.json's own
# truncation (128), and characters the vocabulary does not have, so truncation and unknown counting are exercised.
EXTRA = [
    "The cat that the dog that the man owned chased sat on the mat. " * 6,  # ~90 tokens
    "a very long sentence " * 40,  # 162 tokens
    "Emoji 😀 are not in the vocabulary 🙂.",
    "漢字 and ☃ snowmen",
    "😀",
    "[UNK] typed literally",
]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    sentences, _ = cola_rows(10_000)  # the whole test split of the fixture
    return sentences + EXTRA


def test_training_and_serving_token_stats_are_identical(tiny_model_dir, tiny_bundle, texts):
    from transformers import AutoTokenizer

    from cola.data import reference_stats
    from runtime.predictor import BundlePredictor

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    frame = pd.DataFrame({"sentence": texts, "label": 0})
    stats = reference_stats(frame, frame, tokenizer, "tiny")
    training = stats["token_length"]["values"], stats["unk_rate"]["values"]

    # What reference_stats counted before contract/ (transformers' own encoding), so the shared function is
    # checked against an independent count too.
    encoded = tokenizer(texts, truncation=False, return_special_tokens_mask=True)
    by_transformers = (
        [len(ids) for ids in encoded["input_ids"]],
        [
            ids.count(tokenizer.unk_token_id) / max(len(mask) - sum(mask), 1)
            for ids, mask in zip(encoded["input_ids"], encoded["special_tokens_mask"], strict=True)
        ],
    )
    predictor = BundlePredictor(tiny_bundle)
    serving = predictor.token_stats(texts)

    assert training == by_transformers == serving
    tokens, unk_rates = serving
    assert len(tokens) == len(texts) > 400
    assert max(tokens) > 128 and sum(n > TINY_MAX_LENGTH for n in tokens) >= 2  # counted before truncation
    assert sum(rate > 0 for rate in unk_rates) >= 4  # emoji, CJK, snowman
    assert max(len(row) for row in predictor.encode(texts).ids) == TINY_MAX_LENGTH  # the model still gets 64


def test_token_stats_leaves_the_callers_tokenizer_alone(tiny_bundle):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tiny_bundle / "tokenizer.json"))
    settings = (tokenizer.truncation, tokenizer.padding)
    tokens, _ = token_stats(tokenizer, ["word " * 100])
    assert tokens == [102] and (tokenizer.truncation, tokenizer.padding) == settings
    assert settings[0]["max_length"] == TINY_MAX_LENGTH


def test_count_tokens():
    assert count_tokens([101, 100, 7, 8, 102], [1, 0, 0, 0, 1], unk_id=100) == (5, 1 / 3)
    assert count_tokens([101, 102], [1, 1], unk_id=100) == (2, 0.0)  # nothing but special tokens
    assert count_tokens([101, 100, 102], [1, 0, 1], unk_id=None) == (3, 0.0)


def test_upper_ratio():
    assert upper_ratio("The CAT") == pytest.approx(4 / 6)
    assert upper_ratio("123 !") == 0.0


def test_log_fields():
    assert set(MONITOR_FIELDS) <= set(PREDICTION_FIELDS)
    assert TEXT_FIELD not in PREDICTION_FIELDS  # optional, off by default
    assert len(set(PREDICTION_FIELDS)) == len(PREDICTION_FIELDS)
