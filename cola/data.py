"""CoLA data: fetch (local TSV copy or the Hugging Face Hub) into data/raw, validate, clean, split, describe.

The raw files are a DVC-versioned input (data/raw.dvc, written by `python -m stages.get_data`), so dvc.lock records
the exact bytes every run used; docs/pipeline.md says why they are an import and not a stage.

Split policy (GLUE publishes no test labels):
- GLUE `validation` becomes our **test** set, kept as published so scores stay comparable with GLUE.
- A stratified, seeded **validation** split is carved from GLUE `train` for early stopping / checkpointing.
- Train rows whose sentence also appears in test are dropped (no leakage); exact duplicates in train are
  collapsed; sentences that appear in train with both labels are dropped (contradictory supervision).
"""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from contract.features import token_stats

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


# ---------------------------------------------------------------- the raw data: fetched once, versioned by DVC


def read_tsv(path: Path) -> pd.DataFrame:
    """Read one GLUE-layout TSV (header line, tab-separated, no quoting) as strings; validation comes later."""
    if not path.is_file():
        raise DataValidationError(
            f"{path}: file not found (expected a tab-separated file with columns {', '.join(COLUMNS)})"
        )
    try:
        return pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False, encoding="utf-8")
    except (UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataValidationError(f"{path}: cannot be read as UTF-8 tab-separated text: {exc}") from exc


def load_raw(raw_dir: str | Path) -> RawData:
    """The pipeline's input: data/raw/{train,validation}.tsv, validated (file, line and problem on failure)."""
    raw_dir = Path(raw_dir)
    frames = {split: validate(read_tsv(raw_dir / name), str(raw_dir / name)) for split, name in SPLIT_FILES.items()}
    return RawData(frames["train"], frames["test"])


def fetch_local(directory: Path, out_dir: Path) -> None:
    """Copy the GLUE-layout TSVs byte for byte: the bytes DVC versions are the bytes of the source."""
    for name in SPLIT_FILES.values():
        if not (directory / name).is_file():
            raise DataValidationError(
                f"{directory / name}: file not found; data.local_dir must hold {' and '.join(SPLIT_FILES.values())}"
            )
        shutil.copyfile(directory / name, out_dir / name)


def fetch_hub(name: str, config: str, revision: str, out_dir: Path) -> None:  # pragma: no cover - needs network
    """Online path: the Hub copy of GLUE/CoLA at a pinned revision, written in the same TSV layout."""
    try:
        from datasets import load_dataset

        dataset = load_dataset(name, config, revision=revision)
    except (ConnectionError, OSError) as exc:
        raise DataValidationError(
            f"cannot download {name}/{config}@{revision} from the Hugging Face Hub ({type(exc).__name__}); "
            f"offline, use a local copy: data.source=local with data.local_dir=<folder with "
            f"{' and '.join(SPLIT_FILES.values())}>, or `dvc pull data/raw.dvc` from the team's remote"
        ) from None
    for split, hub_split in (("train", "train"), ("test", "validation")):
        frame = dataset[hub_split].to_pandas()[list(COLUMNS)]
        bad = frame.index[frame["sentence"].str.contains(r"[\t\r\n]")]
        if len(bad):
            raise DataValidationError(
                f"hub:{name}/{config}@{revision}:{hub_split} rows {list(bad[:3])}: "
                f"a sentence contains a tab or line break, which the TSV layout cannot hold"
            )
        frame.to_csv(out_dir / SPLIT_FILES[split], sep="\t", index=False, quoting=csv.QUOTE_NONE)


def fetch(data_params: dict, root: Path, out_dir: Path) -> dict:
    """Fill `out_dir` from the configured source: `local` (the offline TSV copy), `hub` (pinned revision), or
    `auto` (local if the folder exists, else hub). Returns where the data came from."""
    source = data_params["source"]
    if source not in ("auto", "local", "hub"):
        raise DataValidationError(f"data.source={source!r} is not one of auto, local, hub (see conf/data/)")
    local_dir = (root / Path(data_params["local_dir"]).expanduser()).resolve()
    if source == "local" and not local_dir.is_dir():
        raise DataValidationError(
            f"data.source=local but data.local_dir {local_dir} does not exist: point data.local_dir at a folder "
            f"with {' and '.join(SPLIT_FILES.values())}, or set data.source=hub"
        )
    staging = out_dir.with_name(out_dir.name + ".partial")  # out_dir is replaced only once the fetch succeeded
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        if source == "local" or (source == "auto" and local_dir.is_dir()):
            fetch_local(local_dir, staging)
            fetched = {"source": "local", "location": str(data_params["local_dir"])}
        else:
            revision = data_params["hub_revision"]
            fetch_hub(data_params["hub_name"], data_params["hub_config"], revision, staging)
            fetched = {"source": "hub", "location": f"{data_params['hub_name']}/{data_params['hub_config']}@{revision}"}
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    return fetched


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
    if overlap:  # cannot happen after clean_train's de-duplication; a bug if it does, so say so loudly
        raise DataValidationError(f"train/validation overlap after cleaning: {sorted(overlap)[:3]}")
    return splits, report


# ---------------------------------------------------------------- reference statistics for monitoring


def _describe(values: np.ndarray) -> dict:
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "p50": float(np.percentile(values, 50)),
        "p95": float(np.percentile(values, 95)),
        "p99": float(np.percentile(values, 99)),
        "max": float(values.max()),
        "values": values.tolist(),
    }


def reference_stats(train: pd.DataFrame, test: pd.DataFrame, tokenizer, tokenizer_name: str) -> dict:
    """What the training data looks like, so live traffic can be compared with it (monitor stage).

    `tokenizer` is a transformers fast tokenizer; its `tokenizers` backend is counted by the function the app
    counts live inputs with (contract.features), so the two sides cannot drift apart."""
    tokens, unks = token_stats(tokenizer.backend_tokenizer, train["sentence"])
    token_length, unk_rate = np.array(tokens), np.array(unks)
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
