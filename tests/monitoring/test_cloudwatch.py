"""The monitor reads prediction logs from CloudWatch Logs: a real moto_server over HTTP on 127.0.0.1."""

import json
import subprocess
import time
import urllib.request
from datetime import UTC, datetime, timedelta

import boto3
import pytest

from cola import monitoring
from stages import monitor
from tests.monitoring import streams
from tests.net import free_port

GROUP = "/aws/lambda/cola-api"
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def moto_endpoint():
    port = free_port()
    server = subprocess.Popen(
        ["moto_server", "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url + "/moto-api/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail(f"moto_server did not start on {url}")
        yield url
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture()
def aws_env(moto_endpoint, monkeypatch):
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",  # dummy credentials
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL": moto_endpoint,
    }.items():
        monkeypatch.setenv(name, value)
    return boto3.client("logs")


def put_lines(client, stream, lines_with_times):
    client.create_log_stream(logGroupName=GROUP, logStreamName=stream)
    events = [{"timestamp": int(t.timestamp() * 1000), "message": line} for line, t in lines_with_times]
    for i in range(0, len(events), 500):
        client.put_log_events(logGroupName=GROUP, logStreamName=stream, logEvents=events[i : i + 500])


def test_monitor_reads_a_lambda_log_group(tiny_reference, aws_env):
    client = aws_env
    client.create_log_group(logGroupName=GROUP)
    now = datetime.now(UTC)
    start = now - timedelta(minutes=30)
    records = streams.prediction_records(tiny_reference["predictor"], streams.streams()["capitals"][:300], start=start)
    lines = []
    for i, record in enumerate(records):
        t = start + timedelta(seconds=i)
        line = json.dumps(record)
        if i % 2:  # Lambda's logging format puts a prefix before the message
            line = f"{t.isoformat()}\t{record['request_id']}\tINFO\t{line}"
        lines += [
            (line, t),
            (json.dumps({"_aws": {"Timestamp": 1}, "Latency": 2.0}), t),  # EMF record
            (f"START RequestId: {record['request_id']} Version: $LATEST", t),
        ]
    put_lines(client, "2026/01/01/[$LATEST]a", lines)
    old = streams.prediction_records(tiny_reference["predictor"], ["an old sentence"] * 40)
    put_lines(client, "2026/01/01/[$LATEST]b", [(json.dumps(r), now - timedelta(hours=30)) for r in old])

    assert len(monitoring.read_cloudwatch(GROUP, hours=2)) == 300  # the 30 h old events are outside the window
    assert len(monitoring.read_cloudwatch(GROUP, hours=48)) == 340
    code = monitor.main(["--params", str(tiny_reference["params"]), "--cloudwatch", GROUP, "--hours", "2"])
    assert code == 1  # all capitals
    alerts = json.loads((tiny_reference["out"] / "alerts.json").read_text())
    assert alerts["source"] == f"CloudWatch {GROUP} (last 2.0 h)"
    assert {c["feature"] for c in alerts["checks"] if c["alert"]} == {"upper_ratio"}


def test_a_missing_log_group_exits_2_with_a_message(tiny_reference, aws_env, capsys):
    assert monitor.main(["--params", str(tiny_reference["params"]), "--cloudwatch", "/aws/lambda/nope"]) == 2
    err = capsys.readouterr().err
    assert "CloudWatch Logs group '/aws/lambda/nope' could not be read" in err and "ResourceNotFound" in err
