"""get_data: bring the raw CoLA files into data/raw from the configured source and version them with DVC.

    python -m stages.get_data        (`make data`; `dvc pull data/raw.dvc` gets the same bytes from the remote)

Sources (params `data.*`): `local` = the offline TSV copy in data.local_dir, `hub` = nyu-mll/glue at the pinned
data.hub_revision, `auto` = local if the folder exists, else hub. The files are copied byte for byte, validated
(file, line and problem on failure), then `dvc add data/raw` records their hash in data/raw.dvc, with the source in
its `meta`. The pipeline starts from data/raw (a dep of `prepare`), so dvc.lock pins the exact raw bytes of a run.
This is an import, not a DVC stage, on purpose: see docs/pipeline.md ("Raw data").
"""

import subprocess
import sys

import yaml

from cola.config import load_params, run_main
from cola.data import DataValidationError, fetch, load_raw
from cola.paths import RAW_DIR, RAW_DVC_FILE, ROOT


def record_source(source: dict) -> None:
    """Keep where the bytes came from next to their hash (meta is ignored by DVC's status checks)."""
    tracked = yaml.safe_load(RAW_DVC_FILE.read_text())
    if tracked.get("meta") != source:
        RAW_DVC_FILE.write_text(yaml.safe_dump({**tracked, "meta": source}, sort_keys=False))


def tracked_hash() -> str | None:
    return yaml.safe_load(RAW_DVC_FILE.read_text())["outs"][0]["md5"] if RAW_DVC_FILE.is_file() else None


def main() -> None:
    params = load_params()
    before = tracked_hash()
    source = fetch(params.data, ROOT, RAW_DIR)
    raw = load_raw(RAW_DIR)  # fail now, with the line, rather than in prepare
    added = subprocess.run(
        [sys.executable, "-m", "dvc", "add", "--quiet", str(RAW_DIR.relative_to(ROOT))],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if added.returncode != 0:
        sys.exit(f"get_data: `dvc add data/raw` failed:\n{added.stderr.strip()}")
    record_source(source)
    version = (
        "the version data/raw.dvc already records"
        if tracked_hash() == before
        else "a NEW version in data/raw.dvc: commit it (git) and share the bytes (`dvc push`)"
    )
    print(
        f"get_data: {source['source']} data from {source['location']}: {len(raw.train)} train and "
        f"{len(raw.test)} test rows in data/raw, {version}"
    )


if __name__ == "__main__":
    run_main("get_data", main, DataValidationError)
