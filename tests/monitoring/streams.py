"""Prediction-log streams for the monitor's tests, built from the tests' CoLA-format fixture (tests/fixtures).

`replay` is the test split (the fixture's validation.tsv) run through the predictor; the shifted streams are copies
that a person would call out of distribution: very long inputs, another language (German), shuffled word
order, all capitals. Records carry the fields of the app's prediction log line (see docs/monitoring.md).

Run as a script to write one JSON-lines log per stream for `python -m stages.monitor --logs ...`, by default
from the full CoLA copy at ../shared/data/cola (the numbers in docs/monitoring.md):
    python -m tests.monitoring.streams artifacts/bundle /tmp/streams [cola_dir]
"""

from __future__ import annotations

import csv
import json
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from cola.paths import ROOT
from contract.bundle import BundleError
from contract.features import upper_ratio
from runtime.predictor import BundlePredictor

COLA_DIR = ROOT / "tests" / "fixtures" / "cola"  # made-up CoLA-format data, present on every machine
FULL_COLA_DIR = ROOT.parent / "shared" / "data" / "cola"
GERMAN = Path(__file__).parent / "data" / "german_sentences.txt"
STREAM_NAMES = ("replay", "long", "german", "shuffled", "capitals")


class StreamsError(Exception):
    """Missing input: one line saying what and how to get it."""


def read_tsv(name: str, directory: Path = COLA_DIR) -> tuple[list[str], list[int]]:
    if not (directory / name).is_file():
        raise StreamsError(
            f"{directory / name} does not exist: pass a CoLA-format folder (train.tsv, validation.tsv) as the third "
            f"argument, e.g. {COLA_DIR} (the tests' fixture) or the full copy at {FULL_COLA_DIR}"
        )
    with open(directory / name, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["sentence"] for r in rows], [int(r["label"]) for r in rows]


def shuffle_words(sentence: str, rng: np.random.Generator) -> str:
    words = sentence.split()
    for _ in range(10):  # a permutation that changes the order when there is more than one word
        shuffled = list(rng.permutation(words))
        if shuffled != words:
            break
    return " ".join(shuffled)


def streams(seed: int = 0, directory: Path = COLA_DIR) -> dict[str, list[str]]:
    rng = np.random.default_rng(seed)
    test, _ = read_tsv("validation.tsv", directory)
    german = GERMAN.read_text(encoding="utf-8").splitlines()
    return {
        "replay": test,
        "long": [" ".join(rng.choice(test, 8)) for _ in range(300)],  # ~8 sentences run together
        "german": [german[i % len(german)] for i in range(300)],
        "shuffled": [shuffle_words(s, rng) for s in test],
        "capitals": [s.upper() for s in test],
    }


def prediction_records(
    predictor: BundlePredictor, texts: list[str], start: datetime | None = None, batch: int = 64
) -> list[dict]:
    """The app's prediction log records for `texts`, one second apart, labelled by the served decision rule
    (`predictor.decide`: the bundle's threshold, as the app and the monitor's reference label), not argmax."""
    start = start or datetime(2026, 1, 1, tzinfo=UTC)
    records = []
    for i in range(0, len(texts), batch):
        chunk = texts[i : i + batch]
        result = predictor.run(chunk)
        labels = predictor.decide(result.probs)
        for j, (text, probs, tokens, unk, best) in enumerate(
            zip(chunk, result.probs, result.tokens, result.unk_rates, labels, strict=True)
        ):
            records.append(
                {
                    "ts": (start + timedelta(seconds=i + j)).isoformat(),
                    "level": "INFO",
                    "event": "prediction",
                    "request_id": uuid.uuid4().hex,
                    "model_version": predictor.version,
                    "label": predictor.labels[best],
                    "confidence": float(probs[best]),
                    "prob_acceptable": float(probs[predictor.labels.index("acceptable")]),
                    "latency_ms": 0.0,
                    "chars": len(text),
                    "tokens": tokens,
                    "unk_rate": unk,
                    "upper_ratio": upper_ratio(text),
                }
            )
    return records


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def reference_stats(predictor: BundlePredictor) -> dict:
    """data/reference/stats.json as prepare writes it, from the fixture's training file (the fields the monitor
    reads), for tests that run without the pipeline's outputs."""
    texts, labels = read_tsv("train.tsv")
    tokens, unk = predictor.token_stats(texts)
    acceptable = float(np.mean(labels))
    return {
        "n_rows": len(texts),
        "label_balance": {"acceptable": acceptable, "unacceptable": 1 - acceptable},
        "char_length": {"values": [len(t) for t in texts]},
        "token_length": {"values": tokens},
        "unk_rate": {"mean": float(np.mean(unk)), "values": unk},
    }


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise StreamsError("usage: python -m tests.monitoring.streams <bundle dir> <output dir> [cola dir]")
    try:
        bundle = BundlePredictor(argv[0])
    except BundleError as exc:
        raise StreamsError(str(exc)) from None
    data = Path(argv[2]) if len(argv) > 2 else FULL_COLA_DIR
    for name, texts in streams(directory=data).items():
        print(write_jsonl(Path(argv[1]) / f"{name}.jsonl", prediction_records(bundle, texts)))


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except StreamsError as exc:
        sys.exit(f"streams: {exc}")
