"""The hardware config group (conf/hardware/): `hardware=gpu` composes into params.yaml like every group, its keys
follow the pipeline-truth rules (tests/pipeline_rules.py), the default `cpu` is what the committed model was
trained with, and the GPU group's loading settings (workers, pinned memory) give the same metrics on a CPU."""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from cola.config import compose_params
from cola.paths import ROOT
from tests import pipeline_rules as rules

HARDWARE = ROOT / "conf" / "hardware"
# What each group sets, read from its file (without the `# @package train` header's effect: the keys of `train`).
GPU = yaml.safe_load((HARDWARE / "gpu.yaml").read_text())
CPU = yaml.safe_load((HARDWARE / "cpu.yaml").read_text())


def compose(tmp_path, *overrides: str) -> dict:
    out = tmp_path / "params.yaml"
    compose_params(out, list(overrides))
    return yaml.safe_load(out.read_text())


def test_hardware_gpu_composes_into_train_and_changes_only_its_own_keys(tmp_path):
    default, gpu = compose(tmp_path, "train=smoke"), compose(tmp_path, "train=smoke", "hardware=gpu")
    trainer = gpu["train"]["trainer"]
    assert (trainer["accelerator"], trainer["devices"], trainer["precision"]) == ("gpu", 1, "bf16-mixed")
    assert trainer["num_nodes"] == 1 and trainer["strategy"] == "auto"
    assert (gpu["train"]["num_workers"], gpu["train"]["pin_memory"]) == (GPU["num_workers"], True)
    # everything else is the train option's: the smoke epochs stay smoke epochs on a GPU
    assert trainer["max_epochs"] == default["train"]["trainer"]["max_epochs"] == 1
    hardware_keys = {f"train.{k}" for k in GPU if k != "trainer"} | {f"train.trainer.{k}" for k in GPU["trainer"]}
    changed = {k for k in rules.leaf_keys(gpu) if k not in hardware_keys}
    assert {k: _get(gpu, k) for k in changed} == {k: _get(default, k) for k in changed}


def _get(params: dict, key: str):
    for part in key.split("."):
        params = params[part]
    return params


def test_multi_gpu_and_multi_node_ddp_are_overrides_of_the_gpu_group(tmp_path):
    trainer = compose(
        tmp_path, "hardware=gpu", "train.trainer.devices=4", "train.trainer.strategy=ddp", "train.trainer.num_nodes=2"
    )["train"]["trainer"]
    assert (trainer["devices"], trainer["strategy"], trainer["num_nodes"]) == (4, "ddp", 2)


def test_the_default_hardware_is_cpu_and_composes_to_the_committed_trainer_values(tmp_path):
    """hardware=cpu is the default: the values the committed model (dvc.lock) was trained with."""
    default = compose(tmp_path)
    assert default == compose(tmp_path, "hardware=cpu")
    locked = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]["train"]["params"]["params.yaml"]
    assert default["train"]["trainer"] == locked["train.trainer"]
    for key, value in CPU["trainer"].items():
        assert locked["train.trainer"][key] == value, key


@pytest.mark.parametrize("hardware", ["cpu", "gpu"])
def test_every_key_of_each_hardware_option_is_declared_or_explained(tmp_path, hardware):
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    compose(tmp_path, f"hardware={hardware}")
    assert rules.unclassified_keys(tmp_path) == []
    # the loading settings change no output (NOT_OUTPUT_AFFECTING); where and how precisely it trains does
    assert not rules.stages_reading_param("train.pin_memory") and not rules.stages_reading_param("train.num_workers")
    for key in ("precision", "accelerator", "devices", "strategy", "num_nodes"):
        assert rules.stages_reading_param(f"train.trainer.{key}") == {"train"}


def test_a_bad_hardware_option_is_refused_at_composition(tmp_path):
    from cola.config import ConfigError

    with pytest.raises(ConfigError, match="hardware"):
        compose(tmp_path, "hardware=tpu")
    with pytest.raises(ConfigError, match="train.pin_memory"):
        compose(tmp_path, "train.pin_memory=sometimes")


# --- the GPU group's loading settings on a CPU: same metrics -----------------------------------------------------


