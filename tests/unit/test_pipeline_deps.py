"""The pipeline's dependency rules hold (tests/pipeline_rules.py): dvc.yaml covers every module each stage imports
and nothing it does not, every param is either declared by the stages it can change or explained, and the truth
table in docs/pipeline.md is the one these rules give. Fast: reads code and YAML, runs nothing."""

import shutil

import pytest
import yaml

from cola.paths import ROOT
from tests import pipeline_rules as rules


def test_every_imported_module_is_a_dep_of_its_stage():
    assert rules.missing_code_deps() == [], "add these to the stage's deps in dvc.yaml"


def test_no_stage_depends_on_code_it_does_not_import():
    assert rules.unused_code_deps() == [], "remove these from the stage's deps in dvc.yaml (or import them)"


def test_every_param_is_declared_or_explained():
    assert rules.unclassified_keys() == [], (
        "declare these keys for the stages whose outputs they can change (dvc.yaml params), or add them to "
        "tests/pipeline_rules.NOT_OUTPUT_AFFECTING with the reason"
    )


def test_explained_params_exist_and_no_stage_declares_them():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    keys = rules.leaf_keys(params)
    for key in rules.NOT_OUTPUT_AFFECTING:
        assert any(rules.key_covered(k, key) for k in keys), f"{key} is not in params.yaml"
        assert not rules.stages_reading_param(key), f"{key} is declared by a stage, so it is not cosmetic"


@pytest.fixture
def project_copy(tmp_path):
    for name in ("cola", "stages", "app", "contract", "runtime"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def edit_deps(root, stage, change):
    pipeline = yaml.safe_load((root / "dvc.yaml").read_text())
    change(pipeline["stages"][stage]["deps"])
    (root / "dvc.yaml").write_text(yaml.safe_dump(pipeline))


def test_a_removed_dep_is_caught(project_copy):
    edit_deps(project_copy, "train", lambda deps: deps.remove("cola/data.py"))
    assert rules.missing_code_deps(project_copy) == ["train: cola/data.py"]


def test_a_new_import_is_caught(project_copy):
    evaluate = project_copy / "stages" / "evaluate.py"
    evaluate.write_text("import cola.drift  # noqa\n" + evaluate.read_text())
    assert rules.missing_code_deps(project_copy) == ["evaluate: cola/drift.py"]


def test_a_folder_dep_that_retrains_for_unrelated_edits_is_caught(project_copy):
    edit_deps(project_copy, "train", lambda deps: deps.append("cola"))
    unused = rules.unused_code_deps(project_copy)
    assert "train: cola/onnx_export.py" in unused and "train: cola/drift.py" in unused


def test_an_undeclared_param_is_caught(project_copy):
    pipeline = yaml.safe_load((project_copy / "dvc.yaml").read_text())
    pipeline["stages"]["train"]["params"].remove("model.lr")
    (project_copy / "dvc.yaml").write_text(yaml.safe_dump(pipeline))
    assert rules.unclassified_keys(project_copy) == ["model.lr"]


def test_docs_show_the_current_tables():
    docs = (ROOT / "docs" / "pipeline.md").read_text()
    for table in (rules.not_affecting_markdown(), rules.markdown()):
        assert table in docs, "regenerate the tables in docs/pipeline.md: python -m tests.pipeline_rules"
