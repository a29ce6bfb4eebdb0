"""CoLA data: load (local TSV copy or the Hugging Face Hub), validate, clean, split, describe.

Split policy (GLUE publishes no test labels):
- GLUE `validation` becomes our **test** set, kept as published so scores stay comparable with GLUE.
- A stratified, seeded **validation** split is carved from GLUE `train` for early stopping / checkpointing.
- Train rows whose sentence also appears in test are dropped (no leakage); exact duplicates in train are
  collapsed; sentences that appear in train with both labels are dropped (contradictory supervision).
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from app.bundle import file_sha256 as sha256

LABELS = ("unacceptable", "acceptable")  # index = label id
COLUMNS = ("sentence", "label")
SPLIT_FILES = {"train": "train.tsv", "test": "validation.tsv"}  # our split -> file in the GLUE layout
MAX_REPORTED_PROBLEMS = 10


class DataValidationError(ValueError):
    """Bad input data. The message names the file, the rows and the problem."""


@dataclass
class RawData:
    train: pd.DataFrame
    test: pd.DataFrame
    source: dict = field(default_factory=dict)  # where the data came from, with file hashes


# ---------------------------------------------------------------- loading


def read_tsv(path: Path) -> pd.DataFrame:
    """Read one GLUE-layout TSV (header line, tab-separated, no quoting) as strings; validation comes later."""
    if not path.is_file():
        raise DataValidationError(f"{path}: file not found (expected a tab-separated file with columns "
                                  f"{', '.join(COLUMNS)})")
    try:
        return pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False,
                           encoding="utf-8")
    except (UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataValidationError(f"{path}: cannot be read as UTF-8 tab-separated text: {exc}") from exc


def load_local(directory: str | Path, label: str | None = None) -> RawData:
    """`label` is how the location is recorded (the configured path, so records match across machines)."""
    directory = Path(directory)
    frames = {split: read_tsv(directory / name) for split, name in SPLIT_FILES.items()}
    for split, name in SPLIT_FILES.items():
        frames[split] = validate(frames[split], str(directory / name))
    source = {
        "source": "local",
        "location": label or str(directory),
        "files": {name: sha256(directory / name) for name in SPLIT_FILES.values()},
    }
    return RawData(frames["train"], frames["test"], source)


def load_hub(name: str, config: str, revision: str) -> RawData:  # pragma: no cover - needs network
    """Online path: the Hub copy of GLUE/CoLA at a pinned revision."""
    from datasets import load_dataset

    dataset = load_dataset(name, config, revision=revision)
    frames = {}
    for split, hub_split in (("train", "train"), ("test", "validation")):
        frame = dataset[hub_split].to_pandas()[list(COLUMNS)].astype({"sentence": str, "label": str})
        frames[split] = validate(frame, f"hub:{name}/{config}@{revision}:{hub_split}")
    source = {
        "source": "hub",
        "location": f"{name}/{config}@{revision}",
        "files": {
            Path(f["filename"]).name: sha256(Path(f["filename"]))
            for split in ("train", "validation") for f in dataset[split].cache_files
        },
    }
    return RawData(frames["train"], frames["test"], source)


def resolve_local_dir(local_dir: str, root: Path) -> Path:
    """A relative `data.local_dir` is relative to the project root. DVC runs queued experiments
    (`dvc exp run --queue`) in a copy under <project>/.dvc/tmp/exps/, so there it means the same
    folder as in the project they were queued from."""
    path = Path(local_dir).expanduser()
    if path.is_absolute():
        return path
    parts = root.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            root = Path(*parts[:i])
            break
    return (root / path).resolve()


def load(data_params: dict, root: Path) -> RawData:
    """Pick the source: `local` (the offline TSV copy), `hub`, or `auto` (local if present, else hub)."""
    local_dir = resolve_local_dir(data_params["local_dir"], root)
    source = data_params["source"]
    if source not in ("auto", "local", "hub"):
        raise DataValidationError(f"data.source={source!r} is not one of auto, local, hub (see conf/data/)")
    if source == "local" or (source == "auto" and local_dir.is_dir()):
        if not local_dir.is_dir():
            raise DataValidationError(
                f"data.source=local but data.local_dir {local_dir} does not exist: point data.local_dir at a folder "
                f"with {' and '.join(SPLIT_FILES.values())}, or set data.source=hub"
            )
        return load_local(local_dir, data_params["local_dir"])
    return load_hub(data_params["hub_name"], data_params["hub_config"], data_params["hub_revision"])


# ---------------------------------------------------------------- validation and cleaning


def _problems(where: str, rows: pd.Index, problem: str) -> list[str]:
    # +2: line 1 is the header and pandas counts from 0, so messages point at the line an editor shows.
    lines = ", ".join(str(i + 2) for i in rows[:MAX_REPORTED_PROBLEMS])
    more = f" (and {len(rows) - MAX_REPORTED_PROBLEMS} more)" if len(rows) > MAX_REPORTED_PROBLEMS else ""
    return [f"{where} line {lines}{more}: {problem}"]


def validate(frame: pd.DataFrame, where: str) -> pd.DataFrame:
    """Check schema, labels and sentences; return a clean (sentence: str, label: int) frame or raise."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataValidationError(
            f"{where}: missing column(s) {', '.join(missing)}; found {', '.join(map(str, frame.columns))}. "
            f"Expected a header line with {', '.join(COLUMNS)}"
        )
    if frame.empty:
        raise DataValidationError(f"{where}: no data rows")
    problems: list[str] = []
    labels = frame["label"].astype(str).str.strip()
    bad_label = frame.index[~labels.isin(["0", "1"])]
    if len(bad_label):
        shown = ", ".join(repr(v) for v in labels[bad_label][:3])
        problems += _problems(where, bad_label, f"label must be 0 or 1, got {shown}")
    sentences = frame["sentence"].astype(str)
    blank = frame.index[sentences.str.strip() == ""]
    if len(blank):
        problems += _problems(where, blank, "sentence is empty or whitespace only")
    if problems:
        raise DataValidationError("invalid data:\n  " + "\n  ".join(problems))
    return pd.DataFrame({"sentence": sentences.str.strip(), "label": labels.astype(int)})


