"""Torch-free inference on a serving bundle: `tokenizers` + ONNX Runtime + numpy.

The tokenizer runs without its own truncation and padding so that each input's full token count and
unknown-token rate are known (monitoring compares them with the training data, counted by the same
`contract.features.count_tokens`); the model still sees at most `max_length` tokens, truncated like
`tokenizers` does it (keep the leading tokens, keep the trailing special token), and each batch is padded
only to its longest row.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from contract.bundle import CONFIG, MODEL_CARD, BundleError, softmax, verify_manifest
from contract.features import count_tokens, unk_token_id
from runtime import MAX_BATCH_TOKENS, THREADS_ENV

# config.json `graph_optimization_level` -> what _load_session asks ONNX Runtime for
GRAPH_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


@dataclass(frozen=True)
class Batch:
    """What one inference call returns: one row per input text."""

    probs: np.ndarray  # (n, len(labels)) float32, softmax of the logits
    tokens: list[int]  # token count incl. special tokens, before truncation
    unk_rates: list[float]  # share of non-special tokens that are the unknown token


@dataclass(frozen=True)
class Encoded:
    """Tokenized texts, ready for the model: what the micro-batcher queues and merges."""

    ids: list[list[int]]  # truncated to max_length
    type_ids: list[list[int]]
    tokens: list[int]  # before truncation (monitoring counts these)
    unk_rates: list[float]

    @property
    def cost(self) -> int:
        """Tokens the model will compute: admission control measures queued work in these."""
        return sum(len(row) for row in self.ids)

    @staticmethod
    def merge(parts: list[Encoded]) -> Encoded:
        return Encoded(
            *([x for part in parts for x in getattr(part, f)] for f in ("ids", "type_ids", "tokens", "unk_rates"))
        )


class BundlePredictor:
    def __init__(self, bundle_dir: str | Path, threads: int | None = None, max_batch_tokens: int = MAX_BATCH_TOKENS):
        self.bundle_dir = Path(bundle_dir)
        self.max_batch_tokens = max_batch_tokens  # padded tokens per ONNX Runtime call (see infer)
        self.manifest = verify_manifest(self.bundle_dir)
        config = json.loads((self.bundle_dir / CONFIG).read_text())
        try:
            self.labels: list[str] = list(config["labels"])
            self.max_length: int = int(config["max_length"])
            model_file = config.get("model_file", "model.onnx")
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(
                f"{self.bundle_dir / CONFIG} lacks a valid {exc}: re-run `dvc repro export_onnx`"
            ) from exc
        self.variant: str = str(config.get("variant", "unknown"))
        self.version: str = str(self.manifest["version"])
        self.positive = self.labels.index("acceptable") if "acceptable" in self.labels else len(self.labels) - 1
        self.threshold = config.get("decision_threshold", 0.5)
        if len(self.labels) != 2 or not isinstance(self.threshold, int | float) or not 0 < self.threshold < 1:
            raise BundleError(
                f"{self.bundle_dir / CONFIG}: needs two labels and a decision_threshold in (0, 1), "
                f"has {self.labels} and {self.threshold!r}: re-run `dvc repro export_onnx`"
            )
        self.card = self._load_card(self.bundle_dir / MODEL_CARD) if MODEL_CARD in self.manifest["files"] else None
        self._load_tokenizer(self.bundle_dir / "tokenizer.json")
        self._load_session(self.bundle_dir / model_file, threads, config)

    @staticmethod
    def _load_card(path: Path) -> dict:
        """The model card (GET /model). Its sha256 matched the manifest; it must still be a strict JSON object."""

        def refuse(constant: str):  # NaN/Infinity: not JSON, and the answer could not be serialised
            raise ValueError(constant)

        try:
            card = json.loads(path.read_text(), parse_constant=refuse)
        except ValueError:
            card = None
        if not isinstance(card, dict):
            raise BundleError(f"{path} is not a JSON object: re-run `dvc repro export_onnx`")
        return card

    def _load_tokenizer(self, path: Path) -> None:
        self.tokenizer = Tokenizer.from_file(str(path))
        padding = self.tokenizer.padding or {}
        self.pad_id = int(padding.get("pad_id", 0))
        self.pad_type_id = int(padding.get("pad_type_id", 0))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.unk_id = unk_token_id(self.tokenizer)

    def _load_session(self, path: Path, threads: int | None, config: dict) -> None:
        if threads is None:
            threads = int(os.environ.get(THREADS_ENV, "1"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0 = ONNX Runtime's default (one per core)
        options.inter_op_num_threads = 1
        # A bundle whose graph ORT optimised at export says so: loading it without optimising again
        # saves ~25 ms of start. Another onnxruntime version re-optimises (its fusions may differ).
        level = config.get("graph_optimization_level", "all")
        if level not in GRAPH_LEVELS:
            raise BundleError(
                f"{self.bundle_dir / CONFIG}: graph_optimization_level {level!r} is not one of {list(GRAPH_LEVELS)}"
            )
        if config.get("optimized_by_onnxruntime", ort.__version__) != ort.__version__:
            level = "all"
        options.graph_optimization_level = GRAPH_LEVELS[level]
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types for unreadable models
            raise BundleError(
                f"{path} could not be loaded by ONNX Runtime ({exc}): re-run `dvc repro export_onnx`"
            ) from exc
        self.input_names = [i.name for i in self.session.get_inputs()]
        if not set(self.input_names) <= {"input_ids", "attention_mask", "token_type_ids"}:
            raise BundleError(
                f"{path} expects inputs {self.input_names}; the predictor feeds input_ids, attention_mask "
                f"and token_type_ids only: export the model with those inputs"
            )

    def encode(self, texts: list[str]) -> Encoded:
        """Tokenize without running the model (cheap: the app does it on admission to size the work)."""
        ids_rows, type_rows, tokens, unk_rates = [], [], [], []
        for enc in self.tokenizer.encode_batch(list(texts)):
            ids, type_ids, special = enc.ids, enc.type_ids, enc.special_tokens_mask
            count, unk_rate = count_tokens(ids, special, self.unk_id)  # before truncation, as in the training stats
            tokens.append(count)
            unk_rates.append(unk_rate)
            if len(ids) > self.max_length:
                tail = _trailing_specials(special)
                keep = self.max_length - tail
                ids = ids[:keep] + ids[len(ids) - tail :]
                type_ids = type_ids[:keep] + type_ids[len(type_ids) - tail :]
            ids_rows.append(ids)
            type_rows.append(type_ids)
        return Encoded(ids_rows, type_rows, tokens, unk_rates)

    def infer(self, encoded: Encoded) -> np.ndarray:
        """Class probabilities for encoded rows, in their order.

        Length-aware: rows are sorted by length and cut into groups of at most `max_batch_tokens` padded
        tokens, one ONNX Runtime call each, so a long sentence does not make short ones pay for its
        padding and one call's memory stays bounded whatever the mix.
        """
        n = len(encoded.ids)
        probs = np.zeros((n, len(self.labels)), dtype=np.float32)
        for group in self.length_groups([len(row) for row in encoded.ids]):
            (logits,) = self.session.run(None, self._feeds(encoded, group))[:1]
            probs[group] = softmax(logits.astype(np.float32))
        return probs

    def length_groups(self, lengths: list[int]) -> list[list[int]]:
        """The rows (indices into `lengths`) of each ONNX Runtime call `infer` makes: sorted by length, cut where
        a group's padded size would pass `max_batch_tokens` (a longer row alone still gets its own call)."""
        order = sorted(range(len(lengths)), key=lengths.__getitem__)
        groups: list[list[int]] = []
        for i in order:  # ascending, so the newest row is the group's widest
            if groups and (len(groups[-1]) + 1) * lengths[i] <= self.max_batch_tokens:
                groups[-1].append(i)
            else:
                groups.append([i])
        return groups

    def _feeds(self, encoded: Encoded, rows: list[int]) -> dict[str, np.ndarray]:
        width = max(len(encoded.ids[r]) for r in rows)
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        type_ids = np.full((len(rows), width), self.pad_type_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for k, r in enumerate(rows):
            length = len(encoded.ids[r])
            input_ids[k, :length] = encoded.ids[r]
            type_ids[k, :length] = encoded.type_ids[r]
            mask[k, :length] = 1
        feeds = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": type_ids}
        return {name: feeds[name] for name in self.input_names}

    def run(self, texts: list[str]) -> Batch:
        """Tokenize and classify `texts` (length-aware groups, see infer)."""
        encoded = self.encode(texts)
        return Batch(self.infer(encoded), encoded.tokens, encoded.unk_rates)

    def decide(self, probs: np.ndarray) -> np.ndarray:
        """The label index of each row under the bundle's decision rule: the positive label ("acceptable") when
        its probability is at least `decision_threshold` (chosen on validation by the train stage; 0.5 = argmax)."""
        return np.where(probs[:, self.positive] >= self.threshold, self.positive, 1 - self.positive)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return self.run(texts).probs

    def token_stats(self, texts: list[str]) -> tuple[list[int], list[float]]:
        """(token counts, unknown-token rates) without running the model."""
        encoded = self.encode(texts)
        return encoded.tokens, encoded.unk_rates


def _trailing_specials(special_mask: list[int]) -> int:
    n = 0
    for flag in reversed(special_mask):
        if not flag:
            break
        n += 1
    return n
