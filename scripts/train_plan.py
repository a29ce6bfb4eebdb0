"""The experiments a `train` workflow run will start (.github/workflows/train.yml), checked before any runner trains.

    python -m scripts.train_plan --name lr-sweep --params "train.trainer.max_epochs=3" \
        --sweep "model.lr=1e-5,3e-5,1e-4" --hardware gpu --max-experiments 20 --max-parallel 4

`--params` are `dvc exp run -S` overrides for every experiment; `--sweep` uses the sweep syntax of
`dvc exp run --queue -S` (`key=a,b,c`, `key=range(1,4)`), expanded by DVC's own function into one experiment per
combination. Every experiment's overrides are composed and checked exactly as `dvc exp run -S` and the stages would
(cola.config.compose_params: the Hydra composition with the typed schema, then the bounds), so an unknown key or a
bad value fails here, on a small hosted runner in the run's first minute, with one line, instead of on a GPU.

Writes to $GITHUB_OUTPUT: `matrix` ({"include": [{"name", "overrides"}]}, the experiment job's matrix), `names`
(space-separated), `count` and `runners` (how many GPU runners to launch: min(count, max-parallel)).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
import tempfile
from pathlib import Path

from cola.config import ConfigError, compose_params

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,79}")  # a git ref component: the experiment is refs/exps/.../<name>


class PlanError(Exception):
    pass


def overrides_of(text: str, what: str) -> list[str]:
    """`-S a=1 -S b=2` or `a=1 b=2` (shell quoting allowed) -> ['a=1', 'b=2']."""
    try:
        words = shlex.split(text or "")
    except ValueError as exc:
        raise PlanError(f"{what}: {exc} in {text!r}") from None
    found = [w for w in words if w not in ("-S", "--set-param")]
    for word in found:
        if "=" not in word or word.startswith("="):
            raise PlanError(f"{what}: {word!r} is not key=value (e.g. model.lr=3e-5)")
    return found


def sweep_combinations(overrides: list[str]) -> list[list[str]]:
    """Expanded as `dvc exp run --queue -S` expands them (dvc.utils.hydra.get_hydra_sweeps)."""
    from dvc.utils.hydra import get_hydra_sweeps

    try:
        return [combo["params.yaml"] for combo in get_hydra_sweeps({"params.yaml": overrides})]
    except Exception as exc:  # Hydra's override parser: one line, whatever its error class
        raise PlanError(f"--sweep: {str(exc).splitlines()[0]}") from None


def plan(name: str, params: str, sweep: str, hardware: str, max_experiments: int) -> list[dict]:
    if not NAME.fullmatch(name or ""):
        raise PlanError(
            f"experiment name {name!r}: letters, digits, '.', '_' or '-', at most 80, not starting with '-'"
        )
    fixed = overrides_of(params, "--params")
    if len(sweep_combinations(fixed)) > 1:
        raise PlanError(f"--params {params!r} is a sweep (a comma list or range): put it in --sweep")
    combos = sweep_combinations(overrides_of(sweep, "--sweep")) if sweep.strip() else [[]]
    if len(combos) > max_experiments:
        raise PlanError(
            f"--sweep makes {len(combos)} experiments, more than the cap of {max_experiments} (TRAIN_MAX_EXPERIMENTS)"
        )
    experiments = []
    for index, combo in enumerate(combos, start=1):
        overrides = [*fixed, *combo, f"hardware={hardware}"]
        exp_name = name if len(combos) == 1 else f"{name}-{index}"
        with tempfile.TemporaryDirectory() as scratch:
            try:
                compose_params(Path(scratch) / "params.yaml", overrides)
            except ConfigError as exc:
                raise PlanError(f"experiment {exp_name} ({' '.join(overrides)}): {exc}") from None
        experiments.append({"name": exp_name, "overrides": overrides})
    return experiments


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", required=True, help="experiment name; a sweep's experiments get -1, -2, ...")
    parser.add_argument("--params", default="", help="-S overrides for every experiment")
    parser.add_argument("--sweep", default="", help="sweep overrides: key=a,b or key=range(1,4)")
    parser.add_argument("--hardware", default="cpu", help="conf/hardware/ option")
    parser.add_argument("--max-experiments", type=int, default=20)
    parser.add_argument("--max-parallel", type=int, default=4)
    args = parser.parse_args(argv)
    try:
        experiments = plan(args.name, args.params, args.sweep, args.hardware, args.max_experiments)
    except PlanError as exc:
        print(f"::error::train refused before any training: {exc}")
        return 2
    outputs = {
        "matrix": json.dumps({"include": experiments}),
        "names": " ".join(e["name"] for e in experiments),
        "count": str(len(experiments)),
        "runners": str(min(len(experiments), max(args.max_parallel, 1))),
    }
    if os.environ.get("GITHUB_OUTPUT"):
        with open(os.environ["GITHUB_OUTPUT"], "a") as out:
            out.writelines(f"{key}={value}\n" for key, value in outputs.items())
    for experiment in experiments:
        print(f"{experiment['name']}: dvc exp run {' '.join('-S ' + shlex.quote(o) for o in experiment['overrides'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
