"""prepare: validate the raw CoLA files, write honest splits and reference statistics for monitoring.

Input: data/raw/{train,validation}.tsv (versioned by DVC, see stages/get_data.py).
Outputs: data/prepared/{train,validation,test}.parquet, data/prepared/summary.json (rows per split, what cleaning
dropped), data/reference/stats.json (training-data statistics for drift checks).
"""

from transformers import AutoTokenizer

from cola.config import load_params, load_pretrained, run_main, write_json
from cola.data import DataValidationError, load_raw, make_splits, reference_stats
from cola.paths import PREPARED_DIR, PREPARED_SUMMARY, RAW_DIR, REFERENCE_STATS


def main() -> None:
    params = load_params()
    raw = load_raw(RAW_DIR)
    splits, cleaning = make_splits(raw, params.data, params.seed)

    PREPARED_DIR.mkdir(parents=True, exist_ok=True)
    for name, frame in splits.items():
        frame.to_parquet(PREPARED_DIR / f"{name}.parquet", index=False)
    rows = {name: len(frame) for name, frame in splits.items()}
    write_json(PREPARED_SUMMARY, {"rows": rows, "cleaning": cleaning})

    tokenizer = load_pretrained(AutoTokenizer.from_pretrained, params.model.pretrained)
    stats = reference_stats(splits["train"], splits["test"], tokenizer, params.model.pretrained)
    write_json(REFERENCE_STATS, stats)
    print(f"prepare: rows {rows}; dropped {cleaning}")


if __name__ == "__main__":
    run_main("prepare", main, DataValidationError)