def run_stage(project, stage: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(project), "WANDB_MODE": "disabled"}
    result = subprocess.run(
        [sys.executable, "-m", f"stages.{stage}"], cwd=project, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, f"stages.{stage} failed:\n{(result.stdout + result.stderr)[-4000:]}"


@pytest.mark.slow
def test_the_gpu_groups_loading_settings_do_not_change_the_metrics(tmp_path, cola_dir):
    """Why train.pin_memory and train.num_workers are not params of `train` (tests/pipeline_rules.py): the smoke
    training on the fixture data, once as configured and once with the GPU group's workers and pinned memory,
    writes the same metrics and the same weights (on a CPU, where precision and the device stay the same)."""
    base = tmp_path / "base"
    for name in ("cola", "stages", "app", "contract", "runtime", "conf"):
        shutil.copytree(ROOT / name, base / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(cola_dir, base / "data" / "raw")  # what `stages.get_data` puts there
    smoke = ["train=smoke", "data.max_train_rows=240", "data.max_test_rows=48", "train.trainer.accelerator=cpu"]
    compose_params(base / "params.yaml", smoke)
    run_stage(base, "prepare")
    loading = [f"train.num_workers={GPU['num_workers']}", f"train.pin_memory={GPU['pin_memory']}"]
    assert loading != [f"train.num_workers={CPU['num_workers']}", f"train.pin_memory={CPU['pin_memory']}"]
    gpu_loading = tmp_path / "gpu_loading"
    shutil.copytree(base, gpu_loading)
    compose_params(gpu_loading / "params.yaml", [*smoke, *loading])
    assert yaml.safe_load((gpu_loading / "params.yaml").read_text())["train"]["pin_memory"] is True
    for project in (base, gpu_loading):
        run_stage(project, "train")

    def outputs(project):
        metrics = json.loads((project / "reports" / "train" / "metrics.json").read_text())
        return metrics, (project / "models" / "model" / "model.safetensors").read_bytes()

    (metrics, weights), (gpu_metrics, gpu_weights) = outputs(base), outputs(gpu_loading)
    assert "best_val_mcc" in metrics and metrics == gpu_metrics
    assert weights == gpu_weights


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["train.trainer.max_epochs=two"],
            "train.trainer.max_epochs: Value 'two' of type 'str' could not be converted",
        ),
        (["hardware=gpu", "train.trainer.precision=bf16-mix"], "train.trainer.precision='bf16-mix' must be one of"),
        (["train.trainer.accelerator=gpuu"], "train.trainer.accelerator='gpuu' must be one of"),
        (["hardware=gpu", "train.trainer.num_nodes=0"], "train.trainer.num_nodes=0 must be > 0"),
    ],
)
def test_the_trainer_arguments_conf_sets_are_typed_though_train_trainer_is_free(tmp_path, overrides, expected):
    """train.trainer goes as-is to lightning.Trainer; the arguments conf/ sets are still checked at composition
    (cola.config.TrainerArguments), so a typo fails in the train workflow's plan job, not on a GPU runner."""
    from cola.config import ConfigError

    with pytest.raises(ConfigError, match=re.escape(expected)):
        compose(tmp_path, *overrides)
    compose(tmp_path, "+train.trainer.fast_dev_run=true")  # other Trainer arguments can still be added


def test_the_trainer_choices_are_lightnings():
    import typing

    import lightning
    from lightning.fabric import connector

    from cola.config import ACCELERATORS, PRECISIONS, TrainerArguments

    lightning_precisions = [*typing.get_args(connector._PRECISION_INPUT_STR)]
    lightning_precisions += typing.get_args(connector._PRECISION_INPUT_STR_ALIAS)
    assert sorted(PRECISIONS) == sorted(lightning_precisions)
    for accelerator in ACCELERATORS[1:]:  # `auto` aside, each is one Lightning knows by name
        assert accelerator in lightning.pytorch.accelerators.AcceleratorRegistry or accelerator == "gpu"
    trainer_arguments = inspect.signature(lightning.Trainer.__init__).parameters
    assert {f.name for f in dataclasses.fields(TrainerArguments)} <= set(trainer_arguments)
