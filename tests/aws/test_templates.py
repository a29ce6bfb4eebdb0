"""deploy/template.yaml (the serving stack) and deploy/bootstrap.yaml (the account's one-time setup), read the way
AWS reads them: AWS's SAM transform run locally, `sam validate --lint` and cfn-lint, checkov, and the parameter
constraints CloudFormation enforces before it changes anything."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess

import pytest
import yaml

from app.telemetry import EMF_FUNCTION_VERSION, EMF_NAMESPACE, EMF_SERVER_ERRORS
from tests.aws.awsenv import REPO_ROOT
from tests.aws.templates import (
    BOOTSTRAP,
    CFN_LINT,
    CHECKOV,
    IMAGE,
    REQUIRED,
    SAM,
    SHA,
    TEMPLATE,
    load,
    of_type,
    resolve,
    resources,
    translate,
)

PRODUCTION_ROUTES = {"POST /predict", "GET /predict", "GET /health", "GET /ready", "GET /model", "GET /"}


@pytest.fixture(scope="module")
def stack() -> dict:
    return translate()


def _alarms(stack: dict) -> dict[str, dict]:
    group = stack["Resources"]["ServingFunctionDeploymentGroup"]["Properties"]
    names = [a["Name"]["Ref"] for a in group["AlarmConfiguration"]["Alarms"]]
    return {name: stack["Resources"][name]["Properties"] for name in names}


def test_live_alias_is_shifted_by_codedeploy_with_the_pre_traffic_hook(stack):
    r = stack["Resources"]
    (alias_name,) = [n for n, v in r.items() if v["Type"] == "AWS::Lambda::Alias"]
    alias = r[alias_name]
    assert alias["Properties"]["Name"] == "live"
    update = alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]
    assert update["DeploymentGroupName"] == {"Ref": "ServingFunctionDeploymentGroup"}
    assert update["BeforeAllowTrafficHook"] == {"Ref": "PreTrafficHook"}
    group = r["ServingFunctionDeploymentGroup"]["Properties"]
    assert group["AlarmConfiguration"]["Enabled"] is True
    assert {"DEPLOYMENT_FAILURE", "DEPLOYMENT_STOP_ON_ALARM"} <= set(group["AutoRollbackConfiguration"]["Events"])
    assert group["DeploymentConfigName"]["Fn::Sub"][1] == {"ConfigName": "Canary10Percent5Minutes"}  # the default
    # the hook checks exactly the version this deployment shifts to
    (version_name,) = [n for n, v in r.items() if v["Type"] == "AWS::Lambda::Version"]
    assert r["PreTrafficHook"]["Properties"]["Environment"]["Variables"]["NEW_VERSION"] == {"Ref": version_name}
    assert r["PreTrafficHook"]["Properties"]["FunctionName"]["Fn::Sub"].startswith("CodeDeployHook_")
    assert r["PreTrafficHook"]["Properties"]["Runtime"] == "python3.11"
    assert "UpdatePolicy" not in str(r["PreTrafficHook"])  # the hook itself is not canaried


def test_deployment_preference_follows_the_parameter():
    group = translate(DeploymentPreferenceType="AllAtOnce")["Resources"]["ServingFunctionDeploymentGroup"]
    assert group["Properties"]["DeploymentConfigName"]["Fn::Sub"][1] == {"ConfigName": "AllAtOnce"}


def test_the_three_alarms_watch_only_the_new_version(stack):
    alarms = _alarms(stack)
    (version_name,) = [n for n, v in stack["Resources"].items() if v["Type"] == "AWS::Lambda::Version"]
    new_version = {"Fn::GetAtt": [version_name, "Version"]}
    by_metric = {(a["Namespace"], a["MetricName"]): a for a in alarms.values()}
    assert set(by_metric) == {("AWS/Lambda", "Errors"), ("AWS/Lambda", "Duration"), (EMF_NAMESPACE, EMF_SERVER_ERRORS)}
    for (namespace, _), alarm in by_metric.items():
        dims = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
        if namespace == "AWS/Lambda":
            assert dims == {
                "FunctionName": {"Ref": "ServingFunction"},
                "Resource": {"Fn::Sub": "${ServingFunction}:live"},
                "ExecutedVersion": new_version,
            }
        else:
            assert dims == {EMF_FUNCTION_VERSION: new_version}
        assert alarm["ComparisonOperator"] == "GreaterThanThreshold" and alarm["TreatMissingData"] == "notBreaching"
    assert by_metric[("AWS/Lambda", "Duration")]["ExtendedStatistic"] == "p99"
    assert by_metric[("AWS/Lambda", "Duration")]["Threshold"] == {"Ref": "AlarmP99DurationMs"}


def test_the_5xx_alarm_reads_what_the_app_emits(tiny_bundle, monkeypatch, capsys):
    """One source of truth: the alarm's namespace/metric/dimension are app/telemetry.py's names, and the real
    Lambda handler emits that record with the function version when the app answers 5xx (here: draining)."""
    from tests.serving.test_lambda import Context, load_event

    monkeypatch.setenv("COLA_BUNDLE_DIR", str(tiny_bundle))
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "cola-serving")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_VERSION", "7")
    import importlib
    import sys

    sys.modules.pop("app.lambda_handler", None)
    try:
        handler = importlib.import_module("app.lambda_handler")
        capsys.readouterr()
        ok = handler.handler(load_event("http_api_v2.json"), Context())
        service = handler.asgi.app.state.service
        monkeypatch.setattr(service, "draining", True)
        monkeypatch.setattr(service, "drain_started", 0.0)
        refused = handler.handler(load_event("http_api_v2.json"), Context())
    finally:
        sys.modules.pop("app.lambda_handler", None)
    assert ok["statusCode"] == 200 and refused["statusCode"] == 503
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if EMF_SERVER_ERRORS in line]
    assert [r[EMF_SERVER_ERRORS] for r in records] == [0, 1]
    alarm = load(TEMPLATE)["Resources"]["NewVersionServerErrorsAlarm"]["Properties"]
    for record in records:
        (directive,) = record["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == alarm["Namespace"] == EMF_NAMESPACE
        assert alarm["MetricName"] in {m["Name"] for m in directive["Metrics"]}
        assert directive["Dimensions"] == [[d["Name"] for d in alarm["Dimensions"]]]
        assert record[EMF_FUNCTION_VERSION] == "7"


def test_function_environment_and_outputs_record_what_is_live(stack):
    fn = stack["Resources"]["ServingFunction"]["Properties"]
    assert fn["PackageType"] == "Image" and fn["Code"]["ImageUri"] == IMAGE
    assert fn["Environment"]["Variables"] == {
        "COLA_GIT_SHA": {"Ref": "GitSha"},
        "COLA_MODEL_VERSION": {"Ref": "ModelVersion"},
    }
    assert fn["LoggingConfig"]["LogGroup"] == {"Ref": "FunctionLogGroup"}
    assert set(stack["Outputs"]) == {
        "ApiUrl", "FunctionName", "FunctionArn", "LiveAliasArn", "DeployedSha", "DeployedImage", "ModelVersion",
    }  # fmt: skip
    assert stack["Outputs"]["DeployedSha"]["Value"] == {"Ref": "GitSha"}


def test_log_groups_have_retention(stack):
    groups = of_type(stack["Resources"], "AWS::Logs::LogGroup")
    assert set(groups) == {"FunctionLogGroup", "PreTrafficHookLogGroup", "HttpApiAccessLogGroup"}
    for group in groups.values():
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    stage = stack["Resources"]["HttpApiStage"]["Properties"]
    assert stage["AccessLogSettings"]["DestinationArn"] == {"Fn::GetAtt": ["HttpApiAccessLogGroup", "Arn"]}


def test_throttling_comes_from_the_parameters(stack):
    settings = resources(stack, {"ThrottlingRateLimit": 7, "ThrottlingBurstLimit": 9})["HttpApiStage"]
    route_settings = settings["Properties"]["DefaultRouteSettings"]
    assert (route_settings["ThrottlingRateLimit"], route_settings["ThrottlingBurstLimit"]) == (7, 9)


def test_reserved_concurrency_is_unset_by_default(stack):
    assert "ReservedConcurrentExecutions" not in resources(stack, {})["ServingFunction"]["Properties"]
    reserved = resources(stack, {"ReservedConcurrency": "20"})["ServingFunction"]["Properties"]
    assert reserved["ReservedConcurrentExecutions"] == "20"


@pytest.mark.parametrize("auth,expected", [("IAM", "AWS_IAM"), ("JWT", "JWT"), ("NONE", "NONE")])
def test_every_route_has_the_chosen_auth_and_only_production_paths_exist(stack, auth, expected):
    given = {"ApiAuth": auth, "JwtIssuer": "https://issuer.example", "JwtAudience": "cola"}
    found = resources(stack, given)
    routes = of_type(found, "AWS::ApiGatewayV2::Route")
    assert {r["Properties"]["RouteKey"] for r in routes.values()} == PRODUCTION_ROUTES  # no $default, no /metrics
    for route in routes.values():
        assert route["Properties"]["AuthorizationType"] == expected
        assert ("AuthorizerId" in route["Properties"]) == (auth == "JWT")
    authorizers = of_type(found, "AWS::ApiGatewayV2::Authorizer")
    assert len(authorizers) == (auth == "JWT")
    assert resources(stack, {})["RoutePostPredict"]["Properties"]["AuthorizationType"] == "AWS_IAM"  # the default


def test_api_invokes_only_the_live_alias(stack):
    r = stack["Resources"]
    alias = {"Ref": next(n for n, v in r.items() if v["Type"] == "AWS::Lambda::Alias")}
    assert r["HttpApiIntegration"]["Properties"]["IntegrationUri"] == alias
    assert r["HttpApiInvokePermission"]["Properties"]["FunctionName"] == alias


def test_jwt_without_issuer_is_refused_by_a_rule():
    template = load(TEMPLATE)
    rule = template["Rules"]["JwtNeedsIssuerAndAudience"]
    assert resolve(template, {"ApiAuth": "JWT"}, rule["RuleCondition"]) is True
    assert resolve(template, {"ApiAuth": "IAM"}, rule["RuleCondition"]) is False
    asserts = [resolve(template, {"ApiAuth": "JWT"}, a["Assert"]) for a in rule["Assertions"]]
    assert asserts == [False, False]  # both missing: both assertions fail, each with its own description
    given = {"ApiAuth": "JWT", "JwtIssuer": "https://issuer.example", "JwtAudience": "cola"}
    assert all(resolve(template, given, a["Assert"]) for a in rule["Assertions"])


@pytest.mark.parametrize(
    "name,value",
    [
        ("ImageUri", "123456789012.dkr.ecr.us-east-1.amazonaws.com/cola-serving:latest"),  # a tag, not a digest
        ("ImageUri", "docker.io/library/python@sha256:" + "ab" * 32),  # not ECR
        ("ImageUri", IMAGE[:-1]),  # a digest one character short
        ("GitSha", SHA[:7]),
        ("ModelVersion", "1.2.0"),
        ("ReservedConcurrency", "0"),
    ],
)
def test_a_bad_parameter_fails_with_one_line(name, value):
    """CloudFormation checks AllowedPattern before it changes anything and prints the ConstraintDescription."""
    spec = load(TEMPLATE)["Parameters"][name]
    assert not re.fullmatch(spec["AllowedPattern"], value)
    assert "\n" not in spec["ConstraintDescription"].strip()  # CloudFormation prints it after the pattern error


def test_good_parameters_pass_their_patterns():
    spec = load(TEMPLATE)["Parameters"]
    good = {**REQUIRED, "ModelVersion": "v1.2.0", "ReservedConcurrency": "5"}
    for name, value in good.items():
        assert re.fullmatch(spec[name]["AllowedPattern"], value), name
    assert re.fullmatch(spec["ModelVersion"]["AllowedPattern"], "unregistered")
    assert re.fullmatch(spec["ReservedConcurrency"]["AllowedPattern"], "")


# ---- bootstrap.yaml: the account's deploy role, report role, ECR repository and DVC bucket


GITHUB = {"GitHubOrg": "acme", "GitHubRepo": "cola", "DvcBucketName": "acme-cola-dvc"}


@pytest.fixture(scope="module")
def bootstrap() -> dict:
    return load(BOOTSTRAP)


def _trust(bootstrap: dict, role: str, given: dict) -> dict:
    found = resources(bootstrap, {**GITHUB, **given})
    (statement,) = found[role]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    return statement


def _sub(value, params: dict) -> str:
    """A Fn::Sub string with the parameters filled in (pseudo parameters left as ${...})."""
    text = value["Fn::Sub"] if isinstance(value, dict) else value
    return re.sub(r"\$\{(\w+)\}", lambda m: str(params.get(m.group(1), m.group(0))), text)


def test_deploy_role_trusts_only_the_production_environment_and_the_deploy_workflow_on_main(bootstrap):
    """The subject (customised to carry job_workflow_ref, see bootstrap.yaml) pins environment, workflow file and
    branch in one claim GitHub signs; an exact match, so a workflow on another branch or another file is refused."""
    statement = _trust(bootstrap, "DeployRole", {})
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert set(statement["Condition"]) == {"StringEquals"}  # exact matches only: no StringLike wildcards
    equals = {k: _sub(v, GITHUB) for k, v in statement["Condition"]["StringEquals"].items()}
    assert equals == {
        "token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
        "token.actions.githubusercontent.com:sub": "repo:acme/cola:environment:production:job_workflow_ref:"
        "acme/cola/.github/workflows/deploy.yml@refs/heads/main",
    }


def test_report_role_trusts_only_pull_requests_and_the_deploy_gate_on_main(bootstrap):
    condition = _trust(bootstrap, "ReportRole", {})["Condition"]
    assert {k: _sub(v, GITHUB) for k, v in condition["StringEquals"].items()} == {
        "token.actions.githubusercontent.com:aud": "sts.amazonaws.com"
    }
    (subjects,) = condition["StringLike"].values()
    assert [_sub(v, GITHUB) for v in subjects] == [
        "repo:acme/cola:pull_request:job_workflow_ref:acme/cola/.github/workflows/*",
        "repo:acme/cola:ref:refs/heads/main:job_workflow_ref:acme/cola/.github/workflows/deploy.yml@refs/heads/main",
    ]


def _admits(patterns: list[str], subject: str) -> bool:
    """IAM's StringLike: * matches any run of characters (slashes and colons too), ? one character."""
    return any(fnmatch.fnmatchcase(subject, pattern) for pattern in patterns)


