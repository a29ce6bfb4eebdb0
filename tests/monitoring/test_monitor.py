"""The monitor command end to end: the test split (of the tests' CoLA-format fixture) replayed through a bundle
raises no alarm, shifted streams do, and unusable inputs stop with exit code 2 and a message."""

import json

import pytest

from cola import monitoring
from stages import monitor
from tests.monitoring import streams

STREAMS = streams.streams()


def run(reference, records, tmp_path, name="stream", extra=()):
    log = streams.write_jsonl(tmp_path / f"{name}.jsonl", records)
    return monitor.main(["--params", str(reference["params"]), "--logs", str(log), *extra])


def alerted_features(reference) -> set[str]:
    checks = json.loads((reference["out"] / "alerts.json").read_text())["checks"]
    return {c["feature"] for c in checks if c["alert"]}


def test_replaying_the_test_split_raises_no_alarm(tiny_reference, tmp_path):
    records = streams.prediction_records(tiny_reference["predictor"], STREAMS["replay"])
    assert run(tiny_reference, records, tmp_path) == 0
    assert alerted_features(tiny_reference) == set()
    metrics = json.loads((tiny_reference["out"] / "metrics.json").read_text())
    assert metrics["n_predictions"] == len(STREAMS["replay"]) and metrics["alerts"] == 0
    assert metrics["char_length"]["psi"] < 0.1 and metrics["confidence"]["ks"] < 0.15
    assert (tiny_reference["out"] / "report.html").read_text().count('class="chart"') == 5


@pytest.mark.parametrize(
    ("stream", "must_alert"),
    [
        ("long", {"char_length", "token_length"}),
        ("german", {"token_density", "token_length"}),
        ("capitals", {"upper_ratio"}),  # the uncased tokenizer cannot see capitals: only the log's upper_ratio can
    ],
)
def test_shifted_streams_raise_the_alarm(tiny_reference, tmp_path, stream, must_alert):
    records = streams.prediction_records(tiny_reference["predictor"], STREAMS[stream])
    assert run(tiny_reference, records, tmp_path, stream) == 1
    assert must_alert <= alerted_features(tiny_reference)
    assert "DRIFT:" in (tiny_reference["out"] / "report.html").read_text()


@pytest.mark.slow
def test_with_the_trained_model_replay_is_quiet_and_shuffled_word_order_alarms(trained_reference, tmp_path):
    """Shuffled words keep every input statistic; only a model that learnt grammar notices (a random model can't)."""
    predictor = trained_reference["predictor"]
    assert run(trained_reference, streams.prediction_records(predictor, STREAMS["replay"]), tmp_path, "replay") == 0
    assert run(trained_reference, streams.prediction_records(predictor, STREAMS["shuffled"]), tmp_path, "shuffled") == 1
    assert alerted_features(trained_reference) & {"predicted_label", "confidence"}
    assert not alerted_features(trained_reference) & {"char_length", "token_length", "unk_rate"}


def test_capitals_are_visible_from_logged_text_when_upper_ratio_is_absent(tiny_reference, tmp_path):
    records = streams.prediction_records(tiny_reference["predictor"], STREAMS["capitals"][:200])
    for record, text in zip(records, STREAMS["capitals"][:200], strict=True):
        del record["upper_ratio"]
        record["text"] = text  # logged only with COLA_LOG_TEXT=1
    assert run(tiny_reference, records, tmp_path) == 1
    assert "upper_ratio" in alerted_features(tiny_reference)


def test_other_log_lines_are_skipped(tiny_reference, tmp_path):
    records = streams.prediction_records(tiny_reference["predictor"], STREAMS["replay"][:120])
    log = tmp_path / "mixed.jsonl"
    noise = [
        '{"ts":"2026-01-01T00:00:00Z","event":"request","status":200}',
        "plain text from a library",
        '{"_aws":{"Timestamp":1},"Latency":3.0}',
        "{broken json",
    ]
    log.write_text("\n".join(noise + [json.dumps(r) for r in records]) + "\n")
    assert len(monitoring.read_log_file(log)) == 120


def test_unusable_inputs_exit_2_with_a_message(tiny_reference, tmp_path, capsys):
    records = streams.prediction_records(tiny_reference["predictor"], STREAMS["replay"][:60])
    assert monitor.main(["--params", str(tiny_reference["params"]), "--logs", str(tmp_path / "none.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err

    assert run(tiny_reference, records[:10], tmp_path) == 2
    assert "fewer than monitor.min_predictions=50" in capsys.readouterr().err

    del records[3]["confidence"]
    assert run(tiny_reference, records, tmp_path) == 2
    assert "line 4: prediction record lacks ['confidence']" in capsys.readouterr().err

    records = streams.prediction_records(tiny_reference["predictor"], STREAMS["replay"][:60])
    assert run(tiny_reference, records, tmp_path, extra=["--reference-stats", str(tmp_path / "missing.json")]) == 2
    assert "run `dvc repro prepare`" in capsys.readouterr().err
