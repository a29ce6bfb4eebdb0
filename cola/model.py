"""Model core: tokenizer + collation, the LightningModule, batched prediction.

Used by the train, evaluate and export stages (the export stage compares ONNX against `predict_proba`).
"""

from __future__ import annotations

import lightning as L
import numpy as np
import pandas as pd
import torch
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
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    get_linear_schedule_with_warmup,
)

from cola.config import resolve_pretrained
from cola.data import LABELS


def load_tokenizer(pretrained: str):
    return AutoTokenizer.from_pretrained(resolve_pretrained(pretrained))


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


def make_loader(frame, tokenizer, max_length: int, batch_size: int, shuffle=False, num_workers=0) -> DataLoader:
    return DataLoader(
        SentenceDataset(frame, tokenizer, max_length),
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=DataCollatorWithPadding(tokenizer, padding="longest"),
    )


def load_classifier(path: str, num_labels: int = len(LABELS), **kwargs):
    return AutoModelForSequenceClassification.from_pretrained(
        resolve_pretrained(path),
        num_labels=num_labels,
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
        **kwargs,
    )


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
    def __init__(self, pretrained: str, lr: float, weight_decay: float, warmup_ratio: float,
                 num_labels: int = len(LABELS)):
        super().__init__()
        self.save_hyperparameters()
        self.model = load_classifier(pretrained, num_labels)
        # from_pretrained returns the model in eval mode and Lightning keeps submodule modes,
        # so without this dropout would be silently off during training.
        self.model.train()
        self.train_metrics = _metrics("train/")
        self.val_metrics = _metrics("val/")

    def forward(self, **batch):
        return self.model(**batch)

    def _step(self, batch, metrics: MetricCollection, stage: str):
        output = self(**batch)
        preds = output.logits.argmax(dim=-1)
        metrics.update(preds, batch["labels"])
        self.log(f"{stage}/loss", output.loss, on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=len(preds))
        return output.loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, self.train_metrics, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, self.val_metrics, "val")

    def on_train_epoch_end(self):
        self.log_dict(self.train_metrics.compute())
        self.train_metrics.reset()

    def on_validation_epoch_end(self):
        self.log_dict(self.val_metrics.compute(), prog_bar=True)
        self.val_metrics.reset()

    def configure_optimizers(self):
        no_decay = ("bias", "LayerNorm.weight")
        groups = [
            {"params": [p for n, p in self.named_parameters() if not n.endswith(no_decay)],
             "weight_decay": self.hparams.weight_decay},
            {"params": [p for n, p in self.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=self.hparams.lr)
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