TRAIN_ON = (
    "repo:acme/cola:ref:refs/heads/{branch}:job_workflow_ref:acme/cola/.github/workflows/{file}@refs/heads/{branch}"
)


def test_train_role_trusts_only_train_yml_dispatched_on_a_branch_of_this_repository(bootstrap):
    """train.yml runs by workflow_dispatch on a branch, so its subject is ref:refs/heads/<branch> with train.yml
    at that branch; another workflow, a pull request, a tag and another repository are refused."""
    statement = _trust(bootstrap, "TrainRole", {})
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    condition = statement["Condition"]
    assert {k: _sub(v, GITHUB) for k, v in condition["StringEquals"].items()} == {
        "token.actions.githubusercontent.com:aud": "sts.amazonaws.com"
    }
    (key,) = condition["StringLike"]
    assert key == "token.actions.githubusercontent.com:sub"
    patterns = [_sub(v, GITHUB) for v in _list(condition["StringLike"][key])]
    assert _admits(patterns, TRAIN_ON.format(branch="main", file="train.yml"))
    assert _admits(patterns, TRAIN_ON.format(branch="exp/lr-sweep", file="train.yml"))
    refused = [
        TRAIN_ON.format(branch="main", file="deploy.yml"),
        TRAIN_ON.format(branch="main", file="pr-report.yml"),
        "repo:acme/cola:pull_request:job_workflow_ref:acme/cola/.github/workflows/train.yml@refs/pull/7/merge",
        "repo:acme/cola:ref:refs/tags/v1:job_workflow_ref:acme/cola/.github/workflows/train.yml@refs/tags/v1",
        "repo:acme/cola:environment:production:job_workflow_ref:acme/cola/.github/workflows/train.yml@refs/heads/main",
        TRAIN_ON.format(branch="main", file="train.yml").replace("acme/cola", "evil/cola"),
        TRAIN_ON.format(branch="main", file="train.yml").replace("acme/cola", "acme/cola-fork"),
        # train.yml of this repository called from another repository's workflow (the subject names the caller)
        "repo:evil/x:ref:refs/heads/main:job_workflow_ref:acme/cola/.github/workflows/train.yml@refs/heads/main",
    ]
    assert [s for s in refused if _admits(patterns, s)] == []


