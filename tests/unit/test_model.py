"""Model tier: dynamic padding, truncation, the LightningModule learning and training with dropout on."""

import lightning as L
import pandas as pd
import pytest
import torch

from cola.model import AcceptabilityClassifier, load_tokenizer, make_loader, predict_proba

FRAME = pd.DataFrame(
    {
        "sentence": [
            "the cat sat",
            "a much longer sentence with several more words in it",
            "dogs bark",
            "the the the cat cat",
            "she left early",
            "him saw i",
        ],
        "label": [1, 1, 1, 0, 1, 0],
    }
)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir))


def test_batches_are_padded_to_their_longest_sentence_not_to_128(tokenizer):
    batches = list(make_loader(FRAME, tokenizer, max_length=128, batch_size=3))
    lengths = [len(tokenizer(s)["input_ids"]) for s in FRAME["sentence"]]
    assert batches[0]["input_ids"].shape == (3, max(lengths[:3]))
    assert batches[1]["input_ids"].shape == (3, max(lengths[3:]))
    assert batches[0]["attention_mask"].sum(dim=1).tolist() == lengths[:3]
    assert batches[0]["labels"].tolist() == [1, 1, 1]


def test_max_length_truncates(tokenizer):
    batch = next(iter(make_loader(FRAME, tokenizer, max_length=5, batch_size=6)))
    assert batch["input_ids"].shape[1] == 5
    assert (batch["input_ids"][:, -1][batch["attention_mask"][:, -1] == 1] == tokenizer.sep_token_id).all()


def make_module(model_dir, lr=1e-3):
    return AcceptabilityClassifier(str(model_dir), lr=lr, weight_decay=0.0, warmup_ratio=0.0)


def test_a_few_steps_on_a_tiny_batch_lower_the_loss(tiny_model_dir, tokenizer):
    L.seed_everything(0)
    module = make_module(tiny_model_dir)
    batch = next(iter(make_loader(FRAME, tokenizer, max_length=32, batch_size=6)))
    optimizer = torch.optim.AdamW(module.parameters(), lr=3e-3)
    module.train()
    losses = []
    for _ in range(30):
        loss = module(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


class ModeProbe(L.Callback):
    """Records whether the HF model and every dropout layer were in train mode during each phase."""

    def __init__(self):
        self.train_modes, self.val_modes = [], []

    @staticmethod
    def _modes(module):
        dropouts = [m.training for m in module.model.modules() if isinstance(m, torch.nn.Dropout)]
        assert dropouts, "the model has no dropout layers to check"
        return module.model.training and all(dropouts), not any(dropouts) and not module.model.training

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.train_modes.append(self._modes(module)[0])

    def on_validation_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0):
        self.val_modes.append(self._modes(module)[1])


def quiet_trainer(tmp_path, **kwargs) -> L.Trainer:
    """A CPU Trainer without loggers, checkpoints or progress output: what these tests need around `fit`."""
    quiet = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    return L.Trainer(accelerator="cpu", default_root_dir=tmp_path, **quiet, **kwargs)


def test_training_runs_with_dropout_active_and_validation_without(tiny_model_dir, tokenizer, tmp_path):
    # from_pretrained returns eval mode and Lightning keeps submodule modes: dropout would silently stay off.
    module = make_module(tiny_model_dir)
    probe = ModeProbe()
    loader = make_loader(FRAME, tokenizer, max_length=32, batch_size=2)
    trainer = quiet_trainer(tmp_path, max_epochs=2, callbacks=[probe])
    trainer.fit(module, loader, loader)
    assert probe.train_modes and all(probe.train_modes)
    assert probe.val_modes and all(probe.val_modes)
    assert "val/mcc" in trainer.callback_metrics and "train/loss" in trainer.callback_metrics


