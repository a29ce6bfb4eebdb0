"""Scale-out tier: the train stage under Lightning DDP, two CPU processes talking over gloo, on the smoke config.

The same command on a GPU machine:
`dvc exp run -S hardware=gpu -S train.trainer.devices=2 -S train.trainer.strategy=ddp` (conf/hardware/gpu.yaml)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from cola.config import compose_params
from cola.paths import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.integration]

DDP = ["train.trainer.strategy=ddp", "train.trainer.devices=2", "train.trainer.accelerator=cpu"]


def run_stage(project, stage: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(project), "WANDB_MODE": "disabled"}
    result = subprocess.run(
        [sys.executable, "-m", f"stages.{stage}"], cwd=project, env=env, capture_output=True, text=True, timeout=900
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"stages.{stage} failed:\n{output[-4000:]}"
    return output


def test_ddp_on_two_cpu_processes_trains_and_only_rank_0_writes(tmp_path, cola_dir):
    project = tmp_path / "project"
    for name in ("cola", "stages", "app", "contract", "runtime", "conf"):
        shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    compose_params(
        project / "params.yaml",
        [
            "train=smoke",
            f"data.local_dir={cola_dir}",
            "data.max_train_rows=240",
            "data.max_test_rows=48",
            "model.pooling=mean",
            "model.tune_threshold=true",
            *DDP,
        ],
    )
    shutil.copytree(cola_dir, project / "data" / "raw")  # what `stages.get_data` puts there (and DVC-tracks)
    run_stage(project, "prepare")

    output = run_stage(project, "train")

    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in output  # a second process really joined
    assert output.count("train: best val/mcc") == 1  # rank 1 returned before writing anything
    model_dir = project / "models" / "model"
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "config.json",
        "head.safetensors",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert sorted(p.name for p in (project / "reports" / "train").iterdir()) == [
        "metrics.json",
        "misclassified_validation.csv",
        "params.yaml",
        "plots",
    ]

    # the copy's modules are identical to this checkout's (imported here): the saved model is read back with them
    from cola.metrics import tune_threshold
    from cola.model import load_classifier, load_tokenizer, predict_proba

    model, tokenizer = load_classifier(str(model_dir)), load_tokenizer(str(model_dir))
    probs = predict_proba(model, tokenizer, ["the cat sat on the mat", "mat the on sat cat the"], max_length=64)
    validation = pd.read_parquet(project / "data" / "prepared" / "validation.parquet")
    val_probs = predict_proba(model, tokenizer, list(validation["sentence"]), max_length=128)  # as train does
    assert probs.shape == (2, 2) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)

    # The tuned threshold is saved with the model (evaluate and the export read it from there): read back from
    # config.json, it is the one that maximises the saved model's validation MCC, and the one the report names.
    saved = json.loads((model_dir / "config.json").read_text())["decision_threshold"]
    assert saved == tune_threshold(validation["label"].to_numpy(), val_probs)[0]
    assert saved == json.loads((project / "reports" / "train" / "metrics.json").read_text())["decision_threshold"]
