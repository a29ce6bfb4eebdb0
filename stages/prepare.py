"""prepare: validate the raw CoLA files, write honest splits and reference statistics for monitoring.

Input: data/raw/{train,validation}.tsv (versioned by DVC, see stages/get_data.py).
Outputs: data/prepared/{train,validation,test}.parquet, data/prepared/summary.json (rows per split, what cleaning
dropped), data/reference/stats.json (training-data statistics for drift checks).
"""

import sys

from transformers import AutoTokenizer

from cola.config import ROOT, load_params, resolve_pretrained, write_json
from cola.data import DataValidationError, load_raw, make_splits, reference_stats

RAW_DIR = ROOT / "data" / "raw"
PREPARED = ROOT / "data" / "prepared"
REFERENCE = ROOT / "data" / "reference"


def main() -> None:
    params = load_params()
    raw = load_raw(RAW_DIR)
    splits, cleaning = make_splits(raw, params.data, params.seed)

    PREPARED.mkdir(parents=True, exist_ok=True)
    for name, frame in splits.items():
        frame.to_parquet(PREPARED / f"{name}.parquet", index=False)
    rows = {name: len(frame) for name, frame in splits.items()}
    write_json(PREPARED / "summary.json", {"rows": rows, "cleaning": cleaning})

    tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained(params.model.pretrained))
    stats = reference_stats(splits["train"], splits["test"], tokenizer, params.model.pretrained)
    write_json(REFERENCE / "stats.json", stats)
    print(f"prepare: rows {rows}; dropped {cleaning}")


if __name__ == "__main__":
    try:
        main()
    except DataValidationError as exc:
        sys.exit(f"prepare failed: {exc}")