def test_warmup_then_linear_decay(tiny_model_dir, tokenizer, tmp_path):
    module = AcceptabilityClassifier(str(tiny_model_dir), lr=1e-3, weight_decay=0.01, warmup_ratio=0.5)
    loader = make_loader(FRAME, tokenizer, max_length=32, batch_size=1)
    lrs = []

    class LrProbe(L.Callback):
        def on_train_batch_start(self, trainer, *args):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    quiet_trainer(tmp_path, max_epochs=1, limit_val_batches=0, callbacks=[LrProbe()]).fit(module, loader)
    peak = lrs.index(max(lrs))
    assert lrs[0] == 0.0 and max(lrs) == pytest.approx(1e-3, rel=0.01)
    assert lrs[: peak + 1] == sorted(lrs[: peak + 1]) and lrs[peak:] == sorted(lrs[peak:], reverse=True)


def test_predict_proba_returns_probabilities_in_input_order(tiny_model_dir, tokenizer):
    module = make_module(tiny_model_dir)
    probs = predict_proba(module.model, tokenizer, list(FRAME["sentence"]), max_length=32, batch_size=4)
    assert probs.shape == (6, 2)
    assert probs.sum(axis=1) == pytest.approx([1.0] * 6, abs=1e-5)
    single = predict_proba(module.model, tokenizer, [FRAME["sentence"][4]], max_length=32)
    assert single[0] == pytest.approx(probs[4], abs=1e-5)  # padding in a batch does not change the answer


def test_worker_count_does_not_change_the_batches(tokenizer):
    """Why train.num_workers is not a param of `train` in dvc.yaml (tests/pipeline_rules.py): the shuffled batches,
    their order and their contents are the same whether the main process or worker processes build them."""

    def batches(num_workers, shuffle=True):
        L.seed_everything(7, workers=True)
        loader = make_loader(
            pd.concat([FRAME] * 4), tokenizer, max_length=32, batch_size=5, shuffle=shuffle, num_workers=num_workers
        )
        return [{k: v.tolist() for k, v in batch.items()} for batch in loader]

    in_process = batches(0)
    assert in_process != batches(0, shuffle=False)  # really shuffled
    assert batches(2) == in_process


# --- the two poolings, layer-wise learning rates, the decision threshold --------------------------------------


@pytest.fixture(scope="module")
def tiny_mean_model(tiny_model_dir, tmp_path_factory):
    """The tiny BERT with the mean-pooling head, saved the way the train stage saves it."""
    from cola.model import load_classifier

    torch.manual_seed(1)
    model = load_classifier(str(tiny_model_dir), pooling="mean").eval()
    model_dir = tmp_path_factory.mktemp("tiny_mean")
    model.save_pretrained(model_dir)
    load_tokenizer(str(tiny_model_dir)).save_pretrained(model_dir)
    return model, model_dir


def test_mean_pooling_ignores_padding(tiny_mean_model, tokenizer):
    model, _ = tiny_mean_model
    alone = tokenizer(["the cat sat"], return_tensors="pt")
    padded = tokenizer(
        ["the cat sat", "a much longer sentence with several more words"], padding=True, return_tensors="pt"
    )
    with torch.inference_mode():
        assert torch.allclose(model(**alone).logits[0], model(**padded).logits[0], atol=1e-5)


