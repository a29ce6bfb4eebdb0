"""Paths live in one place (cola/paths.py) and agree with dvc.yaml, which lists them literally (DVC needs them
there): each path a stage's code uses is a dep or an out of that stage, each data, model, artifact and report dep
or out of a stage is a path of cola.paths that the stage's code uses, and the monitor's path params default to the
same paths. Fast: reads code and YAML, runs nothing (rules: tests/pipeline_rules.py)."""

import ast
import shutil

import pytest
import yaml

from cola import paths
from tests import pipeline_rules as rules


def relative(path) -> str:
    return path.relative_to(paths.ROOT).as_posix()


def test_every_path_a_stage_uses_is_a_dep_or_out_of_that_stage():
    assert rules.undeclared_stage_paths() == [], "add these to the stage's deps or outs in dvc.yaml"


def test_every_data_dep_and_out_in_dvc_yaml_is_a_path_the_stage_uses():
    assert rules.unnamed_or_unused_stage_paths() == [], (
        "name the path in cola/paths.py and use it in the stage (stages/<name>.py), or remove it from dvc.yaml"
    )


def test_every_pipeline_path_is_in_dvc_yaml_or_explained():
    assert rules.unexplained_path_constants() == [], (
        "a path under data/, models/, artifacts/ or reports/ that no stage reads or writes: "
        "list it in tests/pipeline_rules.NOT_STAGE_PATHS with the reason, or declare it in dvc.yaml"
    )
    for name in rules.NOT_STAGE_PATHS:
        assert name in rules.path_constants(), f"{name} is not a path of cola/paths.py"


def test_metrics_and_plots_are_outputs_of_a_stage():
    pipeline = yaml.safe_load(paths.PIPELINE_FILE.read_text())
    outs = [out for spec in pipeline["stages"].values() for out in rules._paths(spec.get("outs"))]
    files = list(pipeline["metrics"])
    for plot in pipeline["plots"]:
        (spec,) = plot.values()
        files += list(spec["y"]) if isinstance(spec["y"], dict) else [spec["y"]]
    assert [f for f in files if not any(rules.covers(f, out) for out in outs)] == []


def test_monitor_path_params_default_to_the_pipeline_paths():
    monitor = yaml.safe_load(paths.PARAMS_FILE.read_text())["monitor"]
    assert {key: monitor[key] for key in ("reference_stats", "held_out", "bundle_dir", "logs_file", "out_dir")} == {
        "reference_stats": relative(paths.REFERENCE_STATS),
        "held_out": relative(paths.VALIDATION_DATA),
        "bundle_dir": relative(paths.BUNDLE_DIR),
        "logs_file": relative(paths.PREDICTION_LOG),
        "out_dir": relative(paths.MONITOR_REPORT_DIR),
    }


def test_no_module_builds_its_own_project_paths():
    """`ROOT / ...` and `Path(__file__)` belong in cola/paths.py: anywhere else they are a second home for a path."""
    found = []
    for folder in ("cola", "stages"):
        for path in sorted((paths.ROOT / folder).glob("*.py")):
            if path == paths.ROOT / "cola" / "paths.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.BinOp) and isinstance(node.left, ast.Name) and node.left.id == "ROOT":
                    found.append(f"{relative(path)}:{node.lineno} ROOT / ...")
                elif isinstance(node, ast.Name) and node.id == "__file__":
                    found.append(f"{relative(path)}:{node.lineno} __file__")
    assert found == [], "import the path from cola/paths.py (add it there if it is new)"


@pytest.fixture
def project_copy(tmp_path):
    for name in ("cola", "stages", "app", "contract", "runtime"):
        shutil.copytree(paths.ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(paths.ROOT / name, tmp_path / name)
    return tmp_path


def edit_stage(root, stage, change):
    pipeline = yaml.safe_load((root / "dvc.yaml").read_text())
    change(pipeline["stages"][stage])
    (root / "dvc.yaml").write_text(yaml.safe_dump(pipeline))


def test_a_path_missing_from_dvc_yaml_is_caught(project_copy):
    edit_stage(project_copy, "benchmark", lambda stage: stage["deps"].remove("artifacts/onnx"))
    assert rules.undeclared_stage_paths(project_copy) == ["benchmark: artifacts/onnx"]


def test_a_path_the_stage_does_not_use_is_caught(project_copy):
    edit_stage(project_copy, "evaluate", lambda stage: stage["deps"].append("artifacts/bundle"))
    edit_stage(project_copy, "train", lambda stage: stage["outs"].append("reports/train.csv"))
    assert rules.unnamed_or_unused_stage_paths(project_copy) == [
        "evaluate: artifacts/bundle (the stage's code does not use it)",
        "train: reports/train.csv (not a path of cola/paths.py)",
    ]


def test_a_stage_reading_a_new_path_is_caught(project_copy):
    evaluate = project_copy / "stages" / "evaluate.py"
    evaluate.write_text("from cola.paths import ONNX_DIR  # noqa\n" + evaluate.read_text())
    assert rules.undeclared_stage_paths(project_copy) == ["evaluate: artifacts/onnx"]