def test_train_role_reads_and_writes_only_the_dvc_remote_and_deletes_nothing(bootstrap):
    found = resources(bootstrap, GITHUB)
    statements = _statements({"TrainRole": found["TrainRole"]})
    s3 = [s for s in statements if any(a.startswith("s3:") for a in _list(s["Action"]))]
    granted = {(a, json.dumps(r)) for s in s3 for a in _list(s["Action"]) for r in _list(s["Resource"])}
    bucket, objects = {"Fn::GetAtt": ["DvcBucket", "Arn"]}, {"Fn::Sub": "${DvcBucket.Arn}/*"}
    assert granted == {
        ("s3:ListBucket", json.dumps(bucket)),
        ("s3:GetObject", json.dumps(objects)),
        ("s3:PutObject", json.dumps(objects)),
    }
    assert "ArtifactsBucket" not in json.dumps(statements)


def test_train_role_launches_ec2_only_in_the_stacks_region(bootstrap):
    """cml runner launch (terraform-provider-iterative): the mutating EC2 actions name only this region's ARNs;
    the Describe calls, which IAM cannot scope to a resource, are limited to the region by condition."""
    statements = _statements({"TrainRole": resources(bootstrap, GITHUB)["TrainRole"]})
    ec2 = [s for s in statements if any(a.startswith("ec2:") for a in _list(s["Action"]))]
    actions = {a for s in ec2 for a in _list(s["Action"])}
    assert {"ec2:RunInstances", "ec2:TerminateInstances", "ec2:CreateTags", "ec2:RequestSpotInstances",
            "ec2:ImportKeyPair", "ec2:CreateSecurityGroup", "ec2:DescribeInstances"} <= actions  # fmt: skip
    for statement in ec2:
        resources_ = _list(statement["Resource"])
        if resources_ == ["*"]:
            assert all(a.startswith("ec2:Describe") for a in _list(statement["Action"])), statement["Sid"]
            assert statement["Condition"] == {"StringEquals": {"aws:RequestedRegion": {"Ref": "AWS::Region"}}}
        else:
            assert [_sub(r, {}) for r in resources_] == ["arn:${AWS::Partition}:ec2:${AWS::Region}:*:*"]
    assert "iam:PassRole" not in json.dumps(statements)  # the instances get no role (no --cloud-permission-set)


