"""BundlePredictor on a real bundle: probabilities, truncation, token statistics, manifest checks."""

from __future__ import annotations

import numpy as np
import pytest

from contract.bundle import BundleError
from runtime.predictor import BundlePredictor


def test_exposes_bundle_metadata(predictor, tiny_bundle):
    assert predictor.labels == ["unacceptable", "acceptable"]
    assert predictor.version.startswith(predictor.variant + "-")
    assert predictor.max_length == 64


def test_probabilities_are_a_distribution_and_batch_independent(predictor):
    texts = ["The cat sat on the mat.", "Mat the on sat cat.", "Yes."]
    probs = predictor.predict_proba(texts)
    assert probs.shape == (3, 2) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
    one_by_one = np.vstack([predictor.predict_proba([t]) for t in texts])
    # Static int8: activation scales are fixed at export, so a sentence's answer does not depend on what it
    # is batched with (dynamic int8 quantises each call's activations with one scale: answers moved by up to 0.75)
    with_long = predictor.predict_proba(texts + ["word " * 60, "Another rather long sentence " * 5])[:3]
    np.testing.assert_allclose(probs, one_by_one, atol=1e-5)
    np.testing.assert_allclose(with_long, one_by_one, atol=1e-5)


def test_long_input_is_truncated_but_counted(predictor):
    long_text = "word " * 300
    encoded = predictor.encode([long_text, "short"])
    assert encoded.tokens[0] == 302  # 300 words + [CLS] + [SEP], before truncation
    assert [len(row) for row in encoded.ids] == [predictor.max_length, 3]  # what the model sees
    sep = predictor.tokenizer.token_to_id("[SEP]")
    assert encoded.ids[0][-1] == sep  # truncation keeps the closing special token
    assert encoded.cost == predictor.max_length + 3
    assert predictor.predict_proba([long_text]).shape == (1, 2)


def test_length_groups_bound_padding_and_keep_the_input_order(tiny_bundle):
    texts = ["Yes.", "word " * 40, "The cat sat on the mat.", "word " * 20, "No.", "The dog barked at the moon."]
    one_call = BundlePredictor(tiny_bundle, max_batch_tokens=10**9)
    grouped = BundlePredictor(tiny_bundle, max_batch_tokens=64)
    lengths = [len(row) for row in grouped.encode(texts).ids]
    groups = grouped.length_groups(lengths)
    assert sorted(i for g in groups for i in g) == list(range(len(texts)))
    assert all(len(g) * max(lengths[i] for i in g) <= 64 or len(g) == 1 for g in groups)
    assert len(groups) > 1 and len(one_call.length_groups(lengths)) == 1
    np.testing.assert_allclose(grouped.predict_proba(texts), one_call.predict_proba(texts), atol=2e-3)
    one_by_one = np.vstack([one_call.predict_proba([t]) for t in texts])
    np.testing.assert_allclose(grouped.predict_proba(texts), one_by_one, atol=2e-3)


def test_unknown_token_rate(predictor):
    tokens, unk_rates = predictor.token_stats(["plain english words", "☃ ☃ words"])
    assert unk_rates[0] == 0
    assert unk_rates[1] == pytest.approx(2 / 3)
    assert tokens == [5, 5]


def test_empty_list(predictor):
    assert predictor.run([]).probs.shape == (0, 2)


def test_thread_count_is_configurable(tiny_bundle):
    predictor = BundlePredictor(tiny_bundle, threads=2)
    assert predictor.session.get_session_options().intra_op_num_threads == 2


def test_tampered_bundle_is_refused(tampered_bundle):
    with pytest.raises(BundleError, match="tokenizer.json fails its sha256 check"):
        BundlePredictor(tampered_bundle)


def bundle_with_threshold(tiny_bundle, directory, threshold) -> BundlePredictor:
    """A copy of the tiny bundle whose config.json carries `decision_threshold` (manifest rewritten)."""
    import json
    import shutil

    from contract.bundle import CONFIG, write_manifest

    bundle = shutil.copytree(tiny_bundle, directory)
    config = json.loads((bundle / CONFIG).read_text()) | {"decision_threshold": threshold}
    (bundle / CONFIG).write_text(json.dumps(config))
    write_manifest(bundle, {}, {})
    return BundlePredictor(bundle)


def test_the_served_label_follows_the_bundles_decision_threshold(tiny_bundle, tmp_path):
    texts = ["The cat sat on the mat.", "Mat the on sat cat.", "Yes.", "him saw i", "She left early."]
    base = BundlePredictor(tiny_bundle)
    probs = base.predict_proba(texts)
    p = probs[:, base.positive]
    assert base.decide(probs).tolist() == probs.argmax(axis=1).tolist()  # no threshold in the bundle: argmax
    middle = float(np.sort(p)[len(p) // 2])  # half the rows on each side of it
    tuned = bundle_with_threshold(tiny_bundle, tmp_path / "tuned", middle)
    assert tuned.decide(probs).tolist() == [int(x >= middle) for x in p]
    assert np.array_equal(tuned.predict_proba(texts), probs)  # probabilities unchanged; only the rule moved


@pytest.mark.parametrize("threshold", [0.0, 1.5, "high", None])
def test_a_bundle_with_an_invalid_threshold_is_refused(tiny_bundle, tmp_path, threshold):
    with pytest.raises(BundleError, match="decision_threshold in \\(0, 1\\)"):
        bundle_with_threshold(tiny_bundle, tmp_path / "bad", threshold)
