"""A newcomer's config mistakes, as a user makes them: each command fails with one line on stderr (what, where, how
to fix), exit status 2, no traceback (unless COLA_DEBUG=1), and params.yaml untouched. Each runs the real command
in a copy of the project (`make params` writes params.yaml)."""

import os
import shutil
import socket
import subprocess
import sys

import pytest
import yaml

from cola.paths import ROOT

PROJECT = ["cola", "stages", "app", "contract", "runtime", "conf", "hydra_plugins", "params.yaml", "dvc.yaml"]


@pytest.fixture
def project(tmp_path):
    for name in PROJECT:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, tmp_path / name)
    return tmp_path


def run(project, *args, **env):
    environment = {**os.environ, "PYTHONPATH": str(project), "WANDB_MODE": "disabled", **env}
    environment.pop("DVC_STAGE", None)
    environment.pop("COLA_DEBUG", None)
    environment.pop("HF_HUB_OFFLINE", None)  # the stages must find out themselves (cola.config.hub_reachable)
    environment.update(env)
    return subprocess.run(
        [sys.executable, *args], cwd=project, env=environment, capture_output=True, text=True, timeout=600
    )


def one_line_error(result, *expected: str) -> str:
    """The command failed with exit 2 and its last stderr line is one error naming every `expected` string."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    for text in expected:
        assert text in line, f"{text!r} not in: {line}"
    return line


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.lr=abc", ["model.lr", "'abc'", "Float"]),  # the type, at composition
        ("model.pooling=max", ["model.pooling", "'max'", "[cls, mean]"]),
        ("train.batch_size=1.5", ["train.batch_size", "'1.5'", "Integer"]),
        ("model.lr=-1", ["model.lr=-1.0 must be > 0"]),  # the bounds, checked on the composed config
        ("data.val_fraction=1", ["data.val_fraction=1.0 must be < 1"]),
        ("train.label_smoothing=-0.1", ["train.label_smoothing=-0.1 must be >= 0"]),
    ],
)
def test_make_params_refuses_a_bad_value_and_keeps_params_yaml(project, override, expected):
    before = (project / "params.yaml").read_text()
    result = run(project, "-m", "cola.config", override)
    line = one_line_error(result, *expected, "make params")
    assert (project / "params.yaml").read_text() == before, f"params.yaml changed by a refused {override}: {line}"


@pytest.mark.parametrize(
    ("conf_file", "mistake", "reported_line", "where"),
    [
        ("conf/train/default.yaml", "\tlr: 1\n", 1, "found character '\\t'"),  # a tab indent: on its line
        ("conf/model/minilm.yaml", "extra: [1, 2\n", 2, "expected ',' or ']'"),  # an unclosed [: at the end
    ],
)
def test_yaml_syntax_error_in_conf_names_file_line_and_column(project, conf_file, mistake, reported_line, where):
    path = project / conf_file
    lines = path.read_text().count("\n")
    path.write_text(path.read_text() + mistake)
    result = run(project, "-m", "cola.config")
    one_line_error(result, f"{path}, line {lines + reported_line}, column 1", where, "make params")


def test_debug_variable_shows_the_traceback(project):
    result = run(project, "-m", "cola.config", "model.lr=abc", COLA_DEBUG="1")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_stage_with_params_yaml_missing_a_section_says_make_params(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    del params["model"]
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    one_line_error(run(project, "-m", "stages.prepare"), "prepare failed", "params.yaml has no model", "make params")


def test_stage_with_a_bad_value_in_params_yaml_names_it(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["evaluate"]["batch_size"] = 0
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    one_line_error(run(project, "-m", "stages.prepare"), "evaluate.batch_size=0 must be > 0")


def test_stage_that_cannot_load_its_model_offline_names_the_offline_option(project, cola_dir):
    """`dvc exp run -S model=bert_tiny` offline: prepare needs the Hub model's tokenizer. Under DVC (DVC_STAGE set)
    the line also says that `dvc checkout` restores the outputs DVC removed before running the stage."""
    assert run(project, "-m", "cola.config", "model=bert_tiny").returncode == 0
    shutil.copytree(cola_dir, project / "data" / "raw")
    # an endpoint nothing listens on stands in for "no network" on any machine (this one, or one with network):
    # the stage must fail at once (cola.config.hub_reachable), not after the Hub client's ~1 min of retries
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        endpoint = f"https://127.0.0.1:{closed.getsockname()[1]}"  # bound, never listening: connection refused
        result = run(project, "-m", "stages.prepare", HF_ENDPOINT=endpoint, DVC_STAGE="prepare")
    one_line_error(
        result,
        "prepare failed: model.pretrained='google/bert_uncased_L-2_H-128_A-2' cannot be loaded",
        "(no network: 127.0.0.1 is not reachable;",
        "-S model=minilm",
        "`dvc checkout prepare` restores data/prepared, data/reference",
    )