def test_train_role_sessions_last_as_long_as_the_workflow_asks(bootstrap):
    """configure-aws-credentials' role-duration-seconds in train.yml must not exceed the role's maximum
    (AssumeRoleWithWebIdentity fails), and must cover the experiment job's timeout (dvc exp push comes last)."""
    maximum = resources(bootstrap, GITHUB)["TrainRole"]["Properties"]["MaxSessionDuration"]
    train = yaml.safe_load((REPO_ROOT / ".github/workflows/train.yml").read_text())
    for name, job in train["jobs"].items():
        for step in job.get("steps", []):
            if "configure-aws-credentials" in step.get("uses", ""):
                seconds = int(step["with"]["role-duration-seconds"])
                assert seconds <= maximum, name
                assert seconds >= job["timeout-minutes"] * 60, name


@pytest.mark.parametrize("create", ["true", "false"])
def test_oidc_provider_is_created_only_when_asked(bootstrap, create):
    found = resources(bootstrap, {**GITHUB, "CreateOidcProvider": create})
    assert ("GitHubOidcProvider" in found) == (create == "true")
    principal = found["DeployRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]
    if create == "true":
        assert principal == {"Federated": {"Ref": "GitHubOidcProvider"}}
    else:  # the account's existing provider, by its fixed ARN
        assert principal["Federated"]["Fn::Sub"].endswith(":oidc-provider/token.actions.githubusercontent.com")


def _list(value) -> list:
    return value if isinstance(value, list) else [value]


def _statements(found: dict) -> list[dict]:
    out = []
    for resource in found.values():
        props = resource.get("Properties", {})
        for policy in props.get("Policies", []):
            out += policy["PolicyDocument"]["Statement"]
        if resource["Type"] == "AWS::IAM::ManagedPolicy":
            out += props["PolicyDocument"]["Statement"]
    return out


# Actions AWS does not let a policy scope to a resource (the Service Authorization Reference lists them with no
# resource type), so "*" is the only possible Resource for them.
UNSCOPABLE = {
    "ecr:GetAuthorizationToken",
    "cloudformation:ValidateTemplate",
    "logs:DescribeLogGroups",
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    # cml runner launch's lookups (the train role): EC2's Describe calls have no resource-level permissions
    "ec2:DescribeImages",
    "ec2:DescribeInstances",
    "ec2:DescribeKeyPairs",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSpotInstanceRequests",
    "ec2:DescribeSubnets",
    "ec2:DescribeVpcs",
}


def test_stack_roles_can_only_be_created_with_the_boundary(bootstrap, stack):
    """The deploy role creates IAM roles only with the boundary, and every role the serving stack creates
    carries it (so `sam deploy` works and a changed template cannot mint a broader role)."""
    found = resources(bootstrap, GITHUB)
    (create,) = [s for s in _statements(found) if "iam:CreateRole" in _list(s["Action"])]
    assert create["Condition"] == {"StringEquals": {"iam:PermissionsBoundary": {"Ref": "ServingRoleBoundary"}}}
    boundary_name = _sub(found["ServingRoleBoundary"]["Properties"]["ManagedPolicyName"], {"ServingStackName": "S"})
    roles = of_type(stack["Resources"], "AWS::IAM::Role")
    assert set(roles) == {"ServingFunctionRole", "PreTrafficHookRole", "CodeDeployRole"}
    for role in roles.values():
        arn = role["Properties"]["PermissionsBoundary"]["Fn::Sub"]
        assert arn.endswith(":policy/" + boundary_name.replace("S", "${AWS::StackName}", 1))


def test_role_policies_use_no_wildcard_resources_where_aws_can_scope(bootstrap):
    statements = _statements(resources(bootstrap, GITHUB))
    assert statements
    for statement in statements:
        actions = _list(statement["Action"])
        if "*" in _list(statement["Resource"]):
            assert set(actions) <= UNSCOPABLE, statement.get("Sid")
        assert not any("*" in action for action in actions), statement  # no service:* or Get* action wildcards


def test_api_gateway_permissions_do_not_depend_on_tags(bootstrap):
    """Tag conditions on /apis/* fail for sub-resources (the stage is created untagged): none are used."""
    for statement in _statements(resources(bootstrap, GITHUB)):
        if any(a.startswith("apigateway:") for a in _list(statement["Action"])):
            assert "Condition" not in statement or "aws:ResourceTag" not in json.dumps(statement["Condition"])


def test_pass_role_is_limited_to_lambda_and_codedeploy_and_the_stacks_roles(bootstrap):
    for statement in _statements(resources(bootstrap, GITHUB)):
        if "iam:PassRole" in statement["Action"]:
            services = statement["Condition"]["StringEquals"]["iam:PassedToService"]
            assert set(services) <= {"lambda.amazonaws.com", "codedeploy.amazonaws.com"}
            for target in _list(statement["Resource"]):
                assert "${ServingStackName}-" in json.dumps(target)


def test_dvc_bucket_is_private_versioned_encrypted_and_tls_only(bootstrap):
    found = resources(bootstrap, GITHUB)
    bucket = found["DvcBucket"]["Properties"]
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True,
    }  # fmt: skip
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    (deny,) = [
        s for s in found["DvcBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"
    ]
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_ecr_repository_is_immutable_scanned_and_pruned(bootstrap):
    repo = resources(bootstrap, GITHUB)["EcrRepository"]["Properties"]
    assert repo["ImageTagMutability"] == "IMMUTABLE"
    assert repo["ImageScanningConfiguration"] == {"ScanOnPush": True}
    assert json.loads(repo["LifecyclePolicy"]["LifecyclePolicyText"])["rules"]


def test_bootstrap_outputs(bootstrap):
    assert {
        "DeployRoleArn", "ReportRoleArn", "TrainRoleArn", "EcrRepositoryUri", "DvcRemoteUrl", "ArtifactsBucketName",
    } <= set(bootstrap["Outputs"])  # fmt: skip
    assert bootstrap["Outputs"]["TrainRoleArn"]["Value"] == {"Fn::GetAtt": ["TrainRole", "Arn"]}
    assert set(bootstrap["Parameters"]) == {
        "GitHubOrg", "GitHubRepo", "ServingStackName", "EcrRepositoryName", "DvcBucketName", "CreateOidcProvider",
    }  # fmt: skip


# ---- the real tools: what `make lint` runs (.pre-commit-config.yaml), and what CloudFormation would refuse


def _run(*command: object) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=600,
                          env={"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "us-east-1", "SAM_CLI_TELEMETRY": "0",
                               "HOME": "/tmp"})  # fmt: skip


