"""Cold-start probes of the benchmark, each run in a fresh interpreter by cola.benchmark.cold_start:

    python -m cola.cold_start KIND BUNDLE_DIR MODEL_DIR SENTENCE

loads one way of serving the model, predicts SENTENCE once and prints the wall clock (time.time()) right after;
the parent notes the clock before launching, so the difference is process start -> first prediction.
Module level imports only the standard library: whatever a probe imports is part of what it measures
(the bundle probe must stay torch-free). Thread count: COLA_ORT_THREADS, as for the predictor.
"""

from __future__ import annotations

import os
import sys
import time


def bundle(bundle_dir: str, model_dir: str, sentence: str) -> None:
    """The served path: runtime.predictor.BundlePredictor on the bundle (ONNX Runtime + tokenizers, no torch)."""
    from runtime.predictor import BundlePredictor

    BundlePredictor(bundle_dir).predict_proba([sentence])


def torch_transformers(bundle_dir: str, model_dir: str, sentence: str) -> None:
    """torch + transformers: `from_pretrained` of the trained model and its tokenizer, one eager forward pass."""
    import torch

    torch.set_num_threads(int(os.environ["COLA_ORT_THREADS"]))
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.inference_mode():
        model(**tokenizer([sentence], return_tensors="pt"))


PROBES = {"bundle": bundle, "torch_transformers": torch_transformers}


def main(argv: list[str]) -> None:
    kind, bundle_dir, model_dir, sentence = argv
    PROBES[kind](bundle_dir, model_dir, sentence)
    print(time.time())


if __name__ == "__main__":
    main(sys.argv[1:])
