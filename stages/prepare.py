"""prepare: load CoLA, validate it, write honest splits and reference statistics for monitoring.

Outputs: data/prepared/{train,validation,test}.parquet, data/prepared/source.json (where the data came from,
file hashes, what cleaning dropped), data/reference/stats.json (training-data statistics for drift checks).
"""

import sys

from transformers import AutoTokenizer

from cola.config import ROOT, load_params, resolve_pretrained, write_json
from cola.data import DataValidationError, load, make_splits, reference_stats

PREPARED = ROOT / "data" / "prepared"
REFERENCE = ROOT / "data" / "reference"


def main() -> None:
    params = load_params()
    raw = load(params.data, ROOT)
    splits, cleaning = make_splits(raw, params.data, params.seed)

    PREPARED.mkdir(parents=True, exist_ok=True)
    for name, frame in splits.items():
        frame.to_parquet(PREPARED / f"{name}.parquet", index=False)
    rows = {name: len(frame) for name, frame in splits.items()}
    write_json(PREPARED / "source.json", {**raw.source, "rows": rows, "cleaning": cleaning})

    tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained(params.model.pretrained))
    stats = reference_stats(splits["train"], splits["test"], tokenizer, params.model.pretrained)
    write_json(REFERENCE / "stats.json", stats)
    print(f"prepare: {raw.source['source']} data from {raw.source['location']}; rows {rows}; dropped {cleaning}")


if __name__ == "__main__":
    try:
        main()
    except DataValidationError as exc:
        sys.exit(f"prepare failed: {exc}")