def test_a_saved_mean_pooling_model_loads_back_with_its_pooling_and_head(tiny_mean_model, tokenizer):
    from cola.model import MeanPoolingClassifier, load_classifier

    model, model_dir = tiny_mean_model
    loaded = load_classifier(str(model_dir)).eval()  # pooling read from config.json, not passed
    assert isinstance(loaded, MeanPoolingClassifier)
    batch = tokenizer(["the cat sat", "him saw i"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        assert torch.allclose(model(**batch).logits, loaded(**batch).logits, atol=1e-6)
    assert predict_proba(loaded, tokenizer, ["the cat sat"], 64).shape == (1, 2)


def test_an_unknown_pooling_is_refused_by_name(tiny_model_dir):
    from cola.model import load_classifier

    with pytest.raises(ValueError, match="model.pooling must be one of cls, mean"):
        load_classifier(str(tiny_model_dir), pooling="max")


def test_layerwise_learning_rates_decay_from_the_head_down_to_the_embeddings(tiny_model_dir):
    from cola.model import layerwise_lr_groups, load_classifier

    model = load_classifier(str(tiny_model_dir), pooling="mean")
    groups = layerwise_lr_groups(model, lr=1.0, decay=0.5, weight_decay=0.01)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert lr_of[id(named["classifier.weight"])] == 1.0
    assert lr_of[id(named["encoder.encoder.layer.1.output.dense.weight"])] == 0.5
    assert lr_of[id(named["encoder.encoder.layer.0.output.dense.weight"])] == 0.25
    assert lr_of[id(named["encoder.embeddings.word_embeddings.weight"])] == 0.125
    assert sum(len(g["params"]) for g in groups) == len(named)  # every parameter in exactly one group
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert id(named["classifier.bias"]) in no_decay and id(named["classifier.weight"]) not in no_decay
    flat = layerwise_lr_groups(model, lr=3e-5, decay=1.0, weight_decay=0.01)
    assert {g["lr"] for g in flat} == {3e-5}


def test_label_smoothing_changes_only_the_training_loss(tiny_model_dir, tokenizer):
    batch = next(iter(make_loader(FRAME, tokenizer, max_length=64, batch_size=6)))
    losses, logged = {}, {}
    for smoothing in (0.0, 0.2):
        torch.manual_seed(0)
        module = AcceptabilityClassifier(
            str(tiny_model_dir), lr=1e-3, weight_decay=0.0, warmup_ratio=0.0, label_smoothing=smoothing
        ).eval()
        module.log = lambda name, value, **kwargs: logged.update({name: float(value)})  # no Trainer attached
        with torch.inference_mode():
            module.training_step(dict(batch), 0)
            module.validation_step(dict(batch), 0)
        losses[smoothing] = (logged["train/loss"], logged["val/loss"])
    assert losses[0.0][0] != pytest.approx(losses[0.2][0], abs=1e-4)
    assert losses[0.0][1] == pytest.approx(losses[0.2][1], abs=1e-6)


def test_threshold_tuned_on_validation_maximises_mcc_and_argmax_is_0_5():
    import numpy as np
    from sklearn.metrics import matthews_corrcoef

    from cola.metrics import decide, tune_threshold

    labels = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    p = np.array([0.55, 0.6, 0.62, 0.7, 0.8, 0.9, 0.95, 0.66])  # everything above 0.5: argmax says all 1
    probs = np.stack([1 - p, p], axis=1)
    assert decide(probs).tolist() == probs.argmax(axis=1).tolist()
    threshold, mcc = tune_threshold(labels, probs)
    assert 0.62 < threshold <= 0.66 and mcc == pytest.approx(1.0)
    assert mcc == pytest.approx(matthews_corrcoef(labels, decide(probs, threshold)))
    assert matthews_corrcoef(labels, decide(probs)) == 0.0


def test_out_of_fold_threshold_is_honest_where_the_in_sample_one_is_not():
    import numpy as np

    from cola.metrics import cross_validated_threshold, tune_threshold

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 600)
    # a real shift: every probability is above 0.5, but acceptable sentences score higher
    p = np.where(labels == 1, rng.uniform(0.7, 1.0, 600), rng.uniform(0.55, 0.8, 600))
    shifted = cross_validated_threshold(labels, np.stack([1 - p, p], axis=1))
    assert shifted["mcc_argmax"] == 0.0 and shifted["mcc_tuned_out_of_fold"] > 0.5
    assert len(shifted["fold_thresholds"]) == 5
    # no signal at all: tuning in-sample still finds a "good" threshold; out of fold it does not
    noise = rng.uniform(0, 1, 600)
    probs = np.stack([1 - noise, noise], axis=1)
    _, in_sample = tune_threshold(labels, probs)
    assert in_sample > 0.05
    assert cross_validated_threshold(labels, probs)["mcc_tuned_out_of_fold"] < in_sample - 0.05
