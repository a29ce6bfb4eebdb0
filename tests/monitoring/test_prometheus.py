"""Alert rules: promtool's unit tests, and a live stack on 127.0.0.1 (Debian's prometheus and
prometheus-alertmanager scraping the app under uvicorn) where a rule is seen firing."""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from cola import monitoring
from cola.paths import ROOT
from contract.logs import PREDICTION_FIELDS, TEXT_FIELD
from tests.monitoring import streams
from tests.net import free_port

MONITORING = ROOT / "monitoring"


def require(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.fail(f"{program} is not installed: apt-get install prometheus prometheus-alertmanager (.ci/run does)")
    return path


def test_promtool_rule_unit_tests_pass():
    result = subprocess.run(
        [require("promtool"), "test", "rules", "tests/cola.rules.test.yml"],
        cwd=MONITORING,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_fails_a_wrong_expectation(tmp_path):
    """The unit tests can fail: the same file with one expectation changed does."""
    tests = yaml.safe_load((MONITORING / "tests" / "cola.rules.test.yml").read_text())
    tests["rule_files"] = [str(MONITORING / "rules" / "cola.yml")]
    first = tests["tests"][0]["alert_rule_test"][0]  # api down is *not* firing at 2m...
    first["exp_alerts"] = [{"exp_labels": {"severity": "critical", "job": "cola-api", "instance": "api:8000"}}]
    (tmp_path / "wrong.yml").write_text(yaml.safe_dump(tests))
    result = subprocess.run(
        [require("promtool"), "test", "rules", str(tmp_path / "wrong.yml")], capture_output=True, text=True
    )
    assert result.returncode != 0 and "ColaApiDown" in result.stdout + result.stderr


def test_shipped_configs_are_valid():
    for args in (
        ["promtool", "check", "rules", "rules/cola.yml"],
        ["promtool", "check", "config", "prometheus.yml"],
        ["amtool", "check-config", "alertmanager.yml"],
    ):
        result = subprocess.run([require(args[0]), *args[1:]], cwd=MONITORING, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    dashboard = json.loads((MONITORING / "grafana" / "dashboards" / "cola.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in (
        "cola_requests_total",
        "cola_request_latency_seconds_bucket",
        "cola_predictions_total",
        "cola_prediction_confidence",
        "cola_input_chars",
        "cola_input_tokens",
        "cola_unk_rate",
        "cola_model_info",
    ):
        assert metric in exprs, f"dashboard has no panel for {metric}"
    template = json.loads((MONITORING / "opensearch" / "index-template.json").read_text())
    mapped = set(template["template"]["mappings"]["properties"])
    assert {*PREDICTION_FIELDS, TEXT_FIELD} <= mapped  # every field of the prediction log line is searchable
    objects = [
        json.loads(line) for line in (MONITORING / "opensearch" / "saved-objects.ndjson").read_text().splitlines()
    ]
    ids = {o["id"] for o in objects}
    assert all(ref["id"] in ids for o in objects for ref in o["references"])


# ---- live stack --------------------------------------------------------------------------------------------------


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def wait_for(what: str, probe, seconds: float = 60):
    """Poll `probe` until it returns something truthy (bounded: fails after `seconds`)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if value := probe():
                return value
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


@contextmanager
def process(args, log: Path, env=None):
    with open(log, "w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def owns_listener(proc: subprocess.Popen, port: int) -> bool:
    """`proc` itself (not whatever else may hold the port) listens on 127.0.0.1:`port`."""
    import psutil  # installed with dvc

    try:
        sockets = psutil.Process(proc.pid).net_connections(kind="tcp")
    except psutil.NoSuchProcess:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in sockets)


@contextmanager
def listening(args_for, log: Path, env=None, attempts: int = 3):
    """Start `args_for(port)` on a free port and yield the port once that very process listens on it. A port is
    free when picked, but another process may take it before ours binds: ours then exits, and it is started again
    on another port (not a retry of a failure: nothing of ours ran on the taken port)."""
    for _ in range(attempts):
        port = free_port()
        with process(args_for(port), log, env) as proc:
            outcome = wait_for(
                f"{args_for(port)[0]} to listen on {port}",
                lambda proc=proc, port=port: "exited" if proc.poll() is not None else owns_listener(proc, port),
            )
            if outcome is True:
                yield port
                return
        if "address already in use" not in log.read_text():
            pytest.fail(f"{args_for(port)[0]} exited: {log.read_text()[-2000:]}")
    pytest.fail(f"{args_for(0)[0]}: {attempts} free ports taken before it could bind them")


def fast_rules(path: Path) -> Path:
    """The shipped rules with every `for:` set to 0s, so a test sees them fire in seconds (expressions unchanged)."""
    rules = yaml.safe_load((MONITORING / "rules" / "cola.yml").read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            rule["for"] = "0s"
    path.write_text(yaml.safe_dump(rules))
    return path


@pytest.mark.integration
@pytest.mark.slow
def test_live_stack_fires_confidence_collapse_for_a_random_model(tiny_bundle, tmp_path):
    app_env = {**os.environ, "COLA_BUNDLE_DIR": str(tiny_bundle)}
    app_log = tmp_path / "app.jsonl"
    with (
        listening(
            lambda port: [sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", str(port)], app_log, app_env
        ) as api,
        listening(
            lambda port: [
                require("prometheus-alertmanager"),
                f"--config.file={MONITORING / 'alertmanager.yml'}",
                f"--storage.path={tmp_path / 'am'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            tmp_path / "alertmanager.log",
        ) as am,
    ):
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(fast_rules(tmp_path / "rules.yml"))],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am}"]}]}]},
            "scrape_configs": [{"job_name": "cola-api", "static_configs": [{"targets": [f"127.0.0.1:{api}"]}]}],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        with listening(
            lambda port: [
                require("prometheus"),
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            tmp_path / "prometheus.log",
        ) as prom:
            run_stack(api, prom, am)

    # The app's own log lines are what the drift monitor reads.
    records = monitoring.read_log_file(app_log)
    assert len(records) == 240 and {r["model_version"] for r in records} == {
        json.loads((tiny_bundle / "manifest.json").read_text())["version"]
    }
    assert all("text" not in r for r in records)  # raw text is off by default


def run_stack(api: int, prom: int, am: int) -> None:
    """Predictions through the app until Prometheus fires ColaConfidenceCollapse and Alertmanager has it."""
    wait_for("the app to be ready", lambda: get_json(f"http://127.0.0.1:{api}/ready")["status"] == "ready")
    wait_for(
        "Prometheus to scrape the app",
        lambda: any(
            t["health"] == "up" for t in get_json(f"http://127.0.0.1:{prom}/api/v1/targets")["data"]["activeTargets"]
        ),
    )

    sentences = streams.streams()["replay"][:240]
    for i in range(0, len(sentences), 40):  # 6 requests of 40 sentences: a random model is ~50% confident
        body = json.dumps({"text": sentences[i : i + 40]}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{api}/predict", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200

    def firing():
        alerts = get_json(f"http://127.0.0.1:{prom}/api/v1/alerts")["data"]["alerts"]
        return {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}

    names = wait_for("ColaConfidenceCollapse to fire", lambda: "ColaConfidenceCollapse" in firing() and firing())
    assert "ColaHighErrorRate" not in names and "ColaApiDown" not in names
    received = wait_for(
        "Alertmanager to receive the alert",
        lambda: (
            {a["labels"]["alertname"] for a in get_json(f"http://127.0.0.1:{am}/api/v2/alerts")}
            & {"ColaConfidenceCollapse"}
        ),
    )
    assert received == {"ColaConfidenceCollapse"}
