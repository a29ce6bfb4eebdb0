"""The dependency rules of the pipeline, derived from the code and dvc.yaml, shared by the import-closure test
(tests/unit/test_pipeline_deps.py), the truth-table test (tests/integration/test_dvc_pipeline.py) and the tables
in docs/pipeline.md (`python -m tests.pipeline_rules` prints them).

- Code: a stage depends on every in-repo module its entry module imports, transitively (package __init__ files
  included, imports inside functions included: they run too).
- Params: a stage depends on the keys it declares in dvc.yaml (a group name covers its keys). Every leaf key of
  params.yaml is either declared by some stage or listed in NOT_OUTPUT_AFFECTING with the reason.
- Data: data/raw (versioned by data/raw.dvc) is a dep of `prepare`.
- Paths: cola/paths.py names every data, model, artifact and report path; a stage's deps and outs in dvc.yaml
  (other than code) are exactly the paths of cola.paths that the modules it imports use (tests/unit/test_paths.py).
"""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from cola.paths import ROOT

# Keys no stage declares, because changing them cannot change any stage's outputs.
NOT_OUTPUT_AFFECTING = {
    "model.name": "the config option's label; no stage reads it",
    "train.progress_bar": "terminal output only",
    "train.num_workers": "data-loading processes; the batches and their order are the same "
    "(tests/unit/test_model.py::test_worker_count_does_not_change_the_batches)",
    "train.pin_memory": "page-locked host memory for faster copies to a GPU; the same batches and metrics "
    "(tests/model/test_hardware.py::test_the_gpu_groups_loading_settings_do_not_change_the_metrics)",
    "train.wandb": "W&B tracking (enabled, project, entity, mode) is a copy of the run elsewhere, not an output",
    "data.source": "read by `python -m stages.get_data`, the import that versions data/raw (data/raw.dvc meta)",
    "data.local_dir": "as data.source",
    "data.hub_name": "as data.source",
    "data.hub_config": "as data.source",
    "data.hub_revision": "as data.source",
    "monitor": "read by `make monitor` (on demand, not a pipeline stage)",
}
RAW_DATA = "data/raw"


def pipeline(root: Path = ROOT) -> dict:
    return yaml.safe_load((root / "dvc.yaml").read_text())["stages"]


def entry_module(cmd: str) -> str:
    """`python -m stages.train` -> `stages.train`."""
    words = cmd.split()
    if words[:2] != ["python", "-m"] or len(words) < 3:
        raise ValueError(f"stage cmd {cmd!r} is not `python -m <module>`: the import closure cannot be derived")
    return words[2]


def module_file(name: str, root: Path) -> Path | None:
    path = root.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_names(path: Path, package: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import: resolve against the importing package
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}  # `from pkg import submodule`
    return names


def import_closure(module: str, root: Path = ROOT) -> set[str]:
    """Repo-relative paths of every in-repo file that importing `module` executes."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__, a/b/__init__, then c
            sub = ".".join(parts[:i])
            path = module_file(sub, root)
            if path is None:
                continue
            rel = path.relative_to(root).as_posix()
            if rel in seen:
                continue
            seen.add(rel)
            package = sub if path.name == "__init__.py" else ".".join(sub.split(".")[:-1])
            todo += _imported_names(path, package)
    return seen


def code_deps(root: Path = ROOT) -> dict[str, set[str]]:
    """Stage -> the in-repo files it imports."""
    return {name: import_closure(entry_module(stage["cmd"]), root) for name, stage in pipeline(root).items()}


def _paths(entries: list) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]


def covers(path: str, declared: str) -> bool:
    """A declared dep (file or folder) covers `path`."""
    return path == declared or path.startswith(declared.rstrip("/") + "/")


def stages_depending_on_file(path: str, root: Path = ROOT) -> set[str]:
    """What the dvc.yaml says: stages with a dep covering `path`."""
    return {name for name, stage in pipeline(root).items() if any(covers(path, d) for d in _paths(stage.get("deps")))}


def stages_writing(path: str, root: Path = ROOT) -> set[str]:
    return {name for name, stage in pipeline(root).items() if any(covers(path, o) for o in _paths(stage.get("outs")))}


def declared_keys(stage: dict) -> list[str]:
    return [key for key in stage.get("params", []) if isinstance(key, str)]


def key_covered(key: str, declared: str) -> bool:
    return key == declared or key.startswith(declared + ".")


def stages_reading_param(key: str, root: Path = ROOT) -> set[str]:
    return {name for name, stage in pipeline(root).items() if any(key_covered(key, d) for d in declared_keys(stage))}


def leaf_keys(params: dict, prefix: str = "") -> list[str]:
    """Dotted keys of params.yaml; lists are leaves (DVC compares them whole)."""
    keys = []
    for key, value in params.items():
        dotted = f"{prefix}{key}"
        keys += leaf_keys(value, dotted + ".") if isinstance(value, dict) and value else [dotted]
    return keys


def unclassified_keys(root: Path = ROOT) -> list[str]:
    """Leaf keys that no stage declares and NOT_OUTPUT_AFFECTING does not explain."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    return [
        key
        for key in leaf_keys(params)
        if not stages_reading_param(key, root) and not any(key_covered(key, k) for k in NOT_OUTPUT_AFFECTING)
    ]