def clean_train(train: pd.DataFrame, test: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Remove leakage and contradictions from train; return the frame and what was dropped."""
    report: dict[str, int] = {}
    in_test = train["sentence"].isin(set(test["sentence"]))
    report["train_rows_also_in_test"] = int(in_test.sum())
    train = train[~in_test]
    conflicting = train.groupby("sentence")["label"].transform("nunique") > 1
    report["train_rows_with_conflicting_labels"] = int(conflicting.sum())
    train = train[~conflicting]
    duplicated = train.duplicated(keep="first")
    report["train_exact_duplicates"] = int(duplicated.sum())
    train = train[~duplicated]
    report["test_duplicate_sentences_kept"] = int(test["sentence"].duplicated().sum())
    return train.reset_index(drop=True), report


def stratified_sample(frame: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    if n is None or n >= len(frame):
        return frame
    sample, _ = train_test_split(frame, train_size=n, stratify=frame["label"], random_state=seed)
    return sample.reset_index(drop=True)


def make_splits(raw: RawData, data_params: dict, seed: int) -> tuple[dict[str, pd.DataFrame], dict]:
    train, report = clean_train(raw.train, raw.test)
    train = stratified_sample(train, data_params.get("max_train_rows"), seed)
    test = stratified_sample(raw.test, data_params.get("max_test_rows"), seed)
    train, validation = train_test_split(
        train, test_size=data_params["val_fraction"], stratify=train["label"], random_state=seed
    )
    splits = {
        "train": train.reset_index(drop=True),
        "validation": validation.reset_index(drop=True),
        "test": test.reset_index(drop=True),
    }
    overlap = set(splits["train"]["sentence"]) & set(splits["validation"]["sentence"])
    assert not overlap, f"train/validation overlap after cleaning: {sorted(overlap)[:3]}"
    return splits, report


# ---------------------------------------------------------------- reference statistics for monitoring


def _describe(values: np.ndarray) -> dict:
    return {
        "mean": float(values.mean()), "std": float(values.std()),
        "p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95)),
        "p99": float(np.percentile(values, 99)), "max": float(values.max()),
        "values": values.tolist(),
    }


def reference_stats(train: pd.DataFrame, test: pd.DataFrame, tokenizer, tokenizer_name: str) -> dict:
    """What the training data looks like, so live traffic can be compared with it (monitor stage)."""
    encoded = tokenizer(list(train["sentence"]), truncation=False, return_special_tokens_mask=True)
    token_length = np.array([len(ids) for ids in encoded["input_ids"]])
    unk_rate = np.array([
        ids.count(tokenizer.unk_token_id) / max(len(mask) - sum(mask), 1)
        for ids, mask in zip(encoded["input_ids"], encoded["special_tokens_mask"], strict=True)
    ])
    words = Counter(w for s in train["sentence"] for w in s.split())
    test_words = [w for s in test["sentence"] for w in s.split()]
    balance = train["label"].value_counts(normalize=True)
    return {
        "n_rows": len(train),
        "label_balance": {LABELS[i]: float(balance.get(i, 0.0)) for i in range(len(LABELS))},
        "char_length": _describe(train["sentence"].str.len().to_numpy()),
        "token_length": _describe(token_length),
        "unk_rate": {"mean": float(unk_rate.mean()), "values": unk_rate.tolist()},
        "vocab": {
            "size": len(words),
            "top": [[w, c] for w, c in words.most_common(50)],
            "test_oov_rate": float(np.mean([w not in words for w in test_words])),
        },
        "tokenizer": tokenizer_name,
    }
