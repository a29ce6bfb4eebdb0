"""Model core: tokenizer + collation, the classifier (two poolings), the LightningModule, batched prediction.

Used by the train, evaluate and export stages (the export stage compares ONNX against `predict_proba`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryF1Score,
    BinaryMatthewsCorrCoef,
    BinaryPrecision,
    BinaryRecall,
)
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    PreTrainedModel,
    get_linear_schedule_with_warmup,
)
from transformers.modeling_outputs import SequenceClassifierOutput

from cola.config import load_pretrained
from cola.data import LABELS


def load_tokenizer(pretrained: str):
    return load_pretrained(AutoTokenizer.from_pretrained, pretrained)


class SentenceDataset(Dataset):
    """Tokenised once, unpadded: padding happens per batch in the collator (dynamic padding)."""

    def __init__(self, frame: pd.DataFrame, tokenizer, max_length: int):
        self.encodings = tokenizer(list(frame["sentence"]), truncation=True, max_length=max_length)
        self.labels = frame["label"].tolist() if "label" in frame else None

    def __len__(self) -> int:
        return len(self.encodings["input_ids"])

    def __getitem__(self, i: int) -> dict:
        item = {key: values[i] for key, values in self.encodings.items()}
        if self.labels is not None:
            item["labels"] = self.labels[i]
        return item


def make_loader(
    frame, tokenizer, max_length: int, batch_size: int, shuffle=False, num_workers=0, pin_memory=False
) -> DataLoader:
    return DataLoader(
        SentenceDataset(frame, tokenizer, max_length),
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        pin_memory=pin_memory,  # page-locked host memory: faster copies to a GPU; same batches
        collate_fn=DataCollatorWithPadding(tokenizer, padding="longest"),
    )


POOLINGS = ("cls", "mean")
HEAD_FILE = "head.safetensors"  # the mean-pooling head, next to the encoder's own weights


class MeanPoolingClassifier(nn.Module):
    """Encoder, masked mean over the tokens, dropout, linear head: the pooling sentence-transformers models such
    as all-MiniLM-L6-v2 were trained with (BERT's [CLS] pooler was never trained for them). Saved as the
    encoder's Hugging Face folder (config.json says `"pooling": "mean"`) plus head.safetensors."""

    def __init__(self, encoder, num_labels: int = len(LABELS)):
        super().__init__()
        self.encoder, self.config = encoder, encoder.config
        self.dropout = nn.Dropout(self.config.hidden_dropout_prob)
        self.classifier = nn.Linear(self.config.hidden_size, num_labels)
        self.classifier.weight.data.normal_(0.0, self.config.initializer_range)
        self.classifier.bias.data.zero_()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None) -> SequenceClassifierOutput:
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        logits = self.classifier(self.dropout(pooled))
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def save_pretrained(self, path: str | Path) -> None:
        self.config.pooling = "mean"
        self.encoder.save_pretrained(path)
        save_file({k: v.contiguous() for k, v in self.classifier.state_dict().items()}, str(Path(path) / HEAD_FILE))

    @classmethod
    def from_pretrained(cls, path: str, **kwargs) -> MeanPoolingClassifier:
        # add_pooling_layer=False: the [CLS] pooler would be dead weight (and an unused parameter under DDP).
        model = cls(AutoModel.from_pretrained(path, add_pooling_layer=False, **kwargs))
        head = Path(path) / HEAD_FILE
        if head.exists():  # a trained model; a base model starts with a fresh head
            model.classifier.load_state_dict(load_file(str(head)))
        return model


def load_classifier(path: str, pooling: str | None = None, **kwargs):
    """A classifier from a base model (pooling chosen by config) or a trained folder (pooling read from it); a
    ConfigError (one line) when it cannot be loaded (a Hub id offline, a folder not produced yet)."""
    return load_pretrained(_load_classifier, path, pooling=pooling, **kwargs)