def _uncovered(root: Path, used: dict, declared) -> list[str]:
    """'stage: path' for each path in `used[stage]` that none of `declared(stage's dvc.yaml entry)` covers."""
    graph = pipeline(root)
    return sorted(
        f"{stage}: {path}"
        for stage, paths in used.items()
        for path in paths
        if not any(covers(path, d) for d in declared(graph[stage]))
    )


def missing_code_deps(root: Path = ROOT) -> list[str]:
    """'stage: file' for each imported file that no dep of the stage covers (a change DVC would not see)."""
    return _uncovered(root, code_deps(root), lambda stage: _paths(stage.get("deps")))


def unused_code_deps(root: Path = ROOT) -> list[str]:
    """'stage: file' for each .py file under a stage's deps that the stage does not import (an edit that would
    rerun it for nothing)."""
    graph, closures = pipeline(root), code_deps(root)
    unused = []
    for stage, spec in graph.items():
        for dep in _paths(spec.get("deps")):
            target = root / dep
            files = [target] if target.suffix == ".py" else sorted(target.rglob("*.py")) if target.is_dir() else []
            unused += [
                f"{stage}: {f.relative_to(root).as_posix()}"
                for f in files
                if f.relative_to(root).as_posix() not in closures[stage]
            ]
    return sorted(unused)


# ---- paths ------------------------------------------------------------------------------------------------

PIPELINE_TOPS = ("data", "models", "artifacts", "reports")  # where the stages' inputs and outputs live
# Pipeline paths of cola.paths that are no stage's dep or out, and why.
NOT_STAGE_PATHS = {
    "RAW_DVC_FILE": "DVC's record of data/raw, written by `dvc add` in python -m stages.get_data (an import); a "
    "stage that reads it declares data/raw (DVC_RECORDS)",
    "MONITOR_REPORT_DIR": "written by python -m stages.monitor (`make monitor`, on demand, not a pipeline stage)",
}


def path_constants() -> dict[str, str]:
    """cola.paths constant -> its repo-relative path, for the paths under PIPELINE_TOPS."""
    from cola import paths

    found = {}
    for name, value in vars(paths).items():
        if name.isupper() and isinstance(value, Path) and value != paths.ROOT and value.is_relative_to(paths.ROOT):
            relative = value.relative_to(paths.ROOT).as_posix()
            if relative.split("/")[0] in PIPELINE_TOPS:
                found[name] = relative
    return found


