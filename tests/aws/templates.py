"""The deploy templates as CloudFormation sees them: deploy/template.yaml through AWS's own SAM transform
(aws-sam-translator, offline), and a small evaluator of the Conditions/Fn::If a parameter set selects, so the
tests read the resources a real stack with those parameters would get."""

from __future__ import annotations

import copy
import os
from pathlib import Path

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

from tests.aws.awsenv import REGION, REPO_ROOT

TEMPLATE = REPO_ROOT / "deploy" / "template.yaml"
BOOTSTRAP = REPO_ROOT / "deploy" / "bootstrap.yaml"
TOOLS_DIR = REPO_ROOT / ".venv-tools"  # SAM CLI and checkov, apart from the shared env (.ci/install.sh)
SAM = TOOLS_DIR / "sam" / "bin" / "sam"
CFN_LINT = TOOLS_DIR / "sam" / "bin" / "cfn-lint"
CHECKOV = TOOLS_DIR / "checkov" / "bin" / "checkov"

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/cola-serving@sha256:" + "ab" * 32
SHA = "0123456789abcdef0123456789abcdef01234567"
REQUIRED = {"ImageUri": IMAGE, "GitSha": SHA}


class _OfflinePolicies:
    """The managed policy ARNs SAM looks up by name (an IAM call otherwise)."""

    def load(self) -> dict[str, str]:
        return {"AWSLambdaBasicExecutionRole": "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"}


def load(path: Path) -> dict:
    return yaml_parse(path.read_text())


def parameters(template: dict, given: dict) -> dict:
    """The values CloudFormation would use: the given ones over the template's defaults."""
    values = {name: spec.get("Default") for name, spec in template["Parameters"].items()}
    values.update(given)
    for name, spec in template["Parameters"].items():
        if spec["Type"] == "CommaDelimitedList" and isinstance(values[name], str):
            values[name] = values[name].split(",") if values[name] else [""]
    return values


def translate(**given: str) -> dict:
    """deploy/template.yaml after the SAM transform, as CloudFormation receives it from `sam deploy`.
    The hook's local CodeUri becomes an S3 URI, as `sam package`/`sam deploy` does when it uploads deploy/hooks/."""
    sam = load(TEMPLATE)
    sam["Resources"]["PreTrafficHook"]["Properties"]["CodeUri"] = "s3://sam-artifacts/cola-serving/hooks.zip"
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)  # the transform's pseudo parameters need a region
    return transform(sam, {**REQUIRED, **given}, _OfflinePolicies())


def resolve(template: dict, given: dict, value):
    """`value` with Ref-to-parameter, Fn::If, Fn::Equals, Fn::Not, Fn::Join and Condition evaluated for these
    parameters; other intrinsics (GetAtt, Sub, refs to resources) are left as they are."""
    values = parameters(template, given)
    conditions = template.get("Conditions", {})

    def ev(node):
        if isinstance(node, list):
            return [ev(v) for v in node if ev(v) != "AWS::NoValue"]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, arg),) = node.items()
            if key == "Ref" and arg in values:
                return values[arg]
            if key == "Ref" and arg == "AWS::NoValue":
                return "AWS::NoValue"
            if key == "Condition":
                return ev(conditions[arg])
            if key == "Fn::If":
                return ev(arg[1] if ev(conditions[arg[0]]) else arg[2])
            if key == "Fn::Equals":
                return ev(arg[0]) == ev(arg[1])
            if key == "Fn::Not":
                return not ev(arg[0])
            if key == "Fn::And":
                return all(ev(a) for a in arg)
            if key == "Fn::Or":
                return any(ev(a) for a in arg)
            if key == "Fn::Join":
                return arg[0].join(str(part) for part in ev(arg[1]))
        return {k: ev(v) for k, v in node.items() if ev(v) != "AWS::NoValue"}

    return ev(copy.deepcopy(value))


def resources(template: dict, given: dict) -> dict[str, dict]:
    """The resources a stack with these parameters gets (Condition applied, Fn::If resolved)."""
    conditions = template.get("Conditions", {})
    out = {}
    for name, resource in template["Resources"].items():
        condition = resource.get("Condition")
        if condition and not resolve(template, given, conditions[condition]):
            continue
        out[name] = resolve(template, given, resource)
    return out


def of_type(found: dict[str, dict], kind: str) -> dict[str, dict]:
    return {name: r for name, r in found.items() if r["Type"] == kind}