def _load_classifier(path: str, pooling: str | None = None, **kwargs):
    pooling = pooling or getattr(AutoConfig.from_pretrained(path), "pooling", "cls")
    if pooling not in POOLINGS:
        raise ValueError(f"model.pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
    labels = {
        "num_labels": len(LABELS),
        "id2label": dict(enumerate(LABELS)),
        "label2id": {label: i for i, label in enumerate(LABELS)},
    }
    if pooling == "mean":
        return MeanPoolingClassifier.from_pretrained(path, **labels, **kwargs)
    return AutoModelForSequenceClassification.from_pretrained(path, **labels, **kwargs)


def model_threshold(model_dir: str | Path) -> float:
    """The decision threshold the train stage chose (config.json `decision_threshold`; 0.5 = argmax)."""
    return float(json.loads((Path(model_dir) / "config.json").read_text()).get("decision_threshold", 0.5))


def layerwise_lr_groups(
    model: PreTrainedModel | MeanPoolingClassifier, lr: float, decay: float, weight_decay: float
) -> list[dict]:
    """AdamW parameter groups: the head at `lr`, each encoder layer below it `decay` times the one above,
    embeddings lowest (layer-wise learning-rate decay; decay=1.0 is one learning rate for all).
    Biases and LayerNorm weights get no weight decay."""
    num_layers: int = model.config.num_hidden_layers

    def depth(name: str) -> int:  # 0 = embeddings, 1..L = encoder layers, L+1 = pooler and head
        if "embeddings." in name:
            return 0
        layer = re.search(r"\.layer\.(\d+)\.", name)
        return int(layer.group(1)) + 1 if layer else num_layers + 1

    groups: dict[tuple[int, bool], list] = {}
    for name, param in model.named_parameters():
        no_decay = name.endswith(("bias", "LayerNorm.weight"))
        groups.setdefault((depth(name), no_decay), []).append(param)
    return [
        {"params": params, "lr": lr * decay ** (num_layers + 1 - d), "weight_decay": 0.0 if nd else weight_decay}
        for (d, nd), params in sorted(groups.items())
    ]


def _metrics(prefix: str) -> MetricCollection:
    return MetricCollection(
        {
            "acc": BinaryAccuracy(),
            "f1": BinaryF1Score(),
            "precision": BinaryPrecision(),
            "recall": BinaryRecall(),
            "mcc": BinaryMatthewsCorrCoef(),
        },
        prefix=prefix,
    )


class AcceptabilityClassifier(L.LightningModule):
    def __init__(
        self,
        pretrained: str,
        lr: float,
        weight_decay: float,
        warmup_ratio: float,
        pooling: str = "cls",
        layer_lr_decay: float = 1.0,
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.model = load_classifier(pretrained, pooling)
        # from_pretrained returns the model in eval mode and Lightning keeps submodule modes,
        # so without this dropout would be silently off during training.
        self.model.train()
        self.train_metrics = _metrics("train/")
        self.val_metrics = _metrics("val/")

    def forward(self, **batch):
        return self.model(**batch)

    def _step(self, batch, metrics: MetricCollection, stage: str):
        labels = batch.pop("labels")
        logits = self(**batch).logits
        # Label smoothing only shapes the training loss; validation loss stays comparable across runs.
        smoothing = self.hparams["label_smoothing"] if stage == "train" else 0.0
        loss = F.cross_entropy(logits, labels, label_smoothing=smoothing)
        preds = logits.argmax(dim=-1)
        metrics.update(preds, labels)
        # sync_dist: under DDP the epoch loss is averaged over ranks (torchmetrics syncs the metrics itself).
        self.log(
            f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(preds), sync_dist=True
        )
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, self.train_metrics, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, self.val_metrics, "val")

    def on_train_epoch_end(self):
        self.log_dict(self.train_metrics.compute(), sync_dist=True)
        self.train_metrics.reset()

    def on_validation_epoch_end(self):
        self.log_dict(self.val_metrics.compute(), prog_bar=True, sync_dist=True)
        self.val_metrics.reset()

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.AdamW(layerwise_lr_groups(self.model, hp.lr, hp.layer_lr_decay, hp.weight_decay))
        total = self.trainer.estimated_stepping_batches
        scheduler = get_linear_schedule_with_warmup(optimizer, int(self.hparams.warmup_ratio * total), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


@torch.inference_mode()
def predict_proba(model, tokenizer, sentences: list[str], max_length: int, batch_size: int = 64) -> np.ndarray:
    """Class probabilities (n, 2) from a Hugging Face classifier, with the training-time tokenisation."""
    model.eval()
    frame = pd.DataFrame({"sentence": sentences})
    chunks = []
    for batch in make_loader(frame, tokenizer, max_length, batch_size):
        batch = {k: v.to(model.device) for k, v in batch.items()}
        chunks.append(torch.softmax(model(**batch).logits.float(), dim=-1).cpu().numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, len(LABELS)), dtype=np.float32)