@pytest.mark.parametrize("path", [TEMPLATE, BOOTSTRAP], ids=["template", "bootstrap"])
def test_sam_validate_lint_and_cfn_lint_pass(path):
    validated = _run(SAM, "validate", "--lint", "--template-file", path)
    assert validated.returncode == 0, validated.stdout + validated.stderr
    linted = _run(CFN_LINT, path)
    assert linted.returncode == 0, linted.stdout + linted.stderr


@pytest.mark.parametrize("path", [TEMPLATE, BOOTSTRAP], ids=["template", "bootstrap"])
def test_checkov_passes(path):
    scanned = _run(CHECKOV, "--skip-download", "--quiet", "--compact", "--framework", "cloudformation", "-f", path)
    assert scanned.returncode == 0, scanned.stdout + scanned.stderr


def test_cfn_lint_catches_a_default_that_breaks_the_pattern(tmp_path):
    """The linter is not a rubber stamp: a tag-form ImageUri default is reported, on one line."""
    text = TEMPLATE.read_text().replace(
        "    Description: The Lambda image in ECR by digest",
        "    Default: 123456789012.dkr.ecr.us-east-1.amazonaws.com/cola-serving:latest\n"
        "    Description: The Lambda image in ECR by digest",
    )
    bad = tmp_path / "template.yaml"
    bad.write_text(text)
    linted = _run(CFN_LINT, "--format", "parseable", bad)
    assert linted.returncode != 0
    (line,) = linted.stdout.splitlines()
    assert "E2015" in line and "AllowedPattern" in line