def names_used_from_paths(path: Path) -> set[str]:
    """The cola.paths names a module uses: `from cola.paths import X`, or `paths.X` after `from cola import paths`."""
    tree = ast.parse(path.read_text(), str(path))
    names, aliases = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "cola.paths":
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module == "cola":
            aliases |= {alias.asname or alias.name for alias in node.names if alias.name == "paths"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            names.add(node.attr)
    return names


# DVC refuses a .dvc file as a stage dep: a stage that reads one (the model card reads the raw data's hash from
# data/raw.dvc) declares the data it records, whose change is exactly what changes the record's hash.
DVC_RECORDS = {"data/raw.dvc": RAW_DATA}


def stage_paths(root: Path = ROOT) -> dict[str, set[str]]:
    """Stage -> the pipeline paths (repo-relative) that the in-repo modules it imports use from cola.paths."""
    constants = path_constants()
    return {
        stage: {
            DVC_RECORDS.get(path, path)
            for f in files
            for name in names_used_from_paths(root / f)
            if (path := constants.get(name))
        }
        for stage, files in code_deps(root).items()
    }


def data_paths(stage: dict) -> list[str]:
    """A stage's deps and outs other than code: its data, model, artifact and report paths."""
    return [p for p in _paths(stage.get("deps")) + _paths(stage.get("outs")) if not p.endswith(".py")]


def undeclared_stage_paths(root: Path = ROOT) -> list[str]:
    """'stage: path' for each cola.paths path a stage uses that none of its deps and outs covers."""
    return _uncovered(root, stage_paths(root), data_paths)


def unnamed_or_unused_stage_paths(root: Path = ROOT) -> list[str]:
    """'stage: path (why)' for each data dep or out of a stage in dvc.yaml that is not a cola.paths path, or that
    covers none of the paths the stage uses."""
    constants, used = set(path_constants().values()), stage_paths(root)
    problems = []
    for stage, spec in pipeline(root).items():
        for declared in data_paths(spec):
            if declared not in constants:
                problems.append(f"{stage}: {declared} (not a path of cola/paths.py)")
            elif not any(covers(path, declared) for path in used[stage]):
                problems.append(f"{stage}: {declared} (the stage's code does not use it)")
    return sorted(problems)


def unexplained_path_constants(root: Path = ROOT) -> list[str]:
    """cola.paths pipeline paths that are not (under, or above) any stage's deps and outs, nor in NOT_STAGE_PATHS."""
    declared = [p for spec in pipeline(root).values() for p in data_paths(spec)]
    return sorted(
        f"{name}: {path}"
        for name, path in path_constants().items()
        if name not in NOT_STAGE_PATHS and not any(covers(path, d) or covers(d, path) for d in declared)
    )


def downstream(stages: set[str], root: Path = ROOT) -> set[str]:
    """Stages whose deps are (under) an output of `stages`, transitively: what reruns if those outputs change."""
    graph = pipeline(root)
    found = set(stages)
    changed = True
    while changed:
        changed = False
        outs = [o for name in found for o in _paths(graph[name].get("outs"))]
        for name, stage in graph.items():
            if name not in found and any(covers(d, o) or covers(o, d) for d in _paths(stage.get("deps")) for o in outs):
                found.add(name)
                changed = True
    return found


def truth_table(root: Path = ROOT) -> list[tuple[str, set[str]]]:
    """(edit, stages `dvc status` must list) for one raw-data byte, every imported source file and every leaf
    param. The expectation for code comes from the imports, for params from the declarations."""
    rows = [(f"one byte of {RAW_DATA}/train.tsv", {"data/raw.dvc", *stages_depending_on_file(RAW_DATA, root)})]
    files: dict[str, set[str]] = {}
    for stage, deps in code_deps(root).items():
        for path in deps:
            files.setdefault(path, set()).add(stage)
    rows += [(f"a comment in {path}", files[path]) for path in sorted(files)]
    params = yaml.safe_load((root / "params.yaml").read_text())
    rows += [(f"params.yaml {key}", stages_reading_param(key, root)) for key in leaf_keys(params)]
    return rows


def not_affecting_markdown() -> str:
    return "\n".join(
        ["| key | why it changes no output |", "|---|---|"]
        + [f"| `{key}` | {why} |" for key, why in NOT_OUTPUT_AFFECTING.items()]
    )


def markdown(root: Path = ROOT) -> str:
    lines = ["| edit | `dvc status` lists | then reruns if outputs change |", "|---|---|---|"]
    for edit, stages in truth_table(root):
        direct = {s for s in stages if not s.endswith(".dvc")}
        after = sorted(downstream(direct, root) - direct)
        listed = ", ".join(f"`{s}`" for s in sorted(stages)) or "nothing"
        lines.append(f"| {edit} | {listed} | {', '.join(after) or '—'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(not_affecting_markdown(), markdown(), sep="\n\n")
